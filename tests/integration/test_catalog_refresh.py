"""`bin/nts-catalog refresh` against real chronyd NTS servers (and two broken endpoints) on loopback.

Everything listens on random 127.x.y.z addresses (never 127.0.0.1), every chronyd runs with -x (tests/lib), and no
name is resolved through DNS: the catalog's .test names are always given with `--address NAME=IP` (checked before
each run by :func:`run_refresh`). The catalog comes from tests/fixtures/catalog/loopback-catalog.yml with the
servers' addresses and ports filled in.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import shutil
import socket
import string
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.lib.chronyd import NtsServer, free_port, unique_loopback_address
from tests.lib.pki import CertificateAuthority, make_shared_dir

pytestmark = pytest.mark.loopback

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "bin" / "nts-catalog"
TEMPLATE = REPO / "tests" / "fixtures" / "catalog" / "loopback-catalog.yml"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
REPORT_NAME = re.compile(r"^catalog-health-\d{8}T\d{6}Z(-\d+)?\.(json|md)$")


def utc(days):
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)


class Stalled:
    """A listening TCP socket that never accepts (the kernel completes the TCP handshake, nothing else happens)."""

    def __init__(self):
        self.address = unique_loopback_address()
        self.sock = socket.socket()
        self.sock.bind((self.address, 0))
        self.sock.listen(64)
        self.ntsport = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


class Fleet:
    """The loopback servers of the fixture catalog, a CA file trusting them, and the --address map."""

    def __init__(self):
        self.dir = make_shared_dir(prefix="nts-catalog-refresh-")
        self.ca = CertificateAuthority(self.dir, name="refresh")
        self.other_ca = CertificateAuthority(self.dir, name="untrusted")
        self.procs = []
        self.sockets = []
        self.values = {}
        self.addresses = {}

    def server(self, key, name=None, ca=None, **cert_args):
        addr = unique_loopback_address()
        cert = (ca or self.ca).issue(key, dns_names=[name] if name else [], ips=[addr], **cert_args)
        srv = NtsServer.create(cert, address=addr, name=key)
        self.procs.append(srv)
        srv.start()
        if name:
            self.addresses[name] = addr
        return srv

    def start(self):
        ok = self.server("ok", "ok.refresh.test")
        ip = self.server("ip")
        exp = self.server("expiring", "expiring.refresh.test", not_after=utc(5))
        old = self.server("expired", "expired.refresh.test", not_before=utc(-30), not_after=utc(-2))
        wrong = self.server("wrongca", "wrongca.refresh.test", ca=self.other_ca)
        closed_addr = unique_loopback_address()
        stalled = Stalled()
        self.sockets.append(stalled)
        self.addresses.update({"closed.refresh.test": closed_addr, "stalled.refresh.test": stalled.address})
        self.values = {
            "ok_ntsport": ok.ntsport,
            "ip_address": ip.address,
            "ip_ntsport": ip.ntsport,
            "expiring_ntsport": exp.ntsport,
            "expired_ntsport": old.ntsport,
            "wrongca_ntsport": wrong.ntsport,
            "closed_ntsport": free_port(closed_addr),
            "stalled_ntsport": stalled.ntsport,
        }
        self.ip = ip.address
        self.catalog = self.dir / "catalog.yml"
        self.catalog.write_text(string.Template(TEMPLATE.read_text()).substitute(self.values))
        return self

    def close(self):
        errors = []
        for proc in reversed(self.procs):
            try:
                proc.cleanup()
            except Exception as exc:  # stop the others, then report
                errors.append("%s: %s" % (proc.name, exc))
        for s in self.sockets:
            s.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise RuntimeError("; ".join(errors))


@pytest.fixture(scope="module")
def fleet():
    f = Fleet()
    try:
        yield f.start()
    finally:
        f.close()


def run_refresh(catalog, addresses, *args, timeout=120):
    """Run bin/nts-catalog refresh; first make sure every probe can only go to loopback (no DNS, no public host)."""
    servers = yaml.safe_load(Path(catalog).read_text())["servers"]
    for entry in servers:
        host = entry["host"]
        try:
            target = ipaddress.ip_address(host)
        except ValueError:
            assert host.endswith(".test") and host in addresses, "%s would be resolved through DNS" % host
            target = ipaddress.ip_address(addresses[host])
        assert target in LOOPBACK, "%s is not a loopback address" % target
    cmd = [str(CLI), "refresh", "--catalog", str(catalog)]
    for name, addr in addresses.items():
        cmd += ["--address", "%s=%s" % (name, addr)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, check=False)


def load_report(out_dir):
    files = sorted(p.name for p in Path(out_dir).iterdir())
    assert len(files) == 2 and all(REPORT_NAME.match(f) for f in files), files
    json_file = next(Path(out_dir).glob("*.json"))
    md_file = json_file.with_suffix(".md")
    assert md_file.exists()
    return json.loads(json_file.read_text()), md_file.read_text()


# ---------------------------------------------------------------------------------------------------------------


def test_refresh_reports_every_server(fleet, tmp_path):
    out = tmp_path / "reports"
    r = run_refresh(
        fleet.catalog,
        fleet.addresses,
        "--out", str(out), "--ca-file", str(fleet.ca.cert_path), "--timeout", "2", "--concurrency", "8",
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr  # CRITICAL: probes failed
    # the bound is printed before the first probe, and the date pass adds its own wave
    assert "Probing 7 server(s), 7 at a time, 2 s per server: 1 wave(s), at most 2 s (+1 s slack)" in r.stdout
    assert "Reading the dates of 1 certificate(s) that failed on them" in r.stdout
    report, markdown = load_report(out)
    assert "report: %s" % next(out.glob("*.json")) in r.stdout

    by_host = {s["host"]: s for s in report["servers"]}
    assert list(by_host) == [
        "ok.refresh.test", fleet.ip, "expiring.refresh.test", "expired.refresh.test", "wrongca.refresh.test",
        "closed.refresh.test", "stalled.refresh.test",
    ]  # fmt: skip
    for s in report["servers"]:
        assert ipaddress.ip_address(s["address"]) in LOOPBACK, s

    ok = by_host["ok.refresh.test"]
    assert (ok["status"], ok["ok"], ok["stage"]) == ("OK", True, None)
    assert (ok["aead"], ok["aead_name"], ok["cookies"], ok["cookie_length"]) == (15, "AEAD_AES_SIV_CMAC_256", 8, 100)
    assert (ok["stratum"], ok["catalog_stratum"], ok["stratum_differs"]) == (1, 1, False)
    assert 28 <= ok["cert_days_left"] <= 30 and ok["cert_not_after"].endswith("Z")
    assert ok["cert_issuer"] == "CN=refresh private test CA,O=chrony-nts lab"

    ip = by_host[fleet.ip]
    assert (ip["status"], ip["stratum"], ip["catalog_stratum"], ip["stratum_differs"]) == ("OK", 1, 2, True)

    soon = by_host["expiring.refresh.test"]
    assert soon["status"] == "WARNING" and soon["ok"] is True
    assert 3 <= soon["cert_days_left"] <= 5
    assert soon["reason"].startswith("certificate expires in %d day(s)" % soon["cert_days_left"])

    dead = by_host["expired.refresh.test"]
    assert (dead["status"], dead["ok"], dead["stage"]) == ("CRITICAL", False, "certificate")
    assert "certificate has expired" in dead["error"]
    assert -3 <= dead["cert_days_left"] <= -2  # read by the second pass
    assert dead["cert_not_after"][:10] == utc(-2).strftime("%Y-%m-%d")

    wrong = by_host["wrongca.refresh.test"]
    assert (wrong["status"], wrong["stage"]) == ("CRITICAL", "certificate")
    assert "issuer is unknown" in wrong["error"]
    assert wrong["cert_not_after"] is None  # not a date failure: no second probe

    closed = by_host["closed.refresh.test"]
    assert (closed["stage"], closed["aead"]) == ("tcp", None)
    assert "connection refused" in closed["error"]

    stalled = by_host["stalled.refresh.test"]
    assert stalled["stage"] == "tls"
    assert "timed out after 2.0s during the TLS handshake" in stalled["error"]

    s = report["summary"]
    assert (s["servers"], s["ok"], s["failed"]) == (7, 3, 4)
    assert (s["status_ok"], s["status_warning"], s["status_critical"]) == (2, 1, 4)
    assert s["failed_by_stage"] == {"certificate": 2, "tcp": 1, "tls": 1}
    assert s["expiring_within_warn_days"] == ["expiring.refresh.test"]
    assert s["expired"] == ["expired.refresh.test"]
    assert s["stratum_differs"] == [fleet.ip]
    assert s["providers_without_ok_server"] == ["loopback-down", "loopback-expired", "loopback-wrongca"]
    assert (report["status"], report["exit_code"], report["kind"]) == ("CRITICAL", 2, "nts-catalog-health")
    assert report["settings"]["addresses"]["ok.refresh.test"] == fleet.addresses["ok.refresh.test"]

    t = report["timing"]
    assert (t["servers"], t["workers"], t["waves"], t["timeout"]) == (7, 7, 1, 2.0)
    assert t["bound_seconds"] == 2.0 and t["date_recheck"]["servers"] == 1
    assert t["total_bound_seconds"] == 4.0  # one wave plus the date wave
    assert t["within_bound"] is True and t["elapsed_seconds"] <= t["total_bound_seconds"] + t["slack_seconds"]
    assert t["probe_seconds"] >= 1.9  # the stalled server really cost one timeout, and not more than the bound

    assert markdown.startswith("# NTS catalog health, %s" % report["generated"])
    assert "## Failures (4)" in markdown
    assert "| stalled.refresh.test:%d | loopback-down | tls |" % fleet.values["stalled_ntsport"] in markdown
    assert "## Certificates expired or expiring within 14 days (2)" in markdown
    assert "| expired.refresh.test | loopback-expired | %s |" % dead["cert_not_after"] in markdown
    assert "## Stratum differs from the catalog (1)" in markdown
    assert (
        "Time bound: 7 server(s), 7 at a time, 2 s per server: 1 wave(s), at most 2 s (+1 s slack); then 1 " in markdown
    )
    assert "Total bound 4 s; took " in markdown


def test_refresh_exit_codes(fleet, tmp_path):
    catalog = yaml.safe_load(fleet.catalog.read_text())
    ca = ["--ca-file", str(fleet.ca.cert_path), "--timeout", "2"]

    def subset(name, hosts):
        path = tmp_path / ("%s.yml" % name)
        data = dict(catalog, servers=[e for e in catalog["servers"] if e["host"] in hosts])
        path.write_text(yaml.safe_dump(data))
        return path

    def addresses(hosts):
        return {k: v for k, v in fleet.addresses.items() if k in hosts}

    good = ["ok.refresh.test", fleet.ip]
    r = run_refresh(subset("good", good), addresses(good), *ca, "--out", str(tmp_path / "good"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: 2 server(s): 2 OK, 0 WARNING, 0 CRITICAL (0 probe(s) failed)" in r.stdout
    assert "stratum differs from the catalog: %s" % fleet.ip in r.stdout

    warn = [*good, "expiring.refresh.test"]
    r = run_refresh(subset("warn", warn), addresses(warn), *ca, "--out", str(tmp_path / "warn"), "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    data = json.loads(r.stdout)  # progress went to stderr, stdout is the JSON alone
    assert data["status"] == "WARNING" and data["summary"]["expiring_within_warn_days"] == ["expiring.refresh.test"]
    assert "Probing 3 server(s)" in r.stderr
    assert [Path(p).parent for p in data["report_files"]] == [tmp_path / "warn"] * 2
    # --warn-days 0: an expiring certificate is fine
    r = run_refresh(subset("warn", warn), addresses(warn), *ca, "--out", str(tmp_path / "w0"), "--warn-days", "0")
    assert r.returncode == 0, r.stdout + r.stderr

    # usage and setup errors are UNKNOWN (3), with the reason; nothing is probed
    r = run_refresh(subset("good", good), {"nosuch.refresh.test": "127.0.0.9", **addresses(good)}, *ca)
    assert r.returncode == 3 and "the catalog has no server 'nosuch.refresh.test'" in r.stderr
    r = run_refresh(subset("good", good), addresses(good), "--concurrency", "0")
    assert r.returncode == 3 and "must be >= 1" in r.stderr
    r = run_refresh(subset("good", good), addresses(good), "--ca-file", str(tmp_path / "missing.pem"))
    assert r.returncode == 3 and "no such file" in r.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text("version: 1\nupdated: '2026-12-01'\nservers:\n  - host: x.refresh.test\n    stratum: 0\n")
    r = run_refresh(bad, {"x.refresh.test": "127.0.0.9"})
    assert r.returncode == 3
    assert "required key 'provider' is missing" in r.stderr and "stratum 0 is out of range 1-15" in r.stderr


@pytest.mark.parametrize("concurrency", [4, 20])
def test_refresh_time_bound_with_many_servers(tmp_path, concurrency):
    """16 chronyd NTS servers and 4 stalled sockets: the run stays within ceil(20/concurrency) x timeout."""
    base = make_shared_dir(prefix="nts-catalog-bound-")
    ca = CertificateAuthority(base, name="bound")
    procs, stalled = [], []
    try:
        servers = []
        for i in range(16):
            addr = unique_loopback_address()
            srv = NtsServer.create(ca.issue("s%d" % i, ips=[addr]), address=addr, name="s%d" % i)
            procs.append(srv)
            srv.start()
            servers.append({"host": addr, "ntsport": srv.ntsport})
        for _i in range(4):
            hole = Stalled()
            stalled.append(hole)
            servers.insert(0, {"host": hole.address, "ntsport": hole.ntsport})  # the slow ones first
        entries = [
            dict(s, provider="bound", operator="Bound", countries=[], region="global", stratum=1) for s in servers
        ]
        catalog = tmp_path / "bound.yml"
        catalog.write_text(yaml.safe_dump({"version": 1, "updated": "2026-12-01", "servers": entries}))
        timeout = 1.5
        start = time.monotonic()
        r = run_refresh(
            catalog, {}, "--out", str(tmp_path / "out"), "--ca-file", str(ca.cert_path),
            "--timeout", str(timeout), "--concurrency", str(concurrency),
        )  # fmt: skip
        wall = time.monotonic() - start
        assert r.returncode == 2, r.stdout + r.stderr
        report, _md = load_report(tmp_path / "out")
        t = report["timing"]
        waves = -(-20 // concurrency)
        assert (t["servers"], t["waves"], t["bound_seconds"]) == (20, waves, waves * timeout)
        assert report["summary"]["ok"] == 16 and report["summary"]["failed_by_stage"] == {"tls": 4}
        assert t["date_recheck"] is None and t["total_bound_seconds"] == t["bound_seconds"]
        assert t["elapsed_seconds"] <= t["bound_seconds"] + t["slack_seconds"], t
        assert t["elapsed_seconds"] >= timeout * 0.9  # the stalled servers did cost a timeout
        if concurrency >= 20:
            assert t["elapsed_seconds"] < 2 * timeout, t  # one wave: about one timeout, not four
        print(
            "refresh of 20 loopback servers (4 stalled), timeout %.1f s, concurrency %d: probes %.2f s, "
            "bound %.1f s, command %.2f s" % (timeout, concurrency, t["elapsed_seconds"], t["bound_seconds"], wall)
        )
    finally:
        errors = []
        for proc in procs:
            try:
                proc.cleanup()
            except Exception as exc:  # stop the others, then report
                errors.append(str(exc))
        for hole in stalled:
            hole.close()
        shutil.rmtree(base, ignore_errors=True)
        assert not errors, errors
