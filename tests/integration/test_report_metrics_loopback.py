"""report.yml and health.yml read the host check's metrics file when it is fresh, and fall back to the live
chrony_authdata check where it is absent or stale, saying which and how old.

Real parts only: a loopback chronyd -x NTS server and a client of it (tests/lib), the real host check
(nts_check.run_check) writing the client's and the server's metrics files, and ansible-playbook running both playbooks
on localhost (connection local) for four inventory hosts that stand for the fleet: client1 with the fresh file,
client2 with the same reading re-rendered 1000 s older, client3 with no file, tier1 (an NTS server) with its own
fresh file and counters. No chronyd answers the default socket here, so the live check of client2 and client3 finds
none: they are reported from the live check, as unknown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ansible_collections.nts.chrony.plugins.module_utils import nts_check
from ansible_collections.nts.chrony.plugins.module_utils import nts_metrics as nm

from tests.integration.test_nts_check_loopback import start_pair
from tests.lib.pki import CertificateAuthority, make_shared_dir

pytestmark = pytest.mark.loopback

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


def play(playbook: str, inventory: Path, *args: str) -> tuple[int, dict, str]:
    """ansible-playbook with the json stdout callback: (rc, the parsed run, stderr). The checkout's ansible.cfg less
    its profile_tasks callback (which writes to stdout too): its collections path, nothing else."""
    config = inventory.with_name("ansible.cfg")
    config.write_text("[defaults]\ncollections_path = %s\ninterpreter_python = auto_silent\n" % (REPO / ".collections"))
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(config),
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="0",
    )
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), playbook, *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    try:
        run = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail("ansible-playbook gave no JSON (rc %d): %s %s" % (proc.returncode, proc.stdout[-3000:],
                                                                      proc.stderr[-3000:]))  # fmt: skip
    return proc.returncode, run, proc.stderr


def task_hosts(run: dict, name_start: str) -> dict:
    """{host: result} of the (first) task whose name starts with ``name_start``."""
    for p in run["plays"]:
        for task in p["tasks"]:
            if task["task"]["name"].startswith(name_start):
                return task["hosts"]
    raise AssertionError("no task %r in the run" % name_start)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """The metrics files and the inventory (module scope: one loopback pair for both playbooks)."""
    procs = []
    pki = make_shared_dir()
    try:
        ca = CertificateAuthority(pki, name="test")
        server, client = start_pair(ca, procs)
        out = tmp_path_factory.mktemp("textfile")
        check = nts_check.run_check(socket=str(client.socket_path), timeout=20, output=str(out / "client1.prom"))
        assert check["verified"], check.get("msg")
        stale = nm.render(
            check,
            check["check_started"] - 1000,
            check["check_duration"],
            check["chronyd_running"],
            required=check["required"],
        )
        (out / "client2.prom").write_text(stale)
        tier = nts_check.run_check(
            socket=str(server.socket_path),
            timeout=5,
            min_sources=0,
            require_synchronised=False,
            serverstats=True,
            output=str(out / "tier1.prom"),
        )
        assert tier["verified"] and tier["serverstats"]["nts_ke_accepted"] >= 1, tier
        local = {
            "ansible_connection": "local",
            "ansible_become": False,  # root already; the playbooks' become needs no sudo here
            "ansible_python_interpreter": sys.executable,
        }
        hosts = {
            "client1": {**local, "chrony_nts_monitor_output": str(out / "client1.prom")},
            "client2": {**local, "chrony_nts_monitor_output": str(out / "client2.prom")},
            "client3": {**local, "chrony_nts_monitor_output": str(out / "client3.prom")},
        }
        inventory = out / "hosts.yml"
        inventory.write_text(
            json.dumps(
                {
                    "all": {
                        "children": {
                            "chrony_nts_clients": {"hosts": hosts},
                            "chrony_nts_servers": {
                                "hosts": {"tier1": {**local, "chrony_nts_monitor_output": str(out / "tier1.prom")}}
                            },
                        }
                    }
                }
            )
        )
        yield {"inventory": inventory, "server": server, "client": client, "dir": out, "written": time.time()}
    finally:
        for proc in reversed(procs):
            proc.cleanup()
        shutil.rmtree(pki, ignore_errors=True)


def test_report_reads_the_metrics_and_checks_live_only_where_they_do_not_stand(fleet, tmp_path):
    rc, run, stderr = play(
        "playbooks/report.yml",
        fleet["inventory"],
        "-e",
        f"chrony_nts_report_dir={tmp_path / 'rep'}",
        "-e",
        "chrony_nts_report_timeout=1",
    )
    assert rc == 0, json.dumps(run)[-4000:] + stderr[-2000:]
    # one slurp per host; the live check only where the metrics do not stand; no serverstats call for tier1
    live = task_hosts(run, "Read chronyd's authdata")
    assert sorted(h for h, r in live.items() if not r.get("skipped")) == ["client2", "client3"]
    stats = task_hosts(run, "Read the NTS server counters")
    assert stats["tier1"].get("skipped") is True

    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    hosts = {h["name"]: h for h in report["hosts"]}
    server = fleet["server"]
    one = hosts["client1"]
    assert one["status"] == "healthy" and one["reading"]["source"] == "metrics"
    assert 0 <= one["reading"]["age"] <= time.time() - fleet["written"] + 5
    (src,) = one["sources"]
    assert src["name"] == server.address and src["healthy"] is True and src["mode"] == "NTS"
    assert src["state"] == "*" and src["cookies"] >= 1 and src["naks"] == 0
    assert one["offset_basis"] == "selected source" and one["offset"] == src["offset"]
    assert one["synchronised"] is True  # the check requires it (the role's default) and passed

    two = hosts["client2"]
    assert two["reading"]["source"] == "live" and two["reading"]["age"] == 0
    assert two["reading"]["why_live"].startswith("metrics 10") and "more than 180 s" in two["reading"]["why_live"]
    assert two["status"] == "unknown" and "chronyd is not running" in two["failures"][0]
    three = hosts["client3"]
    assert three["reading"]["why_live"].startswith("metrics not readable: File not found: ")

    tier = hosts["tier1"]
    assert tier["reading"]["source"] == "metrics" and tier["status"] == "healthy"
    assert tier["server"]["nts_ke_accepted"] >= 1 and tier["server"]["ntp_rx"] is None
    assert report["summary"]["readings"] == {"metrics": 2, "live": 2, "none": 0}

    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<td class='reading'>metrics, %d s old</td>" % one["reading"]["age"] in html
    assert "<td class='reading'>live check</td>" in html
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| client1 | HEALTHY | metrics, %d s old |" % one["reading"]["age"] in md


def test_health_lines_say_metrics_or_live(fleet):
    rc, run, stderr = play("playbooks/health.yml", fleet["inventory"], "-e", "chrony_nts_health_timeout=1")
    assert rc == 2, json.dumps(run)[-4000:] + stderr[-2000:]  # the live check finds no chronyd on client2, client3
    live = task_hosts(run, "Read chronyd's authdata")
    assert live["client1"].get("skipped") is True and live["client2"].get("failed") is True
    (summary,) = task_hosts(run, "Summarise the fleet").values()
    lines = {line.split()[0]: line for line in summary["msg"]}
    server = fleet["server"]
    assert lines["client1"].startswith("client1      OK       1/1 NTS sources healthy  reading ")
    assert " s old (metrics)  %s[* mode=NTS nak=0 cook=" % server.address in lines["client1"]
    assert lines["client2"].startswith("client2      UNKNOWN  live (metrics 10")
    assert "chronyd is not running" in lines["client2"]
    assert lines["client3"].startswith("client3      UNKNOWN  live (metrics not readable: File not found: ")
