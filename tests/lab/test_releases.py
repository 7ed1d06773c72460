"""Current platforms and current chrony, in one lab of its own: client hosts of Debian 12 (chrony 4.3), 13 (4.6.1) and
testing (4.9 when written) against chrony and NTPsec NTS servers of the same three releases
(`labctl.py up --clients 3 --release 12,13,testing --server-release 12,13,testing`).

- site.yml's client flow on each release: chrony installed from the release's own cached packages, configured with
  six NTS sources (one chrony and one NTPsec server per release), proven, a second run with 0 changed, check mode,
  and an untrusted server that fails the run and leaves the old files byte for byte;
- the AEAD negotiated by every client x server pair (`chronyc -c authdata` field 4: 15 = AES-SIV-CMAC-256,
  30 = AES-128-GCM-SIV), printed as a table; each client release is also measured with a chronyd of that release
  run by hand (-x) in a throwaway container, so a release the role cannot deploy still gets its row;
- whether chronyd re-reads its ntstrustedcerts bundle without a restart: the bundle is rewritten in place, a new
  NTS-KE is forced (the server restarts with new keys, so the client's cookies get a NAK; or the source is deleted and
  added again with chronyc) and the outcome is printed per chrony release.

CHRONY_NTS_RELEASES_LAB names the lab (default: unique per run); KEEP_LAB=1 leaves it up.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.lab.conftest import LABCTL, REPO, Lab, load_inventory, recap, run
from tests.lib.nts_checks import authenticated

pytestmark = pytest.mark.lab

RELEASES = ["12", "13", "testing"]
SUITES = {"12": "bookworm", "13": "trixie", "testing": "forky"}
# Servers of every release: the lab's standard set runs the first release, nts-R / ntpsec-R the others.
CHRONY_SERVER = {"12": "nts1", "13": "nts-13", "testing": "nts-testing"}
NTPSEC_SERVER = {"12": "ntpsec1", "13": "ntpsec-13", "testing": "ntpsec-testing"}
MATRIX = [CHRONY_SERVER[r] for r in RELEASES] + [NTPSEC_SERVER[r] for r in RELEASES]
AEAD_NAMES = {"15": "AES-SIV-CMAC-256", "30": "AES-128-GCM-SIV"}
MANAGED = [
    "/etc/chrony/chrony.conf",
    "/etc/default/chrony",
    "/etc/systemd/system/chrony.service.d/50-chrony-nts.conf",
    "/etc/chrony/nts-certs",
]

# The whole client flow runs on every release, testing included (no VERSION_ID: "forky/sid", accepted as newest).
FLOW_RELEASES = ["12", "13", "testing"]


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.match(r"\d+(?:\.\d+)*", text).group(0).split("."))


# --------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def rlab():
    name = os.environ.get("CHRONY_NTS_RELEASES_LAB", f"cnts-rel-{os.getpid() % 100000}")
    cmd = [*LABCTL, "up", "--name", name, "--clients", "3"]
    cmd += ["--release", ",".join(RELEASES), "--server-release", ",".join(RELEASES)]
    start = time.monotonic()
    res = run(cmd, timeout=1800)
    if res.returncode != 0:
        run([*LABCTL, "down", "--name", name])
        pytest.fail(f"lab {name} did not come up:\n{res.stdout}\n{res.stderr}")
    print(f"lab {name} up in {time.monotonic() - start:.1f} s")
    inventory = REPO / ".lab" / name / "inventory" / "hosts.yml"
    yield Lab(name, inventory, load_inventory(inventory))
    if os.environ.get("KEEP_LAB") != "1":
        run([*LABCTL, "down", "--name", name], check=True)


def client_of(lab: Lab, release: str) -> str:
    hosts = lab.data["all"]["children"]["chrony_nts_clients"]["hosts"]
    return next(short for short, host in hosts.items() if host["lab_release"] == release)


def site_servers(lab: Lab, shorts: list[str]) -> list[dict]:
    ca = Path(lab.vars["lab_ca_file"]).read_text()
    return [{"host": f"{s}.lab.test", "ca": ca, "operator": f"lab {s}", "options": ["minpoll 0", "maxpoll 4"]}
            for s in shorts]  # fmt: skip


def matrix_vars(lab: Lab) -> str:
    n = len(MATRIX)
    policy = {"count": n, "min_sources": n}
    return json.dumps(
        {"chrony_nts_site_servers": site_servers(lab, MATRIX), "chrony_nts_policy": policy,
         "chrony_nts_verify_min_sources": n}
    )  # fmt: skip


def fingerprint(lab: Lab, client: str) -> str:
    script = f"find {' '.join(MANAGED)} -type f 2>/dev/null | sort | xargs -r sha256sum; "
    script += f"stat -c '%n %a %U %G' {' '.join(MANAGED)} 2>&1"
    return lab.sh(client, script, check=False).stdout


@pytest.fixture(scope="module")
def deployed(rlab):
    """site.yml on the three clients at once, six NTS sources each (a chrony and an NTPsec server per release)."""
    start = time.monotonic()
    res = rlab.playbook("site.yml", "-e", matrix_vars(rlab))
    print(f"first site.yml run: {time.monotonic() - start:.1f} s")
    return res


def require_converged(lab: Lab, deployed, release: str) -> str:
    client = client_of(lab, release)
    stats = recap(deployed.stdout).get(client, {})
    failed = [m for m in re.findall(rf"fatal: \[{client}\]: FAILED! => .*?msg: (.*?)\n\S", deployed.stdout, re.S)]
    assert stats.get("failed") == 0 and stats.get("changed", 0) > 0, (stats, failed, deployed.stdout[-3000:])
    return client


def chronyc_rows(lab: Lab, container_short: str, report: str, socket: str | None = None) -> list[list[str]]:
    host = f"-h {socket} " if socket else ""
    out = lab.sh(container_short, f"chronyc {host}-c -N {report}").stdout
    return [line.split(",") for line in out.splitlines() if line.strip()]


def healthy(lab: Lab, client: str) -> dict[str, str]:
    """{source: AEAD} of the sources that are NTS-healthy now: a key exchange done (AEAD 15 or 30), no NAK, cookies,
    reachable, and an authenticated reply (chronyc ntpdata)."""
    auth = {row[0]: row for row in chronyc_rows(lab, client, "authdata")}
    sources = {row[2]: row for row in chronyc_rows(lab, client, "sources")}
    fresh = authenticated(lambda cmd: lab.sh(client, cmd).stdout)
    out = {}
    for name, row in auth.items():
        ok = row[1] == "NTS" and int(row[2]) > 0 and row[3] in AEAD_NAMES and row[7] == "0" and int(row[8]) > 0
        src = sources.get(name)
        if ok and src and int(src[5], 8) and fresh.get(name):
            out[name] = row[3]
    return out


def wait_healthy(lab: Lab, client: str, count: int, timeout: float = 40) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        state = healthy(lab, client)
        if len(state) >= count or time.monotonic() > deadline:
            return state
        time.sleep(1)


# ------------------------------------------------------------------- chronyd run by hand (-x) in a throwaway container
class Probe:
    """A container of release R's server image (chrony installed, no systemd) on the lab network, labelled as part of
    the lab (labctl down removes it), where chronyd instances run by hand, always with -x."""

    def __init__(self, lab: Lab, release: str):
        self.lab, self.release = lab, release
        self.short = f"probe-{release}"
        self.dir = Path(lab.vars["lab_dir"]) / self.short
        self.dir.mkdir(mode=0o755, exist_ok=True)
        os.chmod(self.dir, 0o755)  # noqa: S103 (_chrony reads the bundles here after chronyd drops root)
        fmt = "{{.ImageName}}"
        self.image = lab.podman("container", "inspect", "--format", fmt, lab.container(CHRONY_SERVER[release])).stdout
        lab.podman("rm", "-f", "-t", "0", lab.container(self.short), check=False)
        lab.podman(
            "run", "-d", "--name", lab.container(self.short),
            "--label", f"io.chrony-nts.lab={lab.name}", "--label", "io.chrony-nts.lab.role=probe",
            "--label", f"io.chrony-nts.lab.checkout={REPO}", "--label", f"io.chrony-nts.lab.release={release}",
            "--network", f"{lab.name}-net", "--cap-drop", "SYS_TIME",
            "-v", f"{self.dir}:/etc/probe", self.image.strip(), "sleep", "infinity",
        )  # fmt: skip
        self.version = lab.sh(self.short, "chronyd --version").stdout.split()[3]

    def write(self, name: str, text: str, in_place: bool = True) -> None:
        path = self.dir / name
        if in_place and path.exists():
            with open(path, "r+") as f:  # same inode: the file is changed, not replaced
                f.seek(0)
                f.truncate()
                f.write(text)
        else:
            path.write_text(text)
        os.chmod(path, 0o644)

    def start(self, tag: str, lines: list[str]) -> None:
        conf = [
            *lines,
            f"bindcmdaddress /run/chrony/{tag}.sock",
            "cmdport 0",
            "port 0",
            f"pidfile /run/chrony/{tag}.pid",
        ]
        self.write(f"{tag}.conf", "\n".join(conf) + "\n", in_place=False)
        self.lab.sh(self.short, "install -d -o _chrony -g _chrony -m 0750 /run/chrony && "
                                f"chronyd -x -f /etc/probe/{tag}.conf -l /etc/probe/{tag}.log")  # fmt: skip

    def pid(self, tag: str) -> str:
        return self.lab.sh(self.short, f"cat /run/chrony/{tag}.pid").stdout.strip()

    def authdata(self, tag: str) -> dict[str, list[str]]:
        return {row[0]: row for row in chronyc_rows(self.lab, self.short, "authdata", f"/run/chrony/{tag}.sock")}

    def chronyc(self, tag: str, command: str) -> str:
        return self.lab.sh(self.short, f"chronyc -h /run/chrony/{tag}.sock {command}").stdout

    def log(self, tag: str) -> str:
        return (self.dir / f"{tag}.log").read_text() if (self.dir / f"{tag}.log").exists() else ""


@pytest.fixture(scope="module")
def probes(rlab) -> dict[str, Probe]:
    return {release: Probe(rlab, release) for release in RELEASES}


def wait_for(check, timeout: float, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(step)


# ------------------------------------------------------------------------------------------------------------ tests
def test_hosts_and_servers_run_their_own_release(rlab):
    """Each client runs its Debian release; each server the chrony or NTPsec of its release; no container's PID 1
    holds CAP_SYS_TIME (nor CAP_SYS_ADMIN, which a testing host's lab-init drops before systemd starts)."""
    for release in RELEASES:
        client = client_of(rlab, release)
        os_release = rlab.sh(client, "cat /etc/os-release").stdout
        assert f"VERSION_CODENAME={SUITES[release]}" in os_release, (client, os_release)
        assert rlab.sh(client, "systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded")
    versions = {}
    for release in RELEASES:
        versions[release] = rlab.sh(CHRONY_SERVER[release], "chronyd --version").stdout.split()[3]
        ntpsec = rlab.sh(NTPSEC_SERVER[release], "/opt/ntpsec/usr/sbin/ntpd --version").stdout.strip()
        assert ntpsec.startswith("ntpd ntpsec-1.2."), ntpsec
    assert versions["12"] == "4.3" and versions["13"] == "4.6.1", versions
    assert version_tuple(versions["testing"]) >= (4, 9), versions
    for short in [*rlab.clients, *rlab.vars["lab_servers"]]:
        status = rlab.sh(short, "grep CapBnd /proc/1/status").stdout
        bounding = int(status.split()[1], 16)
        assert not bounding & (1 << 25) and not bounding & (1 << 21), (short, status)  # CAP_SYS_TIME, CAP_SYS_ADMIN


@pytest.mark.parametrize("release", FLOW_RELEASES)
def test_first_run_installs_the_release_chrony_and_proves_nts(rlab, deployed, release):
    client = require_converged(rlab, deployed, release)
    installed = rlab.sh(client, "dpkg-query -W -f '${Version}' chrony").stdout
    chronyd = rlab.sh(client, "chronyd --version").stdout.split()[3]
    assert installed.startswith(chronyd), (installed, chronyd)
    state = wait_healthy(rlab, client, len(MATRIX))
    assert sorted(state) == sorted(f"{s}.lab.test" for s in MATRIX), state
    args = rlab.sh(client, "tr '\\0' ' ' < /proc/$(pidof -s chronyd)/cmdline").stdout.split()
    assert "-x" in args, args


def test_aead_matrix(rlab, deployed, probes, capsys):
    """Every client release x every server: the AEAD the pair negotiated. Rows come from the role-deployed client
    when site.yml converged it, and always from a chronyd of that release run by hand (they must agree)."""
    lines = [f"server {s}.lab.test iburst nts certset 1 minpoll 0 maxpoll 2" for s in MATRIX]
    ca = Path(rlab.vars["lab_ca_file"]).read_text()
    for probe in probes.values():
        probe.write("matrix-ca.pem", ca, in_place=False)
        probe.start("matrix", [*lines, "ntstrustedcerts 1 /etc/probe/matrix-ca.pem"])

    def all_keyed(probe):
        rows = probe.authdata("matrix")
        return len(rows) == len(MATRIX) and all(int(r[2]) > 0 and int(r[8]) > 0 for r in rows.values()) and rows

    server_versions = {s: rlab.sh(s, "chronyd --version").stdout.split()[3] for s in CHRONY_SERVER.values()}
    server_versions |= {
        s: rlab.sh(s, "/opt/ntpsec/usr/sbin/ntpd --version").stdout.split()[1] for s in NTPSEC_SERVER.values()
    }
    table, problems = {}, []
    for release, probe in probes.items():
        rows = wait_for(lambda probe=probe: all_keyed(probe), 30)
        assert rows, (release, probe.authdata("matrix"), probe.log("matrix")[-2000:])
        by_hand = {name.split(".")[0]: row[3] for name, row in rows.items()}
        client = client_of(rlab, release)
        stats = recap(deployed.stdout).get(client, {})
        role = None
        if stats.get("failed") == 0:
            role = {name.split(".")[0]: aead for name, aead in wait_healthy(rlab, client, len(MATRIX)).items()}
            if role != by_hand:
                problems.append(f"Debian {release}: role-deployed client {role} != chronyd by hand {by_hand}")
        table[release] = (probe.version, by_hand, role is not None)
        for server, aead in by_hand.items():
            theirs = server_versions[server]
            new_chrony = (4, 6, 1)
            # AES-128-GCM-SIV only between two chronys >= 4.6.1 (measured: Nettle 3.10 / GnuTLS 3.8 in 13 and
            # testing); chrony 4.3 (Nettle 3.8) and NTPsec 1.2 negotiate AES-SIV-CMAC-256.
            chrony_pair = not server.startswith("ntpsec")
            both_new = chrony_pair and min(version_tuple(probe.version), version_tuple(theirs)) >= new_chrony
            expected = "30" if both_new else "15"
            if aead != expected:
                problems.append(f"chrony {probe.version} -> {server} ({theirs}): AEAD {aead}, expected {expected}")
    header = "client \\ server".ljust(30) + "".join(f"{s} {server_versions[s]}".ljust(24) for s in MATRIX)
    out = ["", "Negotiated AEAD (15 = AES-SIV-CMAC-256, 30 = AES-128-GCM-SIV)", header]
    for release, (version, row, by_role) in table.items():
        label = f"Debian {release} chrony {version}" + ("" if by_role else " *")
        out.append(label.ljust(30) + "".join(row[s].ljust(24) for s in MATRIX))
    out.append("* measured with chronyd run by hand only (site.yml did not converge this client)")
    with capsys.disabled():
        print("\n".join(out))
    (Path(rlab.vars["lab_dir"]) / "aead-matrix.json").write_text(json.dumps(table, indent=1))
    assert not problems, problems


@pytest.fixture(scope="module")
def second_run(rlab, deployed):
    """site.yml again on the three clients, with the same variables."""
    start = time.monotonic()
    res = rlab.playbook("site.yml", "-e", matrix_vars(rlab))
    print(f"second site.yml run: {time.monotonic() - start:.1f} s")
    return res


@pytest.mark.parametrize("release", FLOW_RELEASES)
def test_second_run_changes_nothing_and_still_verifies(rlab, deployed, second_run, release):
    client = require_converged(rlab, deployed, release)
    stats = recap(second_run.stdout)[client]
    assert stats["changed"] == 0 and stats["failed"] == 0, stats
    assert re.search(rf"ok: \[{client}\] =>.*?NTS\s+verified\s+in", second_run.stdout, re.S), second_run.stdout[-3000:]


@pytest.mark.parametrize("release", FLOW_RELEASES)
def test_check_mode_reports_no_change(rlab, deployed, release):
    client = require_converged(rlab, deployed, release)
    res = rlab.playbook("site.yml", "--limit", client, "--check", "--diff", "-e", matrix_vars(rlab))
    assert res.returncode == 0, res.stdout[-3000:]
    assert recap(res.stdout)[client]["changed"] == 0, res.stdout[-3000:]


@pytest.fixture(scope="module")
def untrusted(rlab, deployed):
    """site.yml pointing every client at nts-badca only (a certificate from a CA nobody trusts): fingerprints of the
    managed files before and after."""
    before = {c: fingerprint(rlab, c) for c in rlab.clients}
    extra = {"chrony_nts_site_servers": site_servers(rlab, ["nts-badca"]),
             "chrony_nts_policy": {"count": 1, "min_sources": 1}, "chrony_nts_verify_min_sources": 1,
             "chrony_nts_verify_timeout": 15, "chrony_nts_probe_gate": False}  # fmt: skip
    res = rlab.playbook("site.yml", "-e", json.dumps(extra))
    after = {c: fingerprint(rlab, c) for c in rlab.clients}
    return res, before, after


@pytest.mark.parametrize("release", FLOW_RELEASES)
def test_untrusted_server_fails_and_the_old_files_are_back(rlab, deployed, untrusted, release):
    client = require_converged(rlab, deployed, release)
    res, before, after = untrusted
    assert res.returncode != 0
    assert recap(res.stdout)[client]["failed"] == 1, res.stdout[-3000:]
    assert re.search(rf"{client}.*key exchange never succeeded", res.stdout, re.S), res.stdout[-5000:]
    assert after[client] == before[client]
    assert rlab.sh(client, "systemctl is-active chrony", check=False).stdout.strip() == "active"
    assert len(wait_healthy(rlab, client, len(MATRIX))) == len(MATRIX)


def test_ntstrustedcerts_reread_without_restart(rlab, probes, capsys):
    """The CA bundles of a running chronyd are rewritten in place; chronyd is never restarted (same PID throughout).

    1. Trust removed: the bundles now hold only a CA nobody uses, and the servers restart with new keys, so the
       client's cookies get a NAK and it must make a new NTS-KE at once: it fails on the certificate (the bundle was
       read again; with the old one in memory it would succeed).
    2. Trust restored: the bundles hold the lab CA again. chronyd waits 2^10 s after a certificate failure before the
       next attempt of its own, so the source is deleted and added again with chronyc: the new key exchange succeeds.
    Sources in both kinds of set: nts2 in the default set 0 (shared credentials), nts3 in set 1 (as the role writes)."""
    ca = Path(rlab.vars["lab_ca_file"]).read_text()
    rogue = Path(rlab.vars["lab_rogue_ca_file"]).read_text()
    sources = {"nts2": "", "nts3": " certset 1"}
    lines = [f"server {s}.lab.test iburst nts{opt} minpoll 0 maxpoll 2" for s, opt in sources.items()]
    lines += ["nosystemcert", "ntstrustedcerts /etc/probe/set0.pem", "ntstrustedcerts 1 /etc/probe/set1.pem"]
    for probe in probes.values():
        for name in ("set0.pem", "set1.pem"):
            probe.write(name, ca, in_place=False)
        probe.start("trust", lines)

    def keyed(probe):
        rows = probe.authdata("trust")
        return len(rows) == 2 and all(int(r[2]) > 0 and int(r[8]) > 0 for r in rows.values()) and rows

    for release, probe in probes.items():
        assert wait_for(lambda probe=probe: keyed(probe), 30), (release, probe.authdata("trust"), probe.log("trust"))
    pids = {release: probe.pid("trust") for release, probe in probes.items()}
    inodes = {}
    for release, probe in probes.items():
        inodes[release] = [(probe.dir / n).stat().st_ino for n in ("set0.pem", "set1.pem")]
        for name in ("set0.pem", "set1.pem"):
            probe.write(name, rogue)  # in place
    # New server keys: the clients' cookies are refused (NAK) and a new key exchange starts at once.
    for server in sources:
        rlab.sh(server, "rm -f /var/lib/chrony/ntskeys")
        rlab.podman("restart", "-t", "1", rlab.container(server))
    for server in sources:
        assert wait_for(lambda s=server: rlab.sh(s, "ss -Hltn 'sport = :4460'", check=False).stdout.strip(), 20)

    def refused(probe):
        rows = probe.authdata("trust")
        done = all(int(r[8]) == 0 and int(r[6]) >= 1 for r in rows.values())
        failed = [ln for ln in probe.log("trust").splitlines() if "The certificate issuer is unknown" in ln]
        return done and all(any(f"({s}.lab.test) failed" in ln for ln in failed) for s in sources) and rows

    facts = {}
    for release, probe in probes.items():
        rows = wait_for(lambda probe=probe: refused(probe), 40)
        removed = bool(rows)
        # Trust restored, then a new source instance (same chronyd) makes the key exchange.
        for name in ("set0.pem", "set1.pem"):
            probe.write(name, ca)
        for server, opt in sources.items():
            probe.chronyc("trust", f"delete {server}.lab.test")
            probe.chronyc("trust", f"add server {server}.lab.test iburst nts{opt} minpoll 0 maxpoll 2")
        restored = bool(wait_for(lambda probe=probe: keyed(probe), 30))
        same = probe.pid("trust") == pids[release]
        same_files = [(probe.dir / n).stat().st_ino for n in ("set0.pem", "set1.pem")] == inodes[release]
        facts[release] = (probe.version, removed, restored, same and same_files, probe.authdata("trust"))
    out = ["", "ntstrustedcerts rewritten in place, chronyd not restarted:"]
    out.append("chrony".ljust(10) + "trust removed: next NTS-KE fails".ljust(36) + "trust restored: next NTS-KE works")
    for version, removed, restored, _same, _rows in facts.values():
        out.append(version.ljust(10) + ("yes" if removed else "NO").ljust(36) + ("yes" if restored else "NO"))
    with capsys.disabled():
        print("\n".join(out))
    for release, (version, removed, restored, same, rows) in facts.items():
        assert same, f"chrony {version}: chronyd restarted or a bundle was replaced instead of changed in place"
        assert removed and restored, (release, version, rows, probes[release].log("trust")[-3000:])
