"""A cheap smoke run of the benchmark's parts: the load generator against the bare FastAGI server,
process AGI through the bridge, and crmroute against the CRM stand-in (a few calls each)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import loadgen  # noqa: E402
import run  # noqa: E402


@pytest.fixture
def work(tmp_path):
    return run.make_work(tmp_path)


async def test_bare_server_and_process_agi(work):
    crm = run.start_crm(work, latency_ms=1)
    bare = run.start_bare(work)
    bridge = run.start_procagi(work, crm)
    with run.running(crm, bare, bridge):
        load = await loadgen.run_load(bare.port, 50, 10, run.callers(50))
        assert load.statuses() == {"matched": 50} and len(load.decision_ms()) == 50
        load = await loadgen.run_load(bridge.port, 3, 3, run.callers(3))
        assert load.statuses() == {"matched": 3}
        assert run.crm_requests(work, crm) == 3


async def test_crmroute_with_the_stand_in(work):
    crm = run.start_crm(work, latency_ms=1)
    crmroute = run.start_crmroute(work, crm)
    with run.running(crm, crmroute):
        load = await loadgen.run_load(crmroute.port, 40, 20, run.callers(4))
        assert load.statuses() == {"matched": 40}
        assert run.crm_requests(work, crm) == 4  # cache and single-flight: one request per caller
        fds = run.fds(crmroute, crm)  # the soak's leak check tells kept-alive CRM connections apart
        assert 1 <= fds["crm_connections"] <= 4 and fds["database"] >= 1 and fds["other"] > 0


def test_report_table_and_verdicts():
    ratios = {"burst_crm_requests": 50, "soak_rss_growth_pct": 12.0, "extra": 1}
    lines = run.verdicts(ratios)
    assert any("burst_crm_requests" in line and "met" in line and "NOT" not in line for line in lines)
    assert any("soak_rss_growth_pct" in line and "NOT MET" in line for line in lines)
    assert loadgen.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0 and loadgen.percentile([], 99) is None
