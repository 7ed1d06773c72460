"""The proof means "authenticated time now, through the configuration just written": one lab case per property.

Every case runs site.yml on client1 with the pre-flight probe gate off, so that the proof on the host decides (as on
a controller without a route to the servers). The truth for each case:

- a server that stopped answering, on a run that changes nothing: red, although chronyd still lists it selected;
- a wrong CA (botched CA rotation), a CA that is not a certificate, a ``ca_file`` missing on the host: red or
  refused, the host's files byte for byte as before;
- an extra CA added to one source's bundle (trust changed, still valid): green, through a new key exchange for that
  source only, made in the running chronyd (no restart); the other sources keep their state; with the live renewal
  off, a restart where that source alone loses its saved cookies;
- a server key rotation (its cookies rejected with a NAK, then a new key exchange): green;
- chrony's default polling (no minpoll/maxpoll): green, the no-change proof within a second.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.lab.conftest import recap
from tests.lab.test_site import fingerprint, runner, site_servers
from tests.lib.nts_checks import wait_nts_healthy

pytestmark = pytest.mark.lab

GATE_OFF = {"chrony_nts_probe_gate": False, "chrony_nts_verify_timeout": 8}
LAB_SERVERS = ["nts1", "nts2", "ntpsec1"]


def authdata(lab, client="client1") -> dict[str, list[str]]:
    rows = [line.split(",") for line in lab.sh(client, "chronyc -c -N authdata").stdout.splitlines() if line]
    return {row[0]: row for row in rows}


def sources(lab, client="client1") -> dict[str, list[str]]:
    rows = [line.split(",") for line in lab.sh(client, "chronyc -c -N sources").stdout.splitlines() if line]
    return {row[2]: row for row in rows}


def site(lab, ca_for: dict[str, dict] | None = None, options=("minpoll 0", "maxpoll 4")) -> list[dict]:
    """The lab's three servers as site servers; ``ca_for`` overrides keys of some of them."""
    servers = []
    for entry in site_servers(lab, LAB_SERVERS):
        entry["options"] = list(options)
        entry.update((ca_for or {}).get(entry["host"].split(".")[0], {}))
        if "ca_file" in entry:
            entry.pop("ca", None)
        servers.append(entry)
    return servers


def deploy(lab, servers, *extra_args, **extra_vars):
    extra = {**GATE_OFF, "chrony_nts_site_servers": servers, **extra_vars}
    return lab.playbook("site.yml", "--limit", "client1", "-e", json.dumps(extra), *extra_args)


def chronyd_started(lab) -> str:
    return lab.sh("client1", "systemctl show -p ActiveEnterTimestampMonotonic chrony").stdout


@pytest.fixture(scope="module")
def fresh_lab(lab):
    res = deploy(lab, site(lab))
    assert res.returncode == 0, res.stdout[-6000:]
    wait_nts_healthy(runner(lab, "client1"), min_sources=3)
    return lab


def test_dead_server_turns_a_no_change_run_red_within_the_timeout(fresh_lab):
    lab = fresh_lab
    lab.sh("client1", "chronyc burst 1/4 >/dev/null; sleep 1")
    before = fingerprint(lab, "client1")
    lab.fault("block", "nts1", "all")
    try:
        t0 = time.monotonic()
        res = deploy(lab, site(lab), chrony_nts_verify_timeout=5)
        wall = time.monotonic() - t0
        assert res.returncode != 0, res.stdout[-4000:]
        stats = recap(res.stdout)["client1"]
        assert stats["failed"] == 1 and stats["changed"] == 0, stats
        assert "required source nts1.lab.test is not healthy" in res.stdout, res.stdout[-5000:]
        # history alone would have passed: the dead source was still listed with a non-zero reach register
        # (at minpoll 0 the cookies run out within seconds, then the key exchange fails too)
        down = (
            r"nts1\.lab\.test: (unreachable: no reply on UDP port 123 during this check|no cookies"
            r"|NTS key exchange failing)"
        )
        assert re.search(down, re.sub(r"\s+", " ", res.stdout)), res.stdout[-5000:]
        assert wall < 5 + 20, wall  # the bound: the proof's own timeout plus the run's fixed cost
        assert fingerprint(lab, "client1") == before
    finally:
        lab.fault("unblock", "nts1")
    res = deploy(lab, site(lab), chrony_nts_verify_timeout=30)
    assert res.returncode == 0, res.stdout[-4000:]


def test_wrong_ca_is_red_names_the_certificate_and_rolls_back(fresh_lab):
    lab = fresh_lab
    before, started = fingerprint(lab, "client1"), chronyd_started(lab)
    record = lab.sh("client1", "cat /var/lib/chrony-nts/trust.json").stdout
    wrong = open(lab.vars["lab_rogue_ca_file"]).read()  # a real CA, but not the one that signed nts1's certificate
    res = deploy(lab, site(lab, {"nts1": {"ca": wrong}}))
    assert res.returncode != 0, res.stdout[-4000:]
    flat = re.sub(r"\s+", " ", res.stdout)
    assert "nts1.lab.test: certificate not trusted: wrong or missing CA" in flat, flat[-5000:]
    assert "Rolled back" in flat
    assert fingerprint(lab, "client1") == before
    assert lab.sh("client1", "cat /var/lib/chrony-nts/trust.json").stdout == record  # nothing new was proven
    assert chronyd_started(lab) != started  # nts1 renewed on the wrong CA, then a restart on the old files
    wait_nts_healthy(runner(lab, "client1"), min_sources=3)


def test_missing_ca_file_is_refused_before_any_change(fresh_lab):
    lab = fresh_lab
    before, started = fingerprint(lab, "client1"), chronyd_started(lab)
    res = deploy(lab, site(lab, {"nts1": {"ca_file": "/etc/chrony/missing-site-ca.pem"}}))
    assert res.returncode != 0, res.stdout[-4000:]
    flat = re.sub(r"\s+", " ", res.stdout)
    assert "/etc/chrony/missing-site-ca.pem does not exist on this host (trusted by nts1.lab.test)" in flat, flat[
        -4000:
    ]
    assert "Nothing was changed" in flat
    assert fingerprint(lab, "client1") == before and chronyd_started(lab) == started


def test_ca_that_is_not_a_certificate_is_an_input_error(fresh_lab):
    lab = fresh_lab
    before, started = fingerprint(lab, "client1"), chronyd_started(lab)
    # frames like DER (a SEQUENCE holding a SEQUENCE) but is no certificate
    junk = "-----BEGIN CERTIFICATE-----\nMAYwBAICAQA=\n-----END CERTIFICATE-----\n"
    res = deploy(lab, site(lab, {"nts1": {"ca": junk}}))
    assert res.returncode != 0
    flat = re.sub(r"\s+", " ", res.stdout + res.stderr)
    assert "site_servers[0] (host 'nts1.lab.test'): ca: PEM block #1 (CERTIFICATE) is not an X.509 certificate" in flat
    assert recap(res.stdout).get("client1", {}).get("changed", 0) == 0
    assert fingerprint(lab, "client1") == before and chronyd_started(lab) == started


def key_exchange_ages(lab) -> dict[str, int]:
    """Seconds since each source's last NTS key exchange (authdata "Last")."""
    return {name: int(row[5]) for name, row in authdata(lab).items()}


def conf(lab) -> str:
    return lab.sh("client1", "cat /etc/chrony/chrony.conf").stdout


def test_ca_bundle_change_renews_its_source_without_a_restart_and_others_keep_their_cookies(fresh_lab):
    """The default (chrony_nts_ca_change_without_restart): a change of one certificate set's bundle alone (nts1 has a
    set of its own; its bundle gets another CA) leaves chrony.conf as it is, so chronyd (4.3+) is not restarted: nts1
    is deleted and added again without its saved cookies, the proof requires its new key exchange, and the other
    sources keep their state."""
    lab = fresh_lab
    good = open(lab.vars["lab_ca_file"]).read()
    extra_ca = open(lab.vars["lab_rogue_ca_file"]).read()
    # nts1 gets a certificate set of its own (chrony.conf changes: a restart)
    res = deploy(lab, site(lab, {"nts1": {"ca": good + extra_ca}}))
    assert res.returncode == 0, res.stdout[-5000:]
    before_conf = conf(lab)
    time.sleep(2)  # so that "Last" of the untouched sources is clearly older than the next run
    started = chronyd_started(lab)
    t0 = time.monotonic()
    res = deploy(lab, site(lab, {"nts1": {"ca": extra_ca + good}}))  # same CAs, other bytes: a bundle-only change
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-5000:]
    assert conf(lab) == before_conf  # the precondition: only the bundle changed
    assert chronyd_started(lab) == started, "chronyd was restarted for a CA bundle change"
    assert "Renewed in the running chronyd (CA bundle changed): nts1.lab.test." in re.sub(r"\s+", " ", res.stdout)
    ages = key_exchange_ages(lab)
    # nts1 made a key exchange during this run; the others' exchanges are older than the run
    assert ages["nts1.lab.test"] <= took + 1, (ages, took)
    assert ages["nts2.lab.test"] > took + 1 and ages["ntpsec1.lab.test"] > took + 1, (ages, took)
    record = json.loads(lab.sh("client1", "cat /var/lib/chrony-nts/trust.json").stdout)
    assert set(record["sources"]) == {f"{s}.lab.test" for s in LAB_SERVERS}
    assert lab.sh("client1", "stat -c '%a %U' /var/lib/chrony-nts/trust.json").stdout.split() == ["600", "root"]
    wait_nts_healthy(runner(lab, "client1"), min_sources=3)
    # the next run changes nothing and exercises nothing
    res = deploy(lab, site(lab, {"nts1": {"ca": extra_ca + good}}))
    assert res.returncode == 0 and recap(res.stdout)["client1"]["changed"] == 0, res.stdout[-4000:]


def test_trust_change_with_a_restart_is_proven_by_a_new_key_exchange_and_other_sources_keep_their_cookies(fresh_lab):
    """chrony_nts_ca_change_without_restart: false (as for any trust change beyond a bundle's content): chronyd
    restarts; the changed source's saved cookies are removed while it is stopped, so its proof comes from a key
    exchange made after the start; the other sources start on their saved cookies."""
    lab = fresh_lab
    good = open(lab.vars["lab_ca_file"]).read()
    extra_ca = open(lab.vars["lab_rogue_ca_file"]).read()
    time.sleep(2)
    before_conf, started = conf(lab), chronyd_started(lab)
    res = deploy(lab, site(lab, {"nts1": {"ca": good + extra_ca}}), chrony_nts_ca_change_without_restart=False)
    assert res.returncode == 0, res.stdout[-5000:]
    assert conf(lab) == before_conf and chronyd_started(lab) != started
    ages = key_exchange_ages(lab)
    since_start = float(lab.sh("client1", "ps -o etimes= -C chronyd | head -1").stdout.strip() or 0)
    assert ages["nts1.lab.test"] <= since_start + 1, (ages, since_start)
    assert ages["nts2.lab.test"] > since_start + 1, (ages, since_start)
    assert ages["ntpsec1.lab.test"] > since_start + 1, (ages, since_start)
    wait_nts_healthy(runner(lab, "client1"), min_sources=3)
    assert deploy(lab, site(lab)).returncode == 0  # back to the lab's CA alone


def test_server_key_rotation_stays_green(fresh_lab):
    lab = fresh_lab
    key_ids = int(authdata(lab)["nts1.lab.test"][2])
    # New server keys: every cookie the clients hold is now rejected with an NTS NAK, then they key-exchange again.
    lab.sh("nts1", "rm -f /var/lib/chrony/ntskeys")
    lab.podman("restart", "-t", "2", lab.container("nts1"))
    res = deploy(lab, site(lab), chrony_nts_verify_timeout=30)
    assert res.returncode == 0, res.stdout[-5000:]
    assert recap(res.stdout)["client1"]["changed"] == 0
    assert int(authdata(lab)["nts1.lab.test"][2]) > key_ids  # the rotation really forced a new key exchange


def test_default_polling_stays_green_and_the_no_change_proof_is_fast(fresh_lab):
    lab = fresh_lab
    res = deploy(lab, site(lab, options=()), chrony_nts_verify_timeout=60)
    assert res.returncode == 0, res.stdout[-5000:]
    polls = {name: int(row[4]) for name, row in sources(lab).items()}
    assert all(p >= 6 for p in polls.values()), polls  # chrony's default minpoll 6: 64 s between requests
    time.sleep(3)  # past the start-up burst
    res = deploy(lab, site(lab, options=()))
    assert res.returncode == 0 and recap(res.stdout)["client1"]["changed"] == 0, res.stdout[-4000:]
    elapsed = float(re.search(r"NTS\s+verified\s+in\s+([0-9.]+)\s+s", res.stdout).group(1))
    assert elapsed < 1.0, elapsed
    # combined ('+') or selected ('*'): either is healthy
    assert {row[1] for row in sources(lab).values()} <= {"*", "+", "-"}
    assert deploy(lab, site(lab)).returncode == 0
