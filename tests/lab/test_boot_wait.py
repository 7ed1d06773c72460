"""Boot ordering (chrony_nts_wait_for_time): after a restart of the host, services ordered After=time-sync.target
start only once chronyd has authenticated time, or after the bound. A lab host is really rebooted (its container is
restarted: systemd as PID 1 boots it again)."""

from __future__ import annotations

import base64
import json
import time

import pytest

from tests.lab.conftest import recap
from tests.lab.test_fresh_proof import site

pytestmark = pytest.mark.lab

HOST = "client2"
# A stand-in for a service that needs the time: ordered after time-sync.target, records when it started.
PROBE_UNIT = """[Unit]
Description=needs the time
After=time-sync.target
Wants=time-sync.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'chronyc -c -N authdata > /run/needs-time.authdata'
[Install]
WantedBy=multi-user.target
"""


def show(lab, unit, *props):
    out = lab.sh(HOST, f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def reboot(lab):
    lab.podman("restart", "-t", "10", lab.container(HOST))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = lab.sh(HOST, "systemctl is-system-running 2>/dev/null || true", check=False).stdout.strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(1)
    raise AssertionError(f"{HOST} did not finish booting within 120 s")


def test_services_after_time_sync_start_once_nts_time_is_authenticated(lab):
    extra = {"chrony_nts_site_servers": site(lab), "chrony_nts_probe_gate": False,
             "chrony_nts_wait_for_time": True, "chrony_nts_wait_for_time_timeout": 60}  # fmt: skip
    res = lab.playbook("site.yml", "--limit", HOST, "-e", json.dumps(extra))
    assert res.returncode == 0, res.stdout[-4000:]
    assert lab.sh(HOST, "systemctl is-enabled chrony-nts-wait.service").stdout.strip() == "enabled"
    unit = base64.b64encode(PROBE_UNIT.encode()).decode()
    lab.sh(HOST, f"echo {unit} | base64 -d > /etc/systemd/system/needs-time.service && systemctl daemon-reload "
                 "&& systemctl enable needs-time.service")  # fmt: skip
    try:
        reboot(lab)
        wait = show(lab, "chrony-nts-wait.service", "ActiveState", "Result", "ExecMainStatus",
                    "ActiveEnterTimestampMonotonic", "ExecMainStartTimestampMonotonic")  # fmt: skip
        assert (wait["ActiveState"], wait["Result"], wait["ExecMainStatus"]) == ("active", "success", "0"), wait
        needs = show(lab, "needs-time.service", "InactiveExitTimestampMonotonic")
        # ordered: the service that needs the time started after the wait had proven authenticated time
        assert int(needs["InactiveExitTimestampMonotonic"]) >= int(wait["ActiveEnterTimestampMonotonic"]) > 0
        rows = [line.split(",") for line in lab.sh(HOST, "cat /run/needs-time.authdata").stdout.splitlines() if line]
        assert rows and any(r[1] == "NTS" and int(r[2]) > 0 and int(r[8]) > 0 for r in rows), rows
        waited = (int(wait["ActiveEnterTimestampMonotonic"]) - int(wait["ExecMainStartTimestampMonotonic"])) / 1e6
        assert 0 < waited < 60, waited
    finally:
        lab.sh(HOST, "systemctl disable needs-time.service; rm -f /etc/systemd/system/needs-time.service; "
                     "systemctl daemon-reload", check=False)  # fmt: skip
    # off again: the unit is removed, the next run changes that and nothing else
    extra["chrony_nts_wait_for_time"] = False
    res = lab.playbook("site.yml", "--limit", HOST, "-e", json.dumps(extra))
    assert res.returncode == 0 and recap(res.stdout)[HOST]["failed"] == 0, res.stdout[-4000:]
    assert lab.sh(HOST, "test -e /etc/systemd/system/chrony-nts-wait.service", check=False).returncode == 1
    # and nothing left that would start it at the next boot
    links = "ls /etc/systemd/system/*.wants/ | grep -c chrony-nts-wait || true"
    assert lab.sh(HOST, links).stdout.strip() == "0"


def test_the_health_check_can_be_switched_off_and_on_again(lab):
    """chrony_nts_monitor: false stops the timer, removes its units and the link that enabled it; the next run changes
    nothing; true brings them back."""
    extra = {"chrony_nts_site_servers": site(lab), "chrony_nts_probe_gate": False, "chrony_nts_monitor": False}
    units = "/etc/systemd/system/chrony-nts-check.timer /etc/systemd/system/chrony-nts-check.service"
    try:
        res = lab.playbook("site.yml", "--limit", HOST, "-e", json.dumps(extra))
        assert res.returncode == 0, res.stdout[-4000:]
        assert lab.sh(HOST, "systemctl is-active chrony-nts-check.timer", check=False).stdout.strip() == "inactive"
        assert "chrony-nts" not in lab.sh(HOST, "systemctl --failed --no-legend").stdout
        assert lab.sh(HOST, f"ls {units} 2>/dev/null | wc -l").stdout.strip() == "0"
        assert lab.sh(HOST, "ls /etc/systemd/system/*.wants/ | grep -c chrony-nts-check || true").stdout.strip() == "0"
        prom = "/var/lib/prometheus/node-exporter/chrony_nts.prom"  # no last reading left for node_exporter to serve
        assert lab.sh(HOST, f"test -e {prom}", check=False).returncode == 1
        res = lab.playbook("site.yml", "--limit", HOST, "-e", json.dumps(extra))
        assert res.returncode == 0 and recap(res.stdout)[HOST]["changed"] == 0, res.stdout[-4000:]
    finally:
        extra["chrony_nts_monitor"] = True
        res = lab.playbook("site.yml", "--limit", HOST, "-e", json.dumps(extra))
    assert res.returncode == 0, res.stdout[-4000:]
    assert lab.sh(HOST, "systemctl is-active chrony-nts-check.timer", check=False).stdout.strip() == "active"
    assert lab.sh(HOST, "systemctl is-enabled chrony-nts-check.timer", check=False).stdout.strip() == "enabled"
    res = lab.playbook("site.yml", "--limit", HOST, "-e", json.dumps(extra))
    assert res.returncode == 0 and recap(res.stdout)[HOST]["changed"] == 0, res.stdout[-4000:]
