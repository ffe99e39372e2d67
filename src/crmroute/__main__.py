from crmroute.cli import main

raise SystemExit(main())
