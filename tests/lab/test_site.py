"""site.yml on the lab: the first run proves NTS on every host, the second changes nothing, and each fault that the
best-known roles report as success (untrusted certificate, closed 4460, a name that does not resolve, a server down
after a restart with cookies still saved) fails the run, names the cause and leaves the host as it was."""

from __future__ import annotations

import json
import re

import pytest

from tests.lab.conftest import recap
from tests.lib.nts_checks import assert_nts_healthy, wait_nts_healthy

pytestmark = pytest.mark.lab

MANAGED = ["/etc/chrony/chrony.conf", "/etc/default/chrony", "/etc/systemd/system/chrony.service.d/50-chrony-nts.conf"]


def runner(lab, client):
    return lambda cmd: lab.sh(client, cmd).stdout


def fingerprint(lab, client) -> dict[str, str]:
    out = lab.sh(client, "sha256sum " + " ".join(MANAGED) + " 2>&1; stat -c '%n %a %U %G' " + " ".join(MANAGED)).stdout
    return dict(enumerate(sorted(out.splitlines())))


@pytest.fixture(scope="module")
def converged(lab):
    # Hosts whose package index is days old, as in any long-lived image: with chrony_nts_package_update_cache false
    # (the lab's network has no route out) the role must install from the cache and never try to update it.
    for client in lab.clients:
        lab.sh(client, "touch -d '2 days ago' /var/lib/apt/lists /var/lib/apt/lists/* /var/cache/apt/*.bin "
                       "/var/lib/apt/periodic/update-success-stamp 2>/dev/null; true")  # fmt: skip
    res = lab.playbook("site.yml")
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    return res


def test_first_run_proves_nts_on_every_host(lab, converged):
    stats = recap(converged.stdout)
    assert set(stats) >= set(lab.clients)
    assert all(stats[c]["failed"] == 0 and stats[c]["changed"] > 0 for c in lab.clients), stats
    for client in lab.clients:
        state = assert_nts_healthy(runner(lab, client), min_sources=2)
        # the second implementation (NTPsec) authenticates too
        assert state["authdata"]["ntpsec1.lab.test"][9] == "104"
        args = lab.sh(client, "tr '\\0' ' ' < /proc/$(pidof -s chronyd)/cmdline").stdout.split()
        assert args[:1] == ["/usr/sbin/chronyd"] and "-x" in args and args[args.index("-F") + 1] == "1", args


def test_second_run_changes_nothing_and_still_verifies(lab, converged):
    res = lab.playbook("site.yml")
    assert res.returncode == 0, res.stdout[-4000:]
    stats = recap(res.stdout)
    assert all(stats[c]["changed"] == 0 and stats[c]["failed"] == 0 for c in lab.clients), stats
    # verification ran on every host although nothing changed
    assert len(re.findall(r"NTS\s+verified\s+in\s+[0-9.]+\s+s", res.stdout)) == len(lab.clients), res.stdout[-4000:]


def test_check_mode_with_diff_reports_no_change(lab, converged):
    res = lab.playbook("site.yml", "--check", "--diff")
    assert res.returncode == 0, res.stdout[-4000:]
    assert all(recap(res.stdout)[c]["changed"] == 0 for c in lab.clients)


FAULTS = {
    # fault name: (servers to point client1 at, lab fault to inject, words the failure must contain)
    "untrusted certificate": (["nts-badca"], None, "key exchange never succeeded"),
    # nts3 is a good server the host never talked to: no saved cookies can stand in for the blocked key exchange.
    "closed 4460": (["nts3"], ("block", "nts3", "ke"), "key exchange never succeeded"),
    "name does not resolve": (["nts-nowhere"], None, "not configured in the running chronyd"),
}


def site_servers(lab, shorts):
    ca = open(lab.vars["lab_ca_file"]).read()
    return [{"host": f"{s}.lab.test", "ca": ca, "options": ["minpoll 0", "maxpoll 4"]} for s in shorts]


def run_faulty(lab, extra: dict):
    base = {"chrony_nts_policy": {"count": 1, "min_sources": 1}, "chrony_nts_verify_min_sources": 1,
            "chrony_nts_verify_timeout": 15, "chrony_nts_probe_gate": False}  # fmt: skip
    return lab.playbook("site.yml", "--limit", "client1", "-e", json.dumps({**base, **extra}))


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_fails_names_the_cause_and_rolls_back(lab, converged, fault):
    shorts, inject, cause = FAULTS[fault]
    before = fingerprint(lab, "client1")
    if inject:
        lab.fault(*inject)
    try:
        res = run_faulty(lab, {"chrony_nts_site_servers": site_servers(lab, shorts)})
    finally:
        if inject:
            lab.fault("unblock", inject[1])
    assert res.returncode != 0, res.stdout[-4000:]
    assert recap(res.stdout)["client1"]["failed"] == 1
    assert cause in res.stdout, res.stdout[-6000:]
    assert fingerprint(lab, "client1") == before
    assert lab.sh("client1", "systemctl is-active chrony").stdout.strip() == "active"
    # the previous configuration works again once chronyd has polled its sources
    wait_nts_healthy(runner(lab, "client1"), min_sources=2)


def test_server_down_after_restart_with_saved_cookies_fails_and_rolls_back(lab, converged):
    before = fingerprint(lab, "client1")
    # chronyd writes its cookies to ntsdumpdir when it stops and reads them back when it starts: every source must
    # hold cookies now for the restart below to come back with cookies and no key exchange.
    auth = lab.sh("client1", "chronyc -c -N authdata").stdout.splitlines()
    assert len(auth) == 3 and all(int(line.split(",")[8]) > 0 for line in auth), auth
    # Down as a client sees it: every packet dropped (the names still resolve; a stopped container's would not).
    for server in ("nts1", "nts2", "ntpsec1"):
        lab.fault("block", server, "all")
    try:
        # Same servers, one harmless change: the restart reloads saved cookies (Cook > 0) but nothing answers.
        res = lab.playbook("site.yml", "--limit", "client1", "-e", '{"chrony_nts_makestep_limit": 4, '
                           '"chrony_nts_verify_timeout": 4, "chrony_nts_probe_gate": false}')  # fmt: skip
        assert res.returncode != 0, res.stdout[-4000:]
        # Right after the restart the saved cookies are back (Cook > 0) but no reply comes; chronyd then spends them
        # and retries the key exchange. Either way the report names a server that does not answer.
        down = r"unreachable: no reply|NTS key exchange never succeeded \(TCP 4460 blocked, server down"
        assert re.search(down, res.stdout), res.stdout[-6000:]
        assert fingerprint(lab, "client1") == before
    finally:
        for server in ("nts1", "nts2", "ntpsec1"):
            lab.fault("unblock", server)
    res = lab.playbook("site.yml", "--limit", "client1")
    assert res.returncode == 0, res.stdout[-4000:]
    assert recap(res.stdout)["client1"]["changed"] == 0


def extra_entry(**overrides):
    entry = {"host": "nts.extra.example", "provider": "extra", "operator": "Extra", "countries": ["SE"],
             "region": "europe", "stratum": 2}  # fmt: skip
    return {**entry, **overrides}


def lab_site(lab, **overrides):
    return [{**site_servers(lab, ["nts1"])[0], **overrides}]


BAD_INPUTS = {
    # name: (extra vars, text the error must contain: the field and the value)
    "unknown provider": (
        {"chrony_nts_use_catalog": True, "chrony_nts_policy": {"providers_allow": ["netnood"]}},
        "netnood",
    ),
    "empty selection": (
        {"chrony_nts_use_catalog": True, "chrony_nts_site_servers": [], "chrony_nts_policy": {"countries": ["AQ"]}},
        "no NTS source selected",
    ),
    "fewer sources than the minimum": (
        {"chrony_nts_use_catalog": True, "chrony_nts_site_servers": [], "chrony_nts_policy": {"countries": ["BE"]}},
        "min_sources is 3",
    ),
    "bad hostname": ({"chrony_nts_site_servers": "BAD_HOST"}, "nts_1..lab"),
    "port out of range": ({"chrony_nts_site_servers": "BAD_PORT"}, "70000"),
    "duplicate server": ({"chrony_nts_site_servers": "DUPLICATE"}, "duplicate"),
    "stratum 0": ({"chrony_nts_use_catalog": True, "chrony_nts_catalog_extra": [extra_entry(stratum=0)]}, "stratum 0"),
    "stratum 16": (
        {"chrony_nts_use_catalog": True, "chrony_nts_catalog_extra": [extra_entry(stratum=16)]},
        "stratum 16",
    ),
    "unknown catalog key": (
        {"chrony_nts_use_catalog": True, "chrony_nts_catalog_extra": [extra_entry(statum=1)]},
        "statum",
    ),
    "CA that is not PEM": ({"chrony_nts_site_servers": "NOT_PEM"}, "ca"),
    "authselectmode typo": ({"chrony_nts_authselectmode": "requrie"}, "requrie"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_stops_before_touching_the_host(lab, converged, case):
    extra, expected = BAD_INPUTS[case]
    special = {
        "BAD_HOST": lab_site(lab, host="nts_1..lab"),
        "BAD_PORT": lab_site(lab, port=70000),
        "DUPLICATE": site_servers(lab, ["nts1", "nts1"]),
        "NOT_PEM": lab_site(lab, ca="this is not a certificate"),
    }
    extra = {k: special.get(v, v) if isinstance(v, str) else v for k, v in extra.items()}
    before = fingerprint(lab, "client1")
    started = lab.sh("client1", "systemctl show -p ActiveEnterTimestampMonotonic chrony").stdout
    res = lab.playbook("site.yml", "--limit", "client1", "-e", json.dumps(extra))
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert expected in out, out[-5000:]
    stats = recap(res.stdout).get("client1", {"changed": 0})
    assert stats["changed"] == 0, out[-3000:]
    assert fingerprint(lab, "client1") == before
    assert lab.sh("client1", "systemctl show -p ActiveEnterTimestampMonotonic chrony").stdout == started


def test_probe_gate_drops_a_failing_server_before_any_change(lab, converged):
    """With the gate on, a server whose certificate the controller's probe rejects never reaches the host."""
    before = fingerprint(lab, "client1")
    extra = {"chrony_nts_site_servers": site_servers(lab, ["nts1", "nts-badca"]),
             "chrony_nts_policy": {"count": 2, "min_sources": 1}, "chrony_nts_verify_min_sources": 2}  # fmt: skip
    res = lab.playbook("site.yml", "--limit", "client1", "-e", json.dumps(extra))
    assert res.returncode != 0
    assert "nts-badca.lab.test:4460 failed at certificate" in res.stdout, res.stdout[-5000:]
    assert "nothing on this host was changed" in res.stdout
    assert fingerprint(lab, "client1") == before
    # The same with a quorum of one: the bad server is dropped and the host converges on the good one.
    extra["chrony_nts_verify_min_sources"] = 1
    res = lab.playbook("site.yml", "--limit", "client1", "-e", json.dumps(extra))
    assert res.returncode == 0, res.stdout[-5000:]
    assert "Dropped 1 NTS server(s)" in res.stdout
    conf = lab.sh("client1", "cat /etc/chrony/chrony.conf").stdout
    assert "nts1.lab.test" in conf and "nts-badca" not in conf
    # back to the lab's configuration
    assert lab.playbook("site.yml", "--limit", "client1").returncode == 0


def test_a_conflicting_time_daemon_is_stopped_and_disabled(lab, converged):
    """A stand-in ntp.service (Debian's chrony unit conflicts with it, so starting it stops chrony)."""
    unit = "[Unit]\\nDescription=stand-in for ntpd\\n[Service]\\nExecStart=/bin/sleep infinity\\n"
    unit += "[Install]\\nWantedBy=multi-user.target\\n"
    lab.sh("client2", f"printf '{unit}' > /etc/systemd/system/ntp.service && systemctl daemon-reload "
                      "&& systemctl enable --now ntp.service")  # fmt: skip
    try:
        assert lab.sh("client2", "systemctl is-active chrony", check=False).stdout.strip() != "active"
        res = lab.playbook("site.yml", "--limit", "client2")
        assert res.returncode == 0, res.stdout[-4000:]
        assert "changed: [client2] => (item=ntp.service)" in res.stdout
        state = lab.sh("client2", "systemctl is-active ntp; systemctl is-enabled ntp; systemctl is-active chrony",
                       check=False).stdout.split()  # fmt: skip
        assert state == ["inactive", "disabled", "active"], state
        wait_nts_healthy(runner(lab, "client2"), min_sources=2)
    finally:
        lab.sh("client2", "systemctl disable --now ntp.service; rm -f /etc/systemd/system/ntp.service; "
                          "systemctl daemon-reload", check=False)  # fmt: skip
