"""Process-wide set-up done by ``crmroute.service``."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

from crmroute.service import SWITCH_INTERVAL, tune_runtime


def test_runtime_is_tuned_for_the_call_path():
    interval = sys.getswitchinterval()
    try:
        tune_runtime()
        assert gc.get_freeze_count() > 10_000  # modules, models, the app: no full pass walks them again
        assert sys.getswitchinterval() == SWITCH_INTERVAL == 0.001
    finally:
        gc.unfreeze()
        sys.setswitchinterval(interval)


def test_sigterm_during_start_up_stops_cleanly(tmp_path):
    """A SIGTERM that lands while the service is still starting is a clean stop, not a kill."""
    script = textwrap.dedent("""
        import os, signal, sys
        from crmroute import cli, service

        upgrade = service.Store.upgrade

        def upgrade_then_terminate(self):
            upgrade(self)
            os.kill(os.getpid(), signal.SIGTERM)  # start-up is not over yet

        service.Store.upgrade = upgrade_then_terminate
        sys.exit(cli.main(["serve"]))
    """)
    env = {**os.environ, "CRMROUTE_DATA_DIR": str(tmp_path), "CRMROUTE_HTTP_PORT": "0", "CRMROUTE_AGI_PORT": "0"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "stopping" in done.stderr
