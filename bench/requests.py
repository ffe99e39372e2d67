"""Requests each CRM connector sends per call, against the strict vendor fakes of ``tests/connectors``.

For every kind (the concrete ``ConnectorContract`` class of each ``tests/connectors/test_<kind>.py``),
its HTTPS fake is started on 127.0.0.1 with one record, and a fresh data directory holds that
integration (values never cached: ``cache_ttl_s: 0``), a rule reading the contract's field and a DID.
Then, counting what reached the fake:

    routed      --calls FastAGI calls from the caller whose record exists (the real AGI server and
                router, one process, so a token is reused as in the service)
    not found   --calls calls from numbers the CRM does not know
    dry run     --runs ``crmroute route`` processes, one after another, on the same data directory

Each figure is requests per call (or per process), with the sign-in requests (token, login, session,
challenge: the fake's auth paths) counted apart. Nothing leaves this machine.

    .venv/bin/python bench/requests.py                 # every kind, about a minute
    .venv/bin/python bench/requests.py --only zoho,suitecrm --calls 40 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crmroute import rulesfile  # noqa: E402
from crmroute.agi.jumps import JumpTable  # noqa: E402
from crmroute.agi.scripts import CallHandler  # noqa: E402
from crmroute.agi.server import AgiServer  # noqa: E402
from crmroute.connectors import registry  # noqa: E402
from crmroute.connectors.base import setting_specs  # noqa: E402
from crmroute.service import Store, build_router  # noqa: E402
from crmroute.settings import Settings  # noqa: E402
from tests.agi.fakeasterisk import call_agi  # noqa: E402
from tests.connectors.contract import CALLER, ConnectorContract  # noqa: E402
from tests.connectors.fakecrm import VendorFake, serve_vendor  # noqa: E402

DID = "5551000"
MODULES = ("bullhorn", "dynamics2015", "hubspot", "pipedrive", "proprietary", "proprietary1", "salesforce",
           "sugarcrm", "suitecrm", "vtiger", "zendesk", "zoho")  # fmt: skip


@dataclass
class Figures:
    kind: str
    variant: str
    routed: float  # requests per uncached call, record found
    routed_auth: float  # of which sign-in requests
    not_found: float
    dry_run: float  # requests per `crmroute route` process
    dry_run_auth: float
    statuses: str  # what the routed calls ended as, e.g. "matched x40"


def contract_classes(module_name: str) -> list[type[ConnectorContract]]:
    module = importlib.import_module(f"tests.connectors.test_{module_name}")
    found = [c for _, c in inspect.getmembers(module, inspect.isclass)
             if issubclass(c, ConnectorContract) and c.__name__.startswith("Test") and c.__module__ == module.__name__]
    return sorted(found, key=lambda c: c.__name__)


def rules_for(contract: ConnectorContract, fake: VendorFake) -> dict:
    cls = registry()[contract.kind]
    secret_names = {s.name for s in setting_specs(cls.Settings) if s.secret}
    values = contract.settings(fake) | {"cache_ttl_s": 0}
    return {
        "integrations": [{"name": "The CRM", "kind": contract.kind,
                          "settings": {k: v for k, v in values.items() if k not in secret_names},
                          "secrets": {k: v for k, v in values.items() if k in secret_names}}],
        "destinations": [{"type": "extension", "number": "100"}, {"type": "queue", "number": "103"}],
        "rules": [{"name": "By CRM", "crm_field": contract.FIELD, "location": "did", "crm_source": "integration",
                   "integration": "The CRM", "crm_module": contract.MODULE, "default_destination": "100",
                   "rows": [{"operator": "=", "value": "gold", "destination": "queue", "option": "103"}]}],
        "dids": [{"number": DID, "rule": "By CRM"}],
    }  # fmt: skip


def counts(fake: VendorFake, since: int) -> tuple[int, int]:
    """(all requests, sign-in requests) the fake received after the first ``since``."""
    seen = fake.requests[since:]
    return len(seen), sum(1 for r in seen if fake._is_auth(r.path))


async def routed_calls(settings: Settings, fake: VendorFake, callers: list[str]) -> tuple[int, int, list[str]]:
    store = Store(settings)
    router = build_router(store)
    await router.start()
    server = AgiServer(CallHandler(router, JumpTable.from_settings(settings)), port=0, allow=settings.agi_allow)
    await server.start()
    since, statuses = len(fake.requests), []
    try:
        for caller in callers:  # one after another: every call is a CRM request, none shares another's
            result = await call_agi(server.port, "did", env={"extension": DID, "callerid": caller}, timeout=10)
            statuses.append(result.variables.get("CRMROUTE_STATUS", "?"))
    finally:
        await server.close()
        await router.close()
        await router.http.aclose()
        store.close()
    total, auth = counts(fake, since)
    return total, auth, statuses


def dry_runs(data_dir: Path, fake: VendorFake, runs: int) -> tuple[int, int]:
    env = os.environ | {"CRMROUTE_DATA_DIR": str(data_dir), "CRMROUTE_CA_BUNDLE": str(fake.ca_path)}
    since = len(fake.requests)
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-m", "crmroute", "route", "--did", DID, "--caller", CALLER, "--json"],
                              env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"crmroute route failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return counts(fake, since)


async def measure(contract_cls: type[ConnectorContract], make_app, calls: int, runs: int) -> Figures:
    contract = contract_cls()
    with tempfile.TemporaryDirectory(prefix="crmroute-requests-") as tmp, serve_vendor(make_app, Path(tmp)) as fake:
        data_dir = Path(tmp) / "data"
        settings = Settings.from_env({"CRMROUTE_DATA_DIR": str(data_dir), "CRMROUTE_CA_BUNDLE": str(fake.ca_path)})
        store = Store(settings)
        store.upgrade()
        rulesfile.import_rules(store.factory, store.box, rulesfile.parse(yaml.safe_dump(rules_for(contract, fake)),
                                                                         environ={}))  # fmt: skip
        store.close()
        fake.records = [contract.record()]
        total, auth, statuses = await routed_calls(settings, fake, [CALLER] * calls)
        unknown = [f"+1202555{n:04d}" for n in range(1000, 1000 + calls)]
        missing, _, _ = await routed_calls(settings, fake, unknown)
        dry_total, dry_auth = dry_runs(data_dir, fake, runs)
    tally = ", ".join(f"{s} x{statuses.count(s)}" for s in sorted(set(statuses)))
    return Figures(contract.kind, contract_cls.__name__.removeprefix("Test"), total / calls, auth / calls,
                   missing / calls, dry_total / runs, dry_auth / runs, tally)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated test module names (e.g. zoho,suitecrm)")
    parser.add_argument("--calls", type=int, default=20, help="routed calls per kind (default 20)")
    parser.add_argument("--runs", type=int, default=3, help="CLI dry runs per kind (default 3)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)  # the fakes' shutdown chatter
    chosen = [m for m in MODULES if not args.only or m in args.only.split(",")]
    results: list[Figures] = []
    for name in chosen:
        make_app = importlib.import_module(f"tests.connectors.test_{name}").make_app
        for contract_cls in contract_classes(name):
            try:
                results.append(asyncio.run(measure(contract_cls, make_app, args.calls, args.runs)))
            except Exception as exc:  # one kind's trouble must not hide the others' figures
                print(f"{name} {contract_cls.__name__}: {type(exc).__name__}: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return
    print(f"{'kind':14} {'variant':12} {'per call':>9} {'(sign-in)':>9} {'not found':>9} {'dry run':>8} "
          f"{'(sign-in)':>9}  routed calls")  # fmt: skip
    for r in results:
        print(f"{r.kind:14} {r.variant:12} {r.routed:9.2f} {r.routed_auth:9.2f} {r.not_found:9.2f} "
              f"{r.dry_run:8.2f} {r.dry_run_auth:9.2f}  {r.statuses}")  # fmt: skip


if __name__ == "__main__":
    main()
