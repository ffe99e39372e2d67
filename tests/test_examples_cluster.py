"""The shipped samples for several nodes: Asterisk dialplan and DNS records, the systemd unit and its settings."""

from __future__ import annotations

import re
from pathlib import Path

from crmroute.settings import DEFAULT_AGI_PORT, Settings

EXAMPLES = Path(__file__).parent.parent / "examples"


def dialplan(name: str) -> list[str]:
    text = (EXAMPLES / "asterisk" / name).read_text()
    return [line.split(";", 1)[0].strip() for line in text.splitlines() if line.split(";", 1)[0].strip()]


def test_every_agi_call_of_the_cluster_dialplan_has_a_fallback_when_every_node_is_down():
    lines = dialplan("extensions-cluster.conf")
    agi = [i for i, line in enumerate(lines) if "AGI(" in line]
    assert len(agi) == 3
    for i in agi:
        after = lines[i + 1]  # AGISTATUS=FAILURE continues at the next priority, with no CRMROUTE_* set
        assert after.startswith("same => n,") and ("Goto(" in after or "GotoIf(" in after), after
        if "GotoIf" in after:
            label = re.search(r"\?([\w-]+)\)", after).group(1)
            target = next(line for line in lines[i:] if line.startswith(f"same => n({label})"))
            assert lines[lines.index(target) + 1].startswith("same => n,Goto(crmroute-extension,")


def test_agi_urls_name_the_nodes_as_asterisk_wants():
    lines = dialplan("extensions-cluster.conf")
    urls = [re.search(r"AGI\(([^,)]+)", line).group(1) for line in lines if "AGI(" in line]
    for url in urls:
        scheme, rest = url.split("://", 1)
        host = rest.split("/", 1)[0]
        if scheme == "hagi":
            assert ":" not in host  # Asterisk refuses a port in hagi://: the SRV records carry it
        else:
            assert scheme == "agi" and host == f"crmroute.example:{DEFAULT_AGI_PORT}"


def test_the_srv_records_point_at_nodes_with_addresses():
    zone = [line.split(";", 1)[0].split() for line in (EXAMPLES / "asterisk" / "dns-srv.zone").read_text().splitlines()]
    a_records = {r[0] for r in zone if r[2:3] == ["A"]}
    srv = [r for r in zone if r[2:3] == ["SRV"]]
    assert len(srv) == 3 and all(r[0] == "_agi._tcp" for r in srv)
    for _name, _in, _srv, priority, weight, port, target in srv:
        assert int(priority) >= 0 and int(weight) >= 0 and int(port) == DEFAULT_AGI_PORT
        assert target.endswith(".crmroute.example.") and target.split(".")[0] in a_records
    assert len([r for r in zone if r[:1] == ["@"] and r[2:3] == ["A"]]) == 3  # agi://: one address per node


def test_the_systemd_unit_is_hardened_and_runs_serve():
    unit = (EXAMPLES / "systemd" / "crmroute.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["User"] == "crmroute" and settings["ExecStart"].endswith("crmroute serve")
    assert settings["ProtectSystem"] == "strict" and settings["NoNewPrivileges"] == "yes"
    assert settings["StateDirectory"] == "crmroute" and "CRMROUTE_DATA_DIR=/var/lib/crmroute" in unit
    assert settings["KillSignal"] == "SIGTERM"  # the drain: open calls saved, AMI leases handed over


def test_the_sample_settings_are_valid(tmp_path):
    env = {}
    for line in (EXAMPLES / "systemd" / "crmroute.env").read_text().splitlines():
        line = line.lstrip("#")
        if line.startswith("CRMROUTE_") and "=" in line:
            name, value = line.split("=", 1)
            env[name] = value
    env["CRMROUTE_SECRET_KEY"] = "x" * 43 + "="  # the sample says CHANGE-ME
    env["CRMROUTE_DATA_DIR"] = str(tmp_path)
    settings = Settings.from_env(env)
    assert [s.name for s in settings.ami_list] == ["pbx1", "pbx2"] and settings.node_id == "node1"
