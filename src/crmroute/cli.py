"""The ``crmroute`` command: thin subcommands over the service modules."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from crmroute import __version__, logs
from crmroute.errors import ConfigError, CrmrouteError, LicenseError
from crmroute.fieldlabels import explain
from crmroute.settings import Settings

if TYPE_CHECKING:
    from crmroute.schemas import RulesFile

logger = logging.getLogger("crmroute")
LICENSE_MAX_BYTES = 64 * 1024  # a license is a few hundred bytes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crmroute", description="Route Asterisk calls by CRM data.")
    parser.add_argument("--version", action="version", version=f"crmroute {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("serve", help="run the FastAGI server and the web UI/API (migrates first)")
    sub.add_parser("agi", help="run only the FastAGI server")
    sub.add_parser("web", help="run only the web UI/API")

    db = sub.add_parser("db", help="database maintenance").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="migrate the database to the newest schema")

    rules = sub.add_parser("rules", help="import or export the rules file").add_subparsers(
        dest="rules_command", required=True
    )
    imp = rules.add_parser("import", help="import a YAML or JSON rules file (all or nothing)")
    imp.add_argument("file", help="path to the file, or - for standard input")
    imp.add_argument("--format", choices=("yaml", "json"), help="default: by file extension, else YAML")
    imp.add_argument("--check", action="store_true", help="validate only; change nothing")
    imp.add_argument("--if-empty", action="store_true",
                     help="import only into a store with no configuration yet (what make run seeds)")
    exp = rules.add_parser("export", help="print everything configured as a rules file (secrets masked)")
    exp.add_argument("--format", choices=("yaml", "json"), default="yaml")
    exp.add_argument("--output", "-o", help="write to this file instead of standard output")

    route = sub.add_parser("route", help="dry run: show where a call would go, without a call")
    where = route.add_mutually_exclusive_group(required=True)
    where.add_argument("--did", help="the dialled number (DID)")
    where.add_argument("--ivr", help="the IVR number")
    where.add_argument("--rule", help="a rule by name")
    route.add_argument("--caller", default="", help="the caller's number")
    route.add_argument("--dtmf", default="", help="digits the caller typed")
    route.add_argument("--at", default="", help="the call's time for schedule conditions, ISO 8601 such as "
                       "2026-03-30T09:15:00+01:00 (no offset: UTC); default: now")
    route.add_argument("--json", action="store_true", help="print the trace as JSON")

    user = sub.add_parser("user", help="web UI users").add_subparsers(dest="user_command", required=True)
    create = user.add_parser("create", help="create a user (prompts for the password)")
    create.add_argument("username")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command", required=True)
    new_token = token.add_parser("create", help="print a new API token for a user")
    new_token.add_argument("username")
    new_token.add_argument("--name", default="", help="what the token is for")

    crm = sub.add_parser("crm", help="CRM kinds and integrations").add_subparsers(dest="crm_command", required=True)
    kinds = crm.add_parser("kinds", help="list the supported CRM kinds and their settings")
    kinds.add_argument("--json", action="store_true")
    test = crm.add_parser("test", help="run an integration's Test action")
    test.add_argument("name", help="the integration's name")
    test.add_argument("--key", help="a phone number (or typed key) to look up")
    test.add_argument("--module", default="contacts", choices=("accounts", "contacts", "leads"))
    test.add_argument("--field", action="append", default=[], help="a field to read (repeatable)")
    test.add_argument("--json", action="store_true")

    agents = sub.add_parser("agents", help="agents: list them, or sync their CRM user ids").add_subparsers(
        dest="agents_command", required=True)  # fmt: skip
    agents.add_parser("list", help="list the agents and who they are in each CRM").add_argument("--json", action="store_true")
    sync = agents.add_parser("sync", help="match an integration's CRM users to agents by e-mail; record their ids")
    sync.add_argument("integration", help="the integration's name")
    sync.add_argument("--json", action="store_true")

    lic = sub.add_parser("license", help="licensing").add_subparsers(dest="license_command", required=True)
    install = lic.add_parser("install", help="install a license file")
    install.add_argument("file")
    lic.add_parser("show", help="show the license state")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        logs.configure(settings)
        if uses_store(args):
            check_data_dir(settings, args)
        return COMMANDS[args.command](settings, args)
    except ConfigError as exc:
        print(f"error: invalid {exc.source}:" if exc.source else "error: invalid configuration:", file=sys.stderr)
        for field, message in exc.problems:
            where = f" ({field})" if exc.source and field else ""  # a file's path, to find the spot in it
            print(f"  {explain(field, message)}{where}", file=sys.stderr)
        return 2
    except CrmrouteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `crmroute crm kinds | head`
        sys.stderr.close()
        return 0


def uses_store(args: argparse.Namespace) -> bool:
    return args.command != "crm" or args.crm_command != "kinds"


def check_data_dir(settings: Settings, args: argparse.Namespace) -> None:
    """Say which data directory is used; refuse a missing one unless this command sets it up.

    The default (``./data``) is relative to the current directory, so a command run
    elsewhere would otherwise work on a new empty store (and a new secret key). Only
    ``serve`` and ``db upgrade`` create it.
    """
    path = settings.data_dir.resolve()
    if not path.is_dir() and args.command != "serve" and getattr(args, "db_command", "") != "upgrade":
        raise ConfigError(
            f"no data directory at {path}: run crmroute where its data directory is, or set it by "
            "CRMROUTE_DATA_DIR (`crmroute db upgrade` creates a new one)", field="CRMROUTE_DATA_DIR")  # fmt: skip
    database = f", database {redact_url(settings.database_url)}" if settings.database_url else ""
    if args.command in ("serve", "agi", "web"):
        logger.info("data directory %s%s", path, database)
    else:
        print(f"data directory {path}{database}", file=sys.stderr)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from crmroute.service import run

    asyncio.run(run(settings, agi=args.command in ("serve", "agi"), web=args.command in ("serve", "web")))
    return 0


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    from crmroute.service import Store

    store = Store(settings)
    store.upgrade()
    store.close()
    print(f"database at {redact_url(settings.db_url)} is up to date")
    return 0


def cmd_rules(settings: Settings, args: argparse.Namespace) -> int:
    from crmroute import rulesfile
    from crmroute.service import Store

    if args.rules_command == "import":  # the whole file is read and checked before the store is opened
        data = read_rules_file(args.file, args.format)
    store = Store(settings)
    try:
        store.upgrade()
        if args.rules_command == "export":
            with store.factory() as session:
                text = rulesfile.dump(rulesfile.export_rules(session, store.box), args.format)
            if args.output:
                try:
                    Path(args.output).write_text(text)
                except OSError as exc:
                    raise ConfigError(f"cannot write {args.output}: {exc.strerror or exc}", field="output") from None
            else:
                sys.stdout.write(text)
            return 0
        source = rules_source(args.file)
        if args.if_empty and not args.check:
            from crmroute.store import seed

            with store.factory() as session:
                if not seed.is_empty(session):
                    print("the database already holds a configuration: nothing imported (--if-empty)")
                    return 0
        if args.check:
            with store.factory() as session:
                problems = rulesfile.check_references(session, data)
            if problems:
                raise ConfigError(problems, source=source)
            print("the file is valid; nothing was changed")
            return 0
        try:
            summary = rulesfile.import_rules(store.factory, store.box, data, license_key=settings.license_key)
        except ConfigError as exc:
            raise ConfigError(exc.problems, source=source) from None
        for line in summary.lines() or ["nothing to import"]:
            print(line)
        return 0
    finally:
        store.close()


def read_rules_file(path: str, fmt: str | None) -> RulesFile:
    from crmroute import rulesfile, textfile

    try:
        text = textfile.decode(sys.stdin.buffer.read(textfile.MAX_BYTES + 1)) if path == "-" else textfile.read(path)
        return rulesfile.parse(text, fmt=fmt or ("json" if path.endswith(".json") else "yaml"))
    except ConfigError as exc:
        raise ConfigError(exc.problems, source=rules_source(path)) from None


def rules_source(path: str) -> str:
    return "rules file from standard input" if path == "-" else f"rules file {path}"


def cmd_route(settings: Settings, args: argparse.Namespace) -> int:
    from crmroute.router import Target
    from crmroute.service import Store, build_router

    at = None
    if args.at:
        from pydantic import ValidationError

        from crmroute.schemas import RouteIn

        try:
            at = RouteIn.model_validate({"rule": "x", "at": args.at}).at
        except ValidationError:
            raise ConfigError("must be an ISO 8601 date and time such as 2026-03-30T09:15:00+01:00",
                              field="--at") from None

    async def dry_run() -> dict:
        store = Store(settings)
        router = build_router(store, with_log=False)
        try:
            await asyncio.to_thread(store.upgrade)
            target = Target("did", args.did) if args.did else Target("ivr", args.ivr) if args.ivr else Target("rule", args.rule)  # fmt: skip
            return await router.dry_run(target, caller_id=args.caller, dtmf=args.dtmf, at=at)
        finally:
            await router.http.aclose()
            store.close()

    trace = asyncio.run(dry_run())
    if args.json:
        print(json.dumps(trace, indent=2, ensure_ascii=False))
    else:
        print(format_trace(trace))
    return 0


def format_trace(trace: dict) -> str:
    dest = trace.get("destination") or {}
    lines = [
        f"status:      {trace['status']}" + (f" ({trace['reason']})" if trace.get("reason") else ""),
        f"rule:        {trace.get('rule') or '-'}",
        f"lookup key:  {trace.get('key') or '-'}" + (f" ({trace['key_source']})" if trace.get("key_source") else ""),
        f"CRM value:   {trace.get('value')!r}",
        f"row:         {trace.get('row') or '-'}",
        f"destination: {dest.get('type', '-')} {dest.get('option', '')}".rstrip(),
    ]
    if trace.get("jump"):
        lines.append(f"jump:        {trace['jump']}")
    if trace.get("error"):
        lines.append(f"error:       {trace['error']}")
    crm = f"{trace['crm_ms']:.1f} ms" if trace.get("crm_ms") is not None else "-"
    lines.append(f"timings:     CRM {crm}, total {trace.get('total_ms', 0):.1f} ms")
    lines += [f"  - {step}" for step in trace.get("steps", [])]
    return "\n".join(lines)


def cmd_license(settings: Settings, args: argparse.Namespace) -> int:
    from crmroute import licensing, textfile
    from crmroute.service import Store
    from crmroute.store.db import bump_config_version, transaction
    from crmroute.store.models import License

    if args.license_command == "install":
        try:
            text = textfile.read(args.file, limit=LICENSE_MAX_BYTES)
        except ConfigError as exc:
            raise ConfigError(exc.problems, source=f"license file {args.file}") from None
    store = Store(settings)
    try:
        store.upgrade()
        if args.license_command == "install":
            if settings.license_key:
                found = licensing.verify_license(text, licensing.load_public_key(settings.license_key))
            else:
                found = licensing.parse_license(text)
                print("note: no CRMROUTE_LICENSE_KEY is configured, so licenses are not enforced", file=sys.stderr)
            licensing.check_current(found, date.today())
            with transaction(store.factory) as session:
                session.add(License(text=text))
                bump_config_version(session)
            print(f"installed the license for {found.licensee}: features {', '.join(sorted(found.features))}, "
                  f"expires {found.expires or 'never'}")  # fmt: skip
            return 0
        from sqlalchemy import select

        with store.factory() as session:
            text = session.scalar(select(License.text).order_by(License.id.desc()).limit(1))
        state = licensing.license_state(settings.license_key, text, date.today())
        print(f"license: {state.status}; CRM routing {'enabled' if state.routing_enabled else 'disabled'}")
        if state.message:
            print(state.message)
        return 0 if state.routing_enabled else 1
    except LicenseError:
        raise
    finally:
        store.close()


def cmd_user(settings: Settings, args: argparse.Namespace) -> int:
    from crmroute.service import Store
    from crmroute.store.db import transaction
    from crmroute.store.users import create_user

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        raise ConfigError("no terminal to prompt on: pipe the password in with --password-stdin",
                          field="password")  # fmt: skip
    else:
        try:
            password = getpass.getpass("Password: ")
            if getpass.getpass("Repeat password: ") != password:
                raise ConfigError("the two passwords differ", field="password")
        except EOFError:
            raise ConfigError("none was given", field="password") from None
    store = Store(settings)
    try:
        store.upgrade()
        with transaction(store.factory) as session:
            create_user(session, args.username, password)
    finally:
        store.close()
    print(f"created user {args.username}")
    return 0


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from crmroute.service import Store
    from crmroute.store.db import transaction
    from crmroute.store.users import create_token

    store = Store(settings)
    try:
        store.upgrade()
        with transaction(store.factory) as session:
            token = create_token(session, args.username, args.name)
    finally:
        store.close()
    print(token)
    return 0


CUSTOM_KIND = {
    "kind": "custom", "title": "Custom CRM (rule level)", "docs_url": "",
    "settings": [
        {"name": "custom_url", "type": "url", "required": True, "secret": False, "help": "https:// URL asked per call"},
        {"name": "custom_post", "type": "boolean", "required": False, "secret": False, "help": "POST JSON instead of GET"},
        {"name": "custom_headers", "type": "headers", "required": False, "secret": True, "help": "extra request headers"},
    ],
}  # fmt: skip


def cmd_crm(settings: Settings, args: argparse.Namespace) -> int:
    if args.crm_command == "kinds":
        return crm_kinds(args)
    return asyncio.run(crm_test(settings, args))


def crm_kinds(args: argparse.Namespace) -> int:
    from crmroute.connectors import registry
    from crmroute.connectors.base import setting_specs

    kinds = [
        {"kind": cls.kind, "title": cls.title, "docs_url": cls.docs_url, "modules": dict(cls.MODULES),
         "settings": [spec.as_dict() for spec in setting_specs(cls.Settings)]}
        for cls in registry().values()
    ] + [CUSTOM_KIND]  # fmt: skip
    if args.json:
        print(json.dumps(kinds, indent=2))
        return 0
    for kind in kinds:
        print(f"{kind['kind']}: {kind['title']}" + (f"  ({kind['docs_url']})" if kind["docs_url"] else ""))
        for spec in kind["settings"]:
            flags = ", ".join(f for f, on in (("required", spec["required"]), ("secret", spec["secret"])) if on)
            print(f"  {spec['name']:<22} {spec['type']:<8} {flags:<17} {spec['help']}")
    return 0


async def crm_test(settings: Settings, args: argparse.Namespace) -> int:
    from crmroute.connectors._http import make_client
    from crmroute.connectors.pool import ConnectorPool, ConnectorSpec
    from crmroute.service import Store
    from crmroute.store import integrations
    from crmroute.store.credentials import CredentialStore

    store = Store(settings)
    http = make_client(settings)
    try:
        await asyncio.to_thread(store.upgrade)
        with store.factory() as session:
            row = integrations.by_name(session).get(args.name)
            if row is None:
                raise ConfigError(f"no integration named {args.name!r}", field="name")
            spec = ConnectorSpec(row.id, row.name, row.kind, True, dict(row.settings), row.secrets_enc)
        credentials = CredentialStore(store.factory, store.box)  # shared with the service: see store/credentials.py
        pool = ConnectorPool(http, store.box, settings.default_region, credentials, data_dir=settings.data_dir)
        connector = pool.build(spec, for_test=True)
        report = await connector.test(args.key, module=args.module, fields=args.field)
    finally:
        await http.aclose()
        store.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        for step in report.steps:
            print(f"{'ok ' if step.ok else 'FAIL'} {step.name} ({step.ms:.0f} ms){': ' + step.detail if step.detail else ''}")
        if report.record:
            print(f"record: {report.record['module']} {report.record['id']} ({report.record['matches']} matched)")
            for name, value in report.record["fields"].items():
                print(f"  {name}: {value}")
        if report.error_code:
            print(f"error ({report.error_code}): {report.error_message}")
    return 0 if report.ok else 1


def cmd_agents(settings: Settings, args: argparse.Namespace) -> int:
    from crmroute.service import Store
    from crmroute.store import agents

    if args.agents_command == "sync":
        return asyncio.run(agents_sync(settings, args))
    store = Store(settings)
    try:
        store.upgrade()
        with store.factory() as session:
            rows = agents.list_all(session)
            listed = [agents.to_public(row) | {"explained": agents.explain(row)} for row in rows]
    finally:
        store.close()
    if args.json:
        print(json.dumps([{k: v for k, v in a.items() if k != "explained"} for a in listed], indent=2))
        return 0
    for agent in listed:
        print(f"{agent['name']}: extension {agent['extension']}, devices {', '.join(agent['watched_devices'])}")
        for line in agent["explained"]:
            print(f"  {line}")
    return 0


async def agents_sync(settings: Settings, args: argparse.Namespace) -> int:
    from crmroute.agentsync import sync_agents
    from crmroute.connectors._http import make_client
    from crmroute.service import Store

    store = Store(settings)
    http = make_client(settings)
    try:
        await asyncio.to_thread(store.upgrade)
        result = await sync_agents(store.factory, store.box, http, args.integration, region=settings.default_region)
    finally:
        await http.aclose()
        store.close()
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    print(f"{result.integration}: {result.users} CRM users, {len(result.matched)} agents matched, {result.updated} updated")
    for line in result.matched:
        print(f"  {line}")
    for line in result.unmatched_agents:
        print(f"  no CRM user has the e-mail of {line}")
    return 0


def redact_url(url: str) -> str:
    """A database URL without its password."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


COMMANDS = {
    "serve": cmd_serve,
    "agi": cmd_serve,
    "web": cmd_serve,
    "db": cmd_db,
    "rules": cmd_rules,
    "route": cmd_route,
    "license": cmd_license,
    "user": cmd_user,
    "crm": cmd_crm,
    "token": cmd_token,
    "agents": cmd_agents,
}
