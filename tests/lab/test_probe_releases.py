"""The native probe's AEAD negotiation against real servers of three Debian releases, from the controller.

One small lab of its own, servers only (`labctl.py up --clients 0 --server-release 12,13,testing`): chrony 4.3 and
NTPsec 1.2.2 (Debian 12: nts1, ntpsec1), chrony 4.6.1 and NTPsec 1.2.3 (13: nts-13, ntpsec-13), chrony 4.9 and NTPsec
1.2.5 (testing: nts-testing, ntpsec-testing). Each server is probed from the controller at its lab address, the
certificate checked for its lab.test name against the lab's CA:

* offering [30, 15]: chrony >= 4.6.1 negotiates AES-128-GCM-SIV (30) and echoes record 1024 (keys from exporter
  context 30); chrony 4.3 and NTPsec negotiate AES-SIV-CMAC-256 (15); the authenticated NTP exchange succeeds;
* offering [15]: every server negotiates 15;
* chrony's quirk, for real, on 4.6.1 and 4.9: without record 1024 they derive AEAD 30 keys with context id 15 (what
  chrony 4.4 to 4.6 always do) and the probe uses the same; forcing context 15 although the server echoed 1024 gets
  an NTS NAK, and the probe's retry with context 30 succeeds.

The lab needs a labctl that knows --server-release: this checkout's, or the one CHRONY_NTS_LABCTL names (a path to a
labctl.py). CHRONY_NTS_PROBE_LAB names the lab (default unique per run; `up` is idempotent, so an existing lab of that
name is reused); KEEP_LAB=1 leaves it up.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.lab.conftest import REPO, VENV_BIN, load_inventory, run
from tests.lib.collection import nts_client

pytestmark = pytest.mark.lab

RELEASES = ["12", "13", "testing"]
# server -> (implementation, version of the release's package, AEAD negotiated when [30, 15] is offered)
SERVERS = {
    "nts1": ("chrony", "4.3", 15),
    "ntpsec1": ("NTPsec", "1.2.2", 15),
    "nts-13": ("chrony", "4.6.1", 30),
    "ntpsec-13": ("NTPsec", "1.2.3", 15),
    "nts-testing": ("chrony", "4.9", 30),
    "ntpsec-testing": ("NTPsec", "1.2.5", 15),
}
GCM_SIV_SERVERS = [s for s, (_impl, _v, aead) in SERVERS.items() if aead == 30]


def labctl() -> Path:
    given = os.environ.get("CHRONY_NTS_LABCTL")
    path = Path(given) if given else REPO / "lab" / "labctl.py"
    if not path.is_file() or "--server-release" not in path.read_text():
        # this checkout's labctl has --server-release: reaching here is a broken checkout or setting, not a skip
        pytest.fail(f"{path} cannot make Debian 13/testing servers (no --server-release)")
    return path.resolve()


class ReleaseLab:
    def __init__(self, name: str, ctl: Path):
        self.name, self.ctl = name, ctl
        self.dir = ctl.parent.parent / ".lab" / name
        self.data = load_inventory(self.dir / "inventory" / "hosts.yml")
        self.vars = self.data["all"]["vars"]
        self.ca_file = self.vars["lab_ca_file"]

    def server(self, short: str) -> dict:
        return self.vars["lab_servers"][short]

    def version(self, short: str) -> str:
        """The server's own idea of its version (chronyd --version, ntpd --version) inside its container."""
        binary = "chronyd" if short.startswith("nts") else "/opt/ntpsec/usr/sbin/ntpd"
        res = run(["podman", "exec", f"{self.name}-{short}", binary, "--version"])
        return (res.stdout or res.stderr).strip().splitlines()[0] if res.returncode == 0 else "?"

    def probe(self, short: str, **kwargs) -> dict:
        server = self.server(short)
        kwargs.setdefault("timeout", 5)
        return nts_client.probe(server["name"], address=server["address"], ca_file=self.ca_file, **kwargs)


@pytest.fixture(scope="module")
def rlab():
    ctl = labctl()
    cmd = [str(VENV_BIN / "python"), str(ctl)]
    name = os.environ.get("CHRONY_NTS_PROBE_LAB", f"cnts-aead-{os.getpid() % 100000}")
    start = time.monotonic()
    res = run([*cmd, "up", "--name", name, "--clients", "0", "--server-release", ",".join(RELEASES)], timeout=1800)
    if res.returncode != 0:
        run([*cmd, "down", "--name", name])
        pytest.fail(f"lab {name} did not come up:\n{res.stdout}\n{res.stderr}")
    print(f"lab {name} up in {time.monotonic() - start:.1f} s")
    yield ReleaseLab(name, ctl)
    if os.environ.get("KEEP_LAB") != "1":
        res = run([*cmd, "down", "--name", name])
        assert res.returncode == 0, res.stdout + res.stderr


def test_servers_run_the_expected_versions(rlab):
    for short, (impl, version, _aead) in SERVERS.items():
        seen = rlab.version(short)
        print(f"{short:15} {seen}")
        assert version in seen, (short, impl, seen)


@pytest.mark.parametrize("short", list(SERVERS))
def test_negotiated_aead_per_release(rlab, short):
    impl, version, expected = SERVERS[short]
    r = rlab.probe(short)
    assert r["ok"] is True, (short, r["stage"], r["error"])
    assert r["aeads_offered"] == [30, 15]
    assert (r["aead"], r["aead_name"]) == (expected, nts_client.aead_name(expected)), (impl, version)
    # chrony >= 4.6.1 echoes record 1024 and derives the keys as RFC 8915 says: no retry, nothing to note
    assert r["compliant_exporter"] is (expected == 30)
    assert (r["exporter_context"], r["exporter_retry"], r["aead_note"]) == (expected, False, None)
    assert r["cookies"] == 8 and r["ntp_cookies"] == 1
    print(f"{short:15} {impl} {version}: AEAD {r['aead']} cookies {r['cookies']}x{r['cookie_length']} B")

    only15 = rlab.probe(short, aeads=[15])
    assert only15["ok"] is True and only15["aead"] == 15 and only15["compliant_exporter"] is False, only15


@pytest.mark.parametrize("short", GCM_SIV_SERVERS)
def test_chrony_quirk_for_real(rlab, short):
    # No record 1024 in the request: chrony derives AEAD 30 keys with context id 15 and the probe must do the same.
    legacy = rlab.probe(short, compliant_exporter=False)
    assert legacy["ok"] is True, legacy
    assert (legacy["aead"], legacy["compliant_exporter"], legacy["exporter_context"]) == (30, False, 15)
    assert (legacy["exporter_retry"], "did not echo record 1024" in legacy["aead_note"]) == (False, True)
    # Keys from the wrong context: chrony answers with an NTS NAK, the retry with the other context works.
    forced = rlab.probe(short, exporter_context=15)
    assert forced["ok"] is True, forced
    assert (forced["compliant_exporter"], forced["exporter_context"], forced["exporter_retry"]) == (True, 30, True)
    assert forced["aead_note"].endswith("the server uses the RFC 8915 key derivation")
    # AES-128-GCM-SIV alone works too (64-byte cookies: the request stays under 200 bytes)
    gcm = rlab.probe(short, aeads=[30])
    assert gcm["ok"] is True and gcm["aead"] == 30 and gcm["cookie_length"] == 64, gcm


def test_only_gcm_siv_offered_to_servers_without_it(rlab):
    """chrony 4.3 answers with an empty AEAD record (RFC 8915: none acceptable); NTPsec answers with AEAD 15 although
    it was not offered, which the probe refuses (it would otherwise use keys for an algorithm it did not ask for)."""
    for short in [s for s in SERVERS if s not in GCM_SIV_SERVERS]:
        r = rlab.probe(short, aeads=[30])
        assert (r["ok"], r["stage"]) == (False, "nts-ke"), (short, r)
        if SERVERS[short][0] == "chrony":
            assert r["error"] == "server accepts none of the offered AEAD algorithms 30 (empty AEAD record)", r
        else:
            assert r["error"] == "server chose AEAD [15], which was not offered", (short, r["error"])
        print(f"{short:15} offered [30]: {r['error']}")


def test_cli_against_the_lab(rlab):
    """bin/nts-probe with --aead, as a monitoring check would run it, on the chrony 4.9 server."""
    server = rlab.server("nts-testing")
    cmd = [str(REPO / "bin" / "nts-probe"), "--ca-file", rlab.ca_file, "--address", server["address"], server["name"]]
    cmd.insert(1, "--warn-days=0")  # the lab's certificates are short-lived
    for aeads, expected in (("30,15", "30"), ("15", "15")):
        out = subprocess.run([*cmd, "--aead", aeads], capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.splitlines()[1].split()[2] == expected
