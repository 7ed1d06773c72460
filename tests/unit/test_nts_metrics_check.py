"""Unit tests of plugins/module_utils/nts_check.py (the host-side check that writes the metrics): certificate notAfter,
the atomic write, bounded chronyc calls, and run_check/main on captured chronyc output (tests/fixtures/chronyc) served
by fake runners or a fake chronyc program. The loopback test with real chronyd is
tests/integration/test_nts_check_loopback.py."""

from __future__ import annotations

import ast
import datetime
import os
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest
from ansible_collections.nts.chrony.plugins.module_utils import atomic_write, nts_check
from ansible_collections.nts.chrony.plugins.module_utils import nts_metrics as nm
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.lib.collection import cs as cs

REPO = Path(__file__).resolve().parents[2]
MODULE_UTILS = REPO / "plugins" / "module_utils"


FIX = REPO / "tests" / "fixtures" / "chronyc"
HEALTHY = (FIX / "healthy" / "status.csv").read_text()
SERVER = (FIX / "healthy" / "meta.json").read_text().split('"server": "')[1].split('"')[0]
COUNTERS = "Kernel,Kernel,4,4,4,4"
assert COUNTERS in HEALTHY


def with_counters(tx: int, rx: int, valid: int) -> str:
    return HEALTHY.replace(COUNTERS, "Kernel,Kernel,%d,%d,%d,%d" % (tx, rx, valid, valid))


# --- certificates ------------------------------------------------------------------------------------------------


def make_cert(not_after: datetime.datetime, cn: str = "nts.example.net", issuer_key=None, issuer_name=None):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
        .not_valid_after(not_after)
        .sign(issuer_key or key, hashes.SHA256())
    )
    return cert, key


def unix(dt: datetime.datetime) -> float:
    return dt.timestamp()


@pytest.mark.parametrize(
    "not_after",
    [
        datetime.datetime(2031, 5, 17, 12, 34, 56, tzinfo=datetime.timezone.utc),  # UTCTime
        datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc),  # UTCTime, last year
        datetime.datetime(2051, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),  # GeneralizedTime (RFC 5280)
    ],
)
def test_certificate_not_after_matches_cryptography(not_after):
    cert, _ = make_cert(not_after)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert nts_check.certificate_not_after(pem) == unix(not_after) == unix(cert.not_valid_after_utc)
    assert nts_check.certificate_not_after(der) == unix(not_after)


def test_certificate_not_after_of_a_chain_file_is_the_first_certificate():
    ca, ca_key = make_cert(datetime.datetime(2040, 1, 1, tzinfo=datetime.timezone.utc), cn="ca")
    leaf, _ = make_cert(
        datetime.datetime(2027, 3, 1, tzinfo=datetime.timezone.utc), issuer_key=ca_key, issuer_name=ca.subject
    )
    chain = b"# server\n" + leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    assert nts_check.certificate_not_after(chain) == unix(datetime.datetime(2027, 3, 1, tzinfo=datetime.timezone.utc))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a certificate",
        b"\x30\x82\xff\xff\x30",  # length runs past the data
        b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",  # empty SEQUENCE
        b"\x02\x01\x00",  # an INTEGER, not a SEQUENCE
    ],
)
def test_certificate_not_after_rejects_junk(data):
    with pytest.raises(ValueError):
        nts_check.certificate_not_after(data)


def test_read_certificates_takes_the_earliest_and_names_unreadable_files(tmp_path):
    early = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    late = datetime.datetime(2035, 1, 1, tzinfo=datetime.timezone.utc)
    paths = []
    for i, when in enumerate((late, early)):
        path = tmp_path / ("c%d.pem" % i)
        path.write_bytes(make_cert(when)[0].public_bytes(serialization.Encoding.PEM))
        paths.append(str(path))
    (tmp_path / "junk.pem").write_text("junk")
    value, problems = nts_check.read_certificates([*paths, str(tmp_path / "junk.pem"), str(tmp_path / "absent.pem")])
    assert value == unix(early)
    assert len(problems) == 2 and "junk.pem" in problems[0] and "absent.pem" in problems[1]
    assert nts_check.read_certificates([]) == (None, [])


# --- atomic write ---------------------------------------------------------------------------------------------------


def test_write_atomic_replaces_the_file_with_mode_0644_and_leaves_no_temp(tmp_path):
    target = tmp_path / "chrony_nts.prom"
    target.write_text("old\n")
    old_inode = target.stat().st_ino
    umask = os.umask(0o077)
    try:
        nts_check.write_metrics(str(target), "new\n")
    finally:
        os.umask(umask)
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert target.stat().st_ino != old_inode  # a rename, not a rewrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chrony_nts.prom"]


def test_write_atomic_failure_keeps_the_old_file_and_removes_the_temp(tmp_path, monkeypatch):
    target = tmp_path / "chrony_nts.prom"
    target.write_text("old\n")
    seen = []

    def failing_replace(src, dst):
        seen.append(Path(src).name)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_write.os, "replace", failing_replace)
    with pytest.raises(OSError):
        nts_check.write_metrics(str(target), "new\n")
    # the temporary file is hidden and does not end in .prom: node_exporter's textfile collector never reads it
    assert seen and seen[0].startswith(".chrony_nts.prom.") and seen[0].endswith(".tmp")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chrony_nts.prom"]


# --- chronyc calls ----------------------------------------------------------------------------------------------------


def test_subprocess_runner_returns_output_and_bounds_each_call():
    run = nts_check.subprocess_runner(time.monotonic() + 5)
    assert run(["sh", "-c", "echo out; echo err >&2; exit 3"]) == (3, "out\n", "err\n")
    rc, _, err = run(["/nonexistent/chronyc", "-c", "tracking"])
    assert rc == 127 and "/nonexistent/chronyc" in err
    run = nts_check.subprocess_runner(time.monotonic() + 0.2, floor=0.2)
    t0 = time.monotonic()
    rc, _, err = run(["sleep", "5"])
    assert rc == 124 and "timed out" in err and time.monotonic() - t0 < 2


def test_nts_source_names_are_the_nts_sources_once():
    mixed = (FIX / "mixed" / "status.csv").read_text()
    joined = cs.join_sources(cs.parse_status_output(mixed))
    assert [h.name for h in joined if h.auth.mode == "NTS"] == nts_check.nts_source_names(mixed)
    assert len(nts_check.nts_source_names(mixed)) == 1
    assert nts_check.nts_source_names("") == [] and nts_check.nts_source_names(None) == []
    assert nts_check.nts_source_names("garbage,1\n") == []


class FakeRun:
    """A chronyd whose valid-reply counters move by ``step`` per status poll after the first (``tx_step`` for sent
    requests), with a fake clock."""

    def __init__(self, step: int = 1, tx_step: int = 1, status_rc: int = 0, status: str | None = None) -> None:
        self.step, self.tx_step, self.status_rc, self.status = step, tx_step, status_rc, status
        self.polls = 0
        self.calls: list[list[str]] = []
        self.now = 100.0

    def __call__(self, argv):
        self.calls.append(list(argv))
        self.now += 0.01
        if "burst" in argv:
            return (0, "200 OK\n", "") if self.status is None else (self.status_rc, self.status, "")
        if "serverstats" in argv:
            return 0, (FIX / "server" / "serverstats.csv").read_text(), ""
        if self.status is not None:
            return self.status_rc, self.status, ""
        n = self.polls
        self.polls += 1
        return 0, with_counters(4 + n * self.tx_step, 4 + n * self.step, 4 + n * self.step), ""

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_800_000_000.0 + self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def check(fake: FakeRun, output: Path | None, **kw) -> dict:
    kw.setdefault("timeout", 5.0)
    return nts_check.run_check(
        socket="/run/test/chronyd.sock",
        output=str(output) if output else None,
        run=fake,
        clock=fake.clock,
        wall=fake.wall,
        sleep=fake.sleep,
        **kw,
    )


def test_run_check_healthy_uses_the_early_baseline_and_writes_the_metrics(tmp_path):
    fake = FakeRun()
    out = tmp_path / "chrony_nts.prom"
    result = check(fake, out)
    assert result["verified"] is True and result["required"] == [SERVER]
    # start_fresh_check: one status read and a burst; then wait_for_nts sees the counters moved at its first poll
    assert [c[-1] if "burst" not in c else "burst" for c in fake.calls] == ["ntpdata", "burst", "ntpdata"]
    assert all(c[1:3] == ["-h", "/run/test/chronyd.sock"] for c in fake.calls)
    assert result["chronyd_running"] is True and result["polls"] == 1
    m = nm.parse(out.read_text())
    assert out.read_text() == result["metrics"]
    assert m[("chrony_nts_verified", ())] == 1
    assert m[("chrony_nts_source_authenticated_now", (("source", SERVER),))] == 1
    assert m[("chrony_nts_last_check_timestamp_seconds", ())] == pytest.approx(
        result["check_started"] + result["check_duration"], abs=0.001
    )
    assert result["written_at"] >= m[("chrony_nts_last_check_timestamp_seconds", ())]


def test_run_check_dead_source_still_selected_is_red_within_the_timeout():
    """Requests go out, no valid reply comes back: chronyd's history (selected, reach, cookies) says healthy."""
    fake = FakeRun(step=0, tx_step=1)
    result = check(fake, None, timeout=3.0)
    assert result["verified"] is False
    assert 3.0 <= result["check_duration"] < 3.5
    (src,) = result["sources"]
    assert src["cause"].startswith("unreachable: no reply on UDP port")
    m = nm.parse(result["metrics"])
    s = (("source", SERVER),)
    assert m[("chrony_nts_source_authenticated_now", s)] == 0
    assert m[("chrony_nts_source_selected", s)] == 1 and m[("chrony_nts_source_reach", s)] > 0
    assert m[("chrony_nts_source_cookies", s)] == 8
    assert m[("chrony_nts_verified", ())] == 0 and m[("chrony_nts_healthy_sources", ())] == 0
    assert result["bursts"] >= 1


def test_run_check_required_names_are_the_given_ones():
    result = check(FakeRun(), None, sources=[SERVER, "nts.missing.example"], timeout=1.0)
    assert result["required"] == [SERVER, "nts.missing.example"] and result["verified"] is False
    m = nm.parse(result["metrics"])
    assert m[("chrony_nts_source_authenticated_now", (("source", "nts.missing.example"),))] == 0
    assert m[("chrony_nts_source_authenticated_now", (("source", SERVER),))] == 1
    assert m[("chrony_nts_sources", ())] == 2


def test_run_check_chronyd_not_running(tmp_path):
    fake = FakeRun(status_rc=1, status=(FIX / "errors" / "506.stdout").read_text())
    out = tmp_path / "chrony_nts.prom"
    result = check(fake, out, timeout=2.0)
    assert result["verified"] is False and result["chronyd_running"] is False and result["required"] == []
    assert "chronyd is not running" in result["msg"]
    m = nm.parse(out.read_text())
    assert m[("chrony_nts_chronyd_running", ())] == 0 and m[("chrony_nts_verified", ())] == 0
    assert not any(k[1] for k in m)  # no per-source series
    assert 2.0 <= m[("chrony_nts_check_duration_seconds", ())] < 2.5


def test_run_check_not_authorised_means_running_but_unjudged():
    fake = FakeRun(status_rc=1, status=(FIX / "errors" / "501.stdout").read_text())
    result = check(fake, None)
    assert result["chronyd_running"] is True and result["verified"] is False and result["fatal"] is True
    assert "501 Not authorised" in result["msg"]
    assert result["check_duration"] < 0.5  # 501 is final: no waiting for the timeout


def test_run_check_tier_values_and_problems(tmp_path):
    cert, _ = make_cert(datetime.datetime(2031, 1, 1, tzinfo=datetime.timezone.utc))
    (tmp_path / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keys = tmp_path / "ntskeys"
    keys.write_text("keys")
    os.utime(keys, (1_800_000_000.0, 1_800_000_000.0))
    fake = FakeRun()
    result = check(
        fake, None, serverstats=True, server_certs=[str(tmp_path / "server.crt")], ntskeys=str(keys), timeout=1.0
    )
    m = nm.parse(result["metrics"])
    assert m[("chrony_nts_server_ke_accepted_total", ())] == 2
    assert m[("chrony_nts_server_authenticated_packets_total", ())] == 4
    assert m[("chrony_nts_server_certificate_not_after_timestamp_seconds", ())] == unix(
        datetime.datetime(2031, 1, 1, tzinfo=datetime.timezone.utc)
    )
    assert m[("chrony_nts_server_ntskeys_age_seconds", ())] == pytest.approx(fake.now, abs=0.01)
    assert result["problems"] == []
    result = check(
        FakeRun(), None, server_certs=[str(tmp_path / "nope.crt")], ntskeys=str(tmp_path / "nokeys"), timeout=1.0
    )
    assert len(result["problems"]) == 2
    assert not any(name.startswith("chrony_nts_server_") for name, _ in nm.parse(result["metrics"]))
    line = nts_check.summary(result)
    assert "nope.crt" in line and "nokeys" in line


def test_summary_lines():
    ok = {"verified": True, "healthy_sources": ["a", "b"], "required": ["a", "b"], "check_duration": 0.4123}
    assert nts_check.summary(ok) == "chrony-nts check OK: 2/2 NTS sources authenticated now (0.41 s)"
    bad = {"verified": False, "healthy_sources": [], "required": ["a"], "check_duration": 20, "msg": "a: unreachable"}
    line = "chrony-nts check CRITICAL: 0/1 NTS sources authenticated now (20.00 s): a: unreachable"
    assert nts_check.summary(bad) == line


# --- main ------------------------------------------------------------------------------------------------------------

FAKE_CHRONYC = """\
#!{python}
# A fake chronyc: the captured healthy status, its reply counters moving by one per status call.
import pathlib, sys
here = pathlib.Path(__file__)
if "burst" in sys.argv:
    print("200 OK")
    sys.exit(0)
if {down}:
    print("506 Cannot talk to daemon")
    sys.exit(1)
state = here.with_suffix(".n")
n = int(state.read_text()) if state.exists() else 4
state.write_text(str(n + 1))
sys.stdout.write(pathlib.Path({status!r}).read_text().replace({old!r}, "Kernel,Kernel,%d,%d,%d,%d" % (n, n, n, n)))
"""


def fake_chronyc(tmp_path: Path, down: bool = False) -> Path:
    path = tmp_path / "chronyc"
    path.write_text(
        FAKE_CHRONYC.format(python=sys.executable, down=down, status=str(FIX / "healthy" / "status.csv"), old=COUNTERS)
    )
    path.chmod(0o755)
    return path


def test_main_healthy_exit_0_and_metrics(tmp_path, capsys):
    out = tmp_path / "chrony_nts.prom"
    rc = nts_check.main(["--chronyc", str(fake_chronyc(tmp_path)), "--output", str(out), "--timeout", "5"])
    assert rc == 0
    assert capsys.readouterr().out.startswith("chrony-nts check OK: 1/1 NTS sources authenticated now (")
    assert nm.parse(out.read_text())[("chrony_nts_verified", ())] == 1


def test_main_chronyd_down_exit_2_metrics_still_written(tmp_path, capsys):
    out = tmp_path / "chrony_nts.prom"
    rc = nts_check.main(["--chronyc", str(fake_chronyc(tmp_path, down=True)), "--output", str(out), "--timeout", "0.5"])
    assert rc == 2
    assert "CRITICAL" in capsys.readouterr().out
    m = nm.parse(out.read_text())
    assert m[("chrony_nts_chronyd_running", ())] == 0 and m[("chrony_nts_verified", ())] == 0


def test_main_usage_errors_are_unknown_3(tmp_path, capsys):
    assert nts_check.main(["--output", str(tmp_path / "absent" / "x.prom")]) == 3
    assert nts_check.main(["--output", str(tmp_path / "x.prom"), "--timeout", "0"]) == 3
    with pytest.raises(SystemExit) as exc:
        nts_check.main(["--timeout", "soon"])
    assert exc.value.code == 3
    assert not (tmp_path / "x.prom").exists()


def test_main_write_failure_is_unknown_3(tmp_path, monkeypatch, capsys):
    def fail(path, text, mode=0o644):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(nts_check, "write_metrics", fail)
    rc = nts_check.main(["--chronyc", str(fake_chronyc(tmp_path)), "--output", str(tmp_path / "x.prom")])
    assert rc == 3 and "cannot write" in capsys.readouterr().err


def test_defaults_are_the_documented_ones():
    args = nts_check.build_parser().parse_args([])
    assert args.output == "/var/lib/prometheus/node-exporter/chrony_nts.prom"
    assert (args.timeout, args.min_sources, args.require_synchronised, args.require_selected) == (20.0, 1, True, False)
    assert args.socket is None and args.source == [] and not args.serverstats


# --- standard library only, project imports in the marked block -----------------------------------------------------


@pytest.mark.parametrize("name", ["nts_check.py", "nts_metrics.py"])
def test_standard_library_only(name):
    """Only the standard library and the collection's own host modules (it runs from its package path on hosts)."""
    tree = ast.parse((MODULE_UTILS / name).read_text())
    own = "ansible_collections.nts.chrony.plugins.module_utils"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            continue
        for module in modules:
            if module.startswith(own + "."):
                assert module.rsplit(".", 1)[1] + ".py" in nts_check.HOST_FILES, (name, module)
            else:
                assert module.split(".")[0] in sys.stdlib_module_names or module == "__future__", (name, module)


def test_runs_as_a_script_with_the_system_python(tmp_path):
    """What the systemd service runs: the host files at their package path, ``python3 -E -s -m`` from there."""
    import shutil
    import subprocess

    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    package = tmp_path / nts_check.PACKAGE_DIR
    package.mkdir(parents=True)
    for name in nts_check.HOST_FILES:
        shutil.copy(MODULE_UTILS / name, package / name)
    out = tmp_path / "chrony_nts.prom"
    proc = subprocess.run(
        [python, "-E", "-s", "-m", nts_check.MODULE, "--chronyc", str(fake_chronyc(tmp_path)), "--output", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert nm.parse(out.read_text())[("chrony_nts_verified", ())] == 1
    assert textwrap.dedent(proc.stdout).startswith("chrony-nts check OK")
