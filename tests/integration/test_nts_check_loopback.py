"""The host-side NTS check (plugins/module_utils/nts_check.py) against real loopback chronyd -x NTS servers and clients
(tests/lib): installed as the three files a host gets, run by the system python3 as the systemd service would, as
root and as the chrony user, on the client's or the server's own command socket.

A healthy source is exported with chronyd's values and the file is replaced atomically; a stopped server turns the
verdict to 0 within the check's timeout although chronyd still shows it selected; a server exports its serverstats,
certificate notAfter and ntskeys age; the written files pass `promtool check metrics`."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ansible_collections.nts.chrony.plugins.module_utils import nts_check
from ansible_collections.nts.chrony.plugins.module_utils import nts_metrics as nm

from tests.lib.chronyd import CHRONY_USER, NtsClient, NtsServer, ServerSpec, unique_loopback_address
from tests.lib.pki import make_shared_dir

pytestmark = pytest.mark.loopback

REPO = Path(__file__).resolve().parents[2]
MODULE_UTILS = REPO / "plugins" / "module_utils"
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


@pytest.fixture
def installed():
    """The check as a host gets it: the three files in a directory root owns and the chrony user can read."""
    path = make_shared_dir(prefix="nts-check-")
    os.chmod(path, 0o755)  # noqa: S103 - the chrony user reads the installed check, as on a host
    package = path / nts_check.PACKAGE_DIR
    package.mkdir(parents=True)
    for directory in [package, *package.relative_to(path).parents]:
        os.chmod(path / directory, 0o755)  # noqa: S103 - the chrony user reads the installed check
    for name in nts_check.HOST_FILES:
        shutil.copy(MODULE_UTILS / name, package / name)
        os.chmod(package / name, 0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def textfile_dir():
    """node_exporter's textfile directory stand-in, writable by root and the chrony user."""
    path = make_shared_dir(prefix="nts-textfile-")
    os.chown(path, pwd.getpwnam(CHRONY_USER).pw_uid, -1)
    os.chmod(path, 0o755)  # noqa: S103 - node_exporter reads it, as /var/lib/prometheus/node-exporter
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_check(installed: Path, *args: str, user: str | None = None, wall_limit: float = 60):
    cmd = [PYTHON, "-E", "-s", "-m", nts_check.MODULE, *map(str, args)]
    if user:
        cmd = ["setpriv", "--reuid", user, "--regid", user, "--clear-groups", "--", *cmd]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=installed, capture_output=True, text=True, timeout=wall_limit, check=False)
    return proc, t0, time.time()


def promtool_check_metrics(text: str) -> None:
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool") or "/usr/bin/promtool"
    if not os.access(promtool, os.X_OK):
        pytest.fail("promtool not found: Debian's 'prometheus' package provides it (make setup installs it)")
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


def start_pair(ca, chrony_procs, options: str = "iburst"):
    """A loopback NTS server and a client of it with chrony's default polling after iburst (a dead server stays
    selected for minutes), the client selected and past the 2 s burst spacing."""
    addr = unique_loopback_address()
    server = NtsServer.create(ca.issue(f"srv-{addr}", ips=[addr]), address=addr)
    chrony_procs.append(server)
    server.start()
    client = NtsClient.create([ServerSpec.for_server(server, options=options)], trusted_certs=[ca.cert_path])
    chrony_procs.append(client)
    client.start()
    client.wait_for(lambda c: c.csv("sources")[0][1] == "*", timeout=30, what="source selected")
    time.sleep(2.5)
    return server, client


def values(path: Path) -> dict:
    return nm.parse(path.read_text())


def src(name: str, **labels) -> tuple:
    return (("source", name), *labels.items())


def test_healthy_source_metrics_written_atomically(ca, chrony_procs, installed, textfile_dir):
    server, client = start_pair(ca, chrony_procs)
    out = textfile_dir / "chrony_nts.prom"
    out.write_text("# previous\n")
    old_inode = out.stat().st_ino
    seen: set[str] = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.add(out.read_text())
            except FileNotFoundError:
                seen.add("<missing>")
            time.sleep(0.001)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        proc, t0, t1 = run_check(installed, "--socket", client.socket_path, "--output", out, "--timeout", 20)
    finally:
        stop.set()
        thread.join()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("chrony-nts check OK: 1/1 NTS sources authenticated now (")
    text = out.read_text()
    # atomic: readers saw the old file or the whole new one, the file is a new inode, mode 0644, no temp left behind
    assert seen <= {"# previous\n", text}, [s[:80] for s in seen]
    assert out.stat().st_ino != old_inode and stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in textfile_dir.iterdir()) == ["chrony_nts.prom"]

    m = nm.parse(text)
    s = src(server.address)
    (auth,) = client.csv("authdata")
    (source,) = client.csv("sources")
    assert m[("chrony_nts_verified", ())] == 1
    assert (m[("chrony_nts_healthy_sources", ())], m[("chrony_nts_sources", ())]) == (1, 1)
    assert m[("chrony_nts_chronyd_running", ())] == 1
    assert m[("chrony_nts_source_authenticated_now", s)] == 1
    assert m[("chrony_nts_source_key_exchanges_total", s)] == int(auth[2]) >= 1
    assert m[("chrony_nts_source_key_exchange_attempts", s)] == 0
    assert 0 <= m[("chrony_nts_source_key_exchange_age_seconds", s)] < 60
    assert m[("chrony_nts_source_nak", s)] == 0
    assert 1 <= m[("chrony_nts_source_cookies", s)] <= 8
    assert m[("chrony_nts_source_aead_info", src(server.address, aead="15"))] == 1
    assert 0 < m[("chrony_nts_source_reach", s)] <= 255
    assert (m[("chrony_nts_source_selected", s)], m[("chrony_nts_source_combined", s)]) == (1, 1)
    assert source[1] == "*"
    assert abs(m[("chrony_nts_source_offset_seconds", s)]) < 0.1
    assert 0 <= m[("chrony_nts_source_authenticated_sample_age_seconds", s)] < 5  # the check's own burst
    stamp, duration = m[("chrony_nts_last_check_timestamp_seconds", ())], m[("chrony_nts_check_duration_seconds", ())]
    # verified at the first polls after the burst (well under a second on an idle machine; bench_nts_check.py)
    assert t0 <= stamp <= t1 and 0 < duration < 10 and stamp - duration >= t0 - 0.01
    assert not any(name.startswith("chrony_nts_server_") for name, _ in m)
    promtool_check_metrics(text)


def test_dead_server_turns_the_verdict_red_within_the_timeout(ca, chrony_procs, installed, textfile_dir):
    """Fresh: the server stopped, chronyd still lists it selected with reach and cookies; the check is red within
    its timeout and says why."""
    server, client = start_pair(ca, chrony_procs)
    out = textfile_dir / "chrony_nts.prom"
    first, _, _ = run_check(installed, "--socket", client.socket_path, "--output", out, "--timeout", 20)
    assert first.returncode == 0, first.stdout + first.stderr
    server.stop()
    proc, t0, t1 = run_check(installed, "--socket", client.socket_path, "--output", out, "--timeout", 4)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.startswith("chrony-nts check CRITICAL: 0/1 NTS sources authenticated now (")
    assert f"{server.address}: unreachable: no reply on UDP port {server.port} during this check" in proc.stdout
    assert t1 - t0 < 4 + 4
    m = values(out)
    s = src(server.address)
    assert m[("chrony_nts_verified", ())] == 0 and m[("chrony_nts_healthy_sources", ())] == 0
    assert m[("chrony_nts_source_authenticated_now", s)] == 0
    # chronyd's history still reads healthy: selected, reachable, cookies left, no NAK
    assert client.csv("sources")[0][1] == "*"
    assert m[("chrony_nts_source_selected", s)] == 1 and m[("chrony_nts_source_reach", s)] > 0
    assert m[("chrony_nts_source_cookies", s)] > 0 and m[("chrony_nts_source_nak", s)] == 0
    assert m[("chrony_nts_chronyd_running", ())] == 1
    assert 4 <= m[("chrony_nts_check_duration_seconds", ())] < 4 + 2.5  # the timeout, then the last chronyc calls
    assert t0 <= m[("chrony_nts_last_check_timestamp_seconds", ())] <= t1
    promtool_check_metrics(out.read_text())


def test_server_tier_metrics_as_the_chrony_user(ca, chrony_procs, installed, textfile_dir):
    server, _client = start_pair(ca, chrony_procs)
    out = textfile_dir / "chrony_nts.prom"
    keys = server.dump_dir / "ntskeys"
    assert keys.exists()
    before = [int(x) for x in server.csv("serverstats")[0]]
    proc, _, _ = run_check(
        installed,
        "--socket",
        server.socket_path,
        "--output",
        out,
        "--timeout",
        5,
        "--min-sources",
        0,
        "--no-require-synchronised",
        "--serverstats",
        "--server-cert",
        server.cert.cert_path,
        "--ntskeys",
        keys,
        user=CHRONY_USER,
    )
    after = [int(x) for x in server.csv("serverstats")[0]]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.stat().st_uid == pwd.getpwnam(CHRONY_USER).pw_uid
    m = values(out)
    for metric, index in (
        ("chrony_nts_server_ke_accepted_total", 5),
        ("chrony_nts_server_ke_dropped_total", 6),
        ("chrony_nts_server_authenticated_packets_total", 7),
    ):
        assert before[index] <= m[(metric, ())] <= after[index], metric
    assert m[("chrony_nts_server_ke_accepted_total", ())] >= 1
    assert m[("chrony_nts_server_authenticated_packets_total", ())] >= 1
    assert m[("chrony_nts_server_certificate_not_after_timestamp_seconds", ())] == (
        server.cert.cert.not_valid_after_utc.timestamp()
    )
    age = m[("chrony_nts_server_ntskeys_age_seconds", ())]
    assert age == pytest.approx(m[("chrony_nts_last_check_timestamp_seconds", ())] - keys.stat().st_mtime, abs=0.01)
    assert 0 <= age < 600
    assert m[("chrony_nts_sources", ())] == 0 and m[("chrony_nts_chronyd_running", ())] == 1
    promtool_check_metrics(out.read_text())


def test_client_check_as_the_chrony_user(ca, chrony_procs, installed, textfile_dir):
    """chronyd's command socket is open to the chrony user too: the same verdict without root."""
    server, client = start_pair(ca, chrony_procs)
    out = textfile_dir / "chrony_nts.prom"
    proc, _, _ = run_check(installed, "--socket", client.socket_path, "--output", out, user=CHRONY_USER)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert values(out)[("chrony_nts_source_authenticated_now", src(server.address))] == 1


def test_no_chronyd_on_the_socket(installed, textfile_dir):
    out = textfile_dir / "chrony_nts.prom"
    proc, t0, t1 = run_check(installed, "--socket", textfile_dir / "absent.sock", "--output", out, "--timeout", 1)
    assert proc.returncode == 2 and "chronyd is not running" in proc.stdout
    m = values(out)
    assert m[("chrony_nts_chronyd_running", ())] == 0 and m[("chrony_nts_verified", ())] == 0
    assert not any(labels for _, labels in m)
    assert t1 - t0 < 1 + 4
    promtool_check_metrics(out.read_text())
