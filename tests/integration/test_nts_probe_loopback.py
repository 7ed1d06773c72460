"""The native NTS probe against real chronyd NTS servers (and a few deliberately broken endpoints) on loopback.

Everything listens on random 127.x.y.z addresses (never 127.0.0.1), every chronyd runs with -x (tests/lib), and no
name is ever resolved through DNS: names are used together with ``address`` so only IP literals hit the network.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from OpenSSL import SSL

from tests.lib.ansible_local import ANSIBLE, CWD, LOCAL, module_env
from tests.lib.chronyd import NtsServer, chrony_uid, free_port, unique_loopback_address
from tests.lib.collection import nts_client
from tests.lib.pki import CertificateAuthority, chrony_gid, make_shared_dir

pytestmark = pytest.mark.loopback

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
CLI = REPO / "bin" / "nts-probe"
NAME = "nts.probe.test"


def utc(days):
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)


# ---------------------------------------------------------------------------------------------------------------
# fixtures: one private CA and a few chronyd servers per module (started once, stopped at the end)


class Lab:
    def __init__(self):
        self.dir = make_shared_dir(prefix="nts-probe-test-")
        self.ca = CertificateAuthority(self.dir, name="probe")
        self.other_ca = CertificateAuthority(self.dir, name="other")
        self.procs = []

    def server(self, name, not_before=None, not_after=None, **kwargs):
        addr = unique_loopback_address()
        cert = self.ca.issue(name, dns_names=[NAME], ips=[addr], not_before=not_before, not_after=not_after)
        srv = NtsServer.create(cert, address=addr, name=name, **kwargs)
        self.procs.append(srv)
        return srv

    def close(self):
        errors = []
        for proc in reversed(self.procs):
            try:
                proc.cleanup()
            except Exception as exc:  # stop the others, then report
                errors.append("%s: %s" % (proc.name, exc))
        shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise RuntimeError("; ".join(errors))


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def good(lab):
    return lab.server("good").start()


@pytest.fixture(scope="module")
def expired(lab):
    return lab.server("expired", not_before=utc(-30), not_after=utc(-1)).start()


@pytest.fixture(scope="module")
def future(lab):
    return lab.server("future", not_before=utc(2), not_after=utc(40)).start()


def probe(server, lab, **kwargs):
    kwargs.setdefault("ca_file", str(lab.ca.cert_path))
    kwargs.setdefault("timeout", 3)
    return nts_client.probe(kwargs.pop("host", server.address), server.ntsport, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# success paths


def test_plain_success_with_port_negotiation(good, lab):
    r = probe(good, lab)
    assert r["ok"] is True, r
    assert (r["stage"], r["error"], r["nak"]) == (None, None, False)
    assert r["aead"] == 15
    assert (r["cookies"], r["cookie_length"]) == (8, 100)
    assert good.port != 123
    assert r["ntp_port"] == good.port  # record 7 from chrony because its NTP port is not 123
    assert r["ntp_server"] is None and r["ntp_address"] == good.address
    assert r["ntp_cookies"] == 1  # one fresh cookie per request without placeholders
    assert abs(r["offset"]) < 0.005  # same clock on both ends
    assert 0 <= r["delay"] < 0.05
    assert (r["stratum"], r["leap"], r["synchronised"]) == (1, 0, True)
    assert r["cert_subject"] == "CN=%s,O=chrony-nts lab" % NAME
    assert r["cert_issuer"] == "CN=probe private test CA,O=chrony-nts lab"
    assert 28 <= r["cert_days_left"] <= 30
    assert set(r["timings"]) == {"dns", "tcp", "tls", "nts_ke", "ntp", "total"}
    assert r["timings"]["total"] < 1.0


def test_placeholders_bring_more_cookies(good, lab):
    r = probe(good, lab, placeholders=3)
    assert r["ok"] is True, r
    assert r["ntp_cookies"] == 4


def test_name_with_address_override(good, lab):
    """Connect to the IP, verify the certificate for the DNS name (no DNS query is made)."""
    r = probe(good, lab, host=NAME, address=good.address)
    assert r["ok"] is True, r
    assert r["address"] == good.address and r["server_name"] == NAME


def test_offset_agrees_with_chronyd_Q(good, lab):
    """chronyd -Q (query only, never sets the clock; -x as well for good measure) measures the same server."""
    cmd = [
        "chronyd",
        "-x",
        "-Q",
        "-t",
        "5",
        "server %s port %d nts ntsport %d iburst maxsamples 1" % (good.address, good.port, good.ntsport),
        "ntstrustedcerts %s" % lab.ca.cert_path,
    ]
    assert "-x" in cmd and "-Q" in cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=15, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"System clock wrong by (-?[0-9.]+) seconds", out.stdout + out.stderr)
    assert m, out.stdout + out.stderr
    chrony_offset = float(m.group(1))
    r = probe(good, lab)
    assert r["ok"] is True, r
    # chrony prints "clock wrong by X" = server - local, our offset has the same sign convention
    assert abs(r["offset"] - chrony_offset) < 0.005, (r["offset"], chrony_offset)


def test_server_negotiation_to_second_server(lab):
    """KE server A sends record 6 naming NTP server B; B shares A's cookie keys (ntsrotate 0 + ntskeys copy)."""
    b_addr = unique_loopback_address()
    a = lab.server("ke-a")
    a.extra = ("ntsntpserver %s" % b_addr,)
    a.start()
    keys = a.dump_dir / "ntskeys"
    deadline = time.monotonic() + 5
    while not keys.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert keys.exists(), "chronyd did not save its server keys"
    b_cert = lab.ca.issue("ntp-b", ips=[b_addr])
    b = NtsServer.create(b_cert, address=b_addr, name="ntp-b", ntsrotate=0)
    lab.procs.append(b)
    b.port = a.port  # A negotiates its own NTP port (record 7), B must listen on it
    b.ntsport = free_port(b_addr, exclude=(b.port,))
    shutil.copyfile(keys, b.dump_dir / "ntskeys")
    os.chown(b.dump_dir / "ntskeys", chrony_uid(), chrony_gid())
    b.start()
    r = probe(a, lab)
    assert r["ok"] is True, r
    assert r["ntp_server"] == b_addr
    assert r["ntp_address"] == b_addr and r["ntp_port"] == a.port
    # and B really answered: stop it and the same probe fails at the NTP stage
    b.stop()
    r = probe(a, lab, timeout=1)
    assert (r["ok"], r["stage"]) == (False, "ntp"), r


def test_not_yet_valid_certificate_needs_no_time_check(future, lab):
    r = probe(future, lab)
    assert (r["ok"], r["stage"]) == (False, "certificate"), r
    assert "not yet valid" in r["error"]
    r = probe(future, lab, no_cert_time_check=True)
    assert r["ok"] is True, r
    assert r["cert_days_left"] >= 39


class UnsynchronisedServer(NtsServer):
    """A chronyd NTS server without ``local stratum`` and without sources: it answers, but unsynchronised."""

    def config_text(self):
        text = super().config_text()
        return "\n".join(line for line in text.splitlines() if not line.startswith("local stratum")) + "\n"


def test_unsynchronised_server_is_flagged(lab, tmp_path):
    addr = unique_loopback_address()
    srv = UnsynchronisedServer.create(lab.ca.issue("unsync", ips=[addr]), address=addr, name="unsync")
    lab.procs.append(srv)
    srv.start()
    r = probe(srv, lab)
    assert r["ok"] is True, r  # NTS itself works: the answer is authenticated
    assert r["synchronised"] is False
    assert r["leap"] == 3 or r["stratum"] in (0, 16), r
    out = run_cli("--ca-file", str(lab.ca.cert_path), "%s:%d" % (addr, srv.ntsport))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "server unsynchronised" in out.stdout


# ---------------------------------------------------------------------------------------------------------------
# failures, each at its own stage


def test_expired_certificate(expired, lab):
    r = probe(expired, lab)
    assert (r["ok"], r["stage"]) == (False, "certificate"), r
    assert "certificate has expired" in r["error"]


def test_wrong_ca(good, lab):
    r = probe(good, lab, ca_file=str(lab.other_ca.cert_path))
    assert (r["ok"], r["stage"]) == (False, "certificate"), r
    assert "issuer is unknown" in r["error"]


def test_unreadable_ca_file(good, lab):
    missing = lab.dir / "missing.pem"
    r = probe(good, lab, ca_file=str(missing))
    assert (r["ok"], r["stage"]) == (False, "certificate"), r
    assert r["error"] == "ca_file %s for %s: cannot read it (no such file or directory)" % (missing, good.address)


def test_wrong_name(good, lab):
    r = probe(good, lab, host="other.probe.test", address=good.address)
    assert (r["ok"], r["stage"]) == (False, "certificate"), r
    assert r["error"] == "certificate is not valid for 'other.probe.test' (subjectAltName DNS names: %s)" % NAME


def test_wrong_ip(good, lab):
    other_ip = unique_loopback_address()
    r = probe(good, lab, host=other_ip, address=good.address)
    assert (r["ok"], r["stage"]) == (False, "certificate"), r
    assert "not valid for IP address %s" % other_ip in r["error"]


def test_closed_port_is_refused_at_tcp():
    addr = unique_loopback_address()
    port = free_port(addr)
    start = time.monotonic()
    r = nts_client.probe(addr, port, timeout=3)
    assert time.monotonic() - start < 1
    assert (r["ok"], r["stage"]) == (False, "tcp"), r
    assert r["error"] == "cannot connect to %s port %d: connection refused" % (addr, port)


def test_bogus_cookie_gets_an_nts_nak(good, lab):
    r = probe(good, lab, cookie_override=os.urandom(100))
    assert (r["ok"], r["stage"], r["nak"]) == (False, "authentication", True), r
    assert "NTS NAK" in r["error"]
    assert r["aead"] == 15 and r["cookies"] == 8  # the key exchange itself worked


# ---------------------------------------------------------------------------------------------------------------
# endpoints that misbehave: a socket that never accepts, and small TLS servers written here


class Blackhole:
    """A listening TCP socket that never accepts (the kernel completes the handshake, nothing else happens)."""

    def __init__(self):
        self.address = unique_loopback_address()
        self.sock = socket.socket()
        self.sock.bind((self.address, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


class FakeKEServer:
    """A one-behaviour TLS server on loopback, to reach the failure paths chrony never takes.

    ``mode``: "silent" (TLS ok, never answers the request), "no-alpn", "tls12" (TLS 1.2 only), or "custom" with
    ``response`` bytes sent after reading the request.
    """

    def __init__(self, lab, mode, response=b""):
        self.address = unique_loopback_address()
        cert = lab.ca.issue("fake-%s" % mode, ips=[self.address])
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.use_certificate_file(str(cert.cert_path))
        ctx.use_privatekey_file(str(cert.key_path))
        if mode == "tls12":
            ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
        if mode != "no-alpn":
            ctx.set_alpn_select_callback(lambda _conn, protos: b"ntske/1" if b"ntske/1" in protos else None)
        self.ctx, self.mode, self.response = ctx, mode, response
        self.listener = socket.socket()
        self.listener.bind((self.address, 0))
        self.listener.listen(8)
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            raw, _ = self.listener.accept()
        except OSError:
            return
        raw.setblocking(True)  # pyOpenSSL on a socket with a timeout raises WantRead instead of blocking
        conn = SSL.Connection(self.ctx, raw)
        conn.set_accept_state()
        try:
            conn.do_handshake()
            conn.recv(1024)
            if self.mode == "custom":
                conn.sendall(self.response)
            self.stop.wait(10)
        except (SSL.Error, OSError):
            pass
        finally:
            raw.close()

    def close(self):
        self.stop.set()
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def endpoints():
    made = []
    yield made
    for e in made:
        e.close()


def test_listener_that_never_accepts_times_out_at_tls(endpoints):
    hole = Blackhole()
    endpoints.append(hole)
    start = time.monotonic()
    r = nts_client.probe(hole.address, hole.port, timeout=1)
    elapsed = time.monotonic() - start
    assert (r["ok"], r["stage"]) == (False, "tls"), r
    assert "timed out after 1.0s during the TLS handshake" in r["error"]
    assert 0.9 < elapsed < 2.0


def test_tls_server_that_never_answers_times_out_at_nts_ke(lab, endpoints):
    fake = FakeKEServer(lab, "silent")
    endpoints.append(fake)
    start = time.monotonic()
    r = nts_client.probe(fake.address, fake.port, ca_file=str(lab.ca.cert_path), timeout=1)
    assert (r["ok"], r["stage"]) == (False, "nts-ke"), r
    assert "timed out after 1.0s waiting for the NTS-KE response" in r["error"]
    assert time.monotonic() - start < 2.5
    # the certificate was checked and reported before the NTS-KE wait
    assert r["cert_subject"] == "CN=%s,O=chrony-nts lab" % fake.address


def test_server_without_alpn_is_rejected(lab, endpoints):
    fake = FakeKEServer(lab, "no-alpn")
    endpoints.append(fake)
    r = nts_client.probe(fake.address, fake.port, ca_file=str(lab.ca.cert_path), timeout=2)
    assert (r["ok"], r["stage"]) == (False, "tls"), r
    assert "did not negotiate ALPN 'ntske/1'" in r["error"]


def test_tls12_only_server_is_rejected(lab, endpoints):
    fake = FakeKEServer(lab, "tls12")
    endpoints.append(fake)
    r = nts_client.probe(fake.address, fake.port, ca_file=str(lab.ca.cert_path), timeout=2)
    assert (r["ok"], r["stage"]) == (False, "tls"), r
    assert "requires TLS 1.3" in r["error"]


def test_ke_error_record_over_tls(lab, endpoints):
    fake = FakeKEServer(lab, "custom", response=bytes.fromhex("8002 0002 0002 8000 0000"))
    endpoints.append(fake)
    r = nts_client.probe(fake.address, fake.port, ca_file=str(lab.ca.cert_path), timeout=2)
    assert (r["ok"], r["stage"]) == (False, "nts-ke"), r
    assert r["error"] == "server answered with NTS-KE Error 2 (Internal Server Error)"


def test_silent_ntp_port_times_out_at_ntp(lab, endpoints):
    """Valid KE response whose port record points at a UDP socket that never answers."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fake_holder = {}
    try:
        addr_probe = unique_loopback_address()
        udp.bind((addr_probe, 0))
        port = udp.getsockname()[1]
        response = (
            nts_client.encode_record(1, b"\x00\x00", critical=True)
            + nts_client.encode_record(4, b"\x00\x0f", critical=True)
            + nts_client.encode_record(6, addr_probe.encode(), critical=True)
            + nts_client.encode_record(7, port.to_bytes(2, "big"), critical=True)
            + nts_client.encode_record(5, os.urandom(100))
            + nts_client.encode_record(0, critical=True)
        )
        fake_holder["f"] = FakeKEServer(lab, "custom", response=response)
        endpoints.append(fake_holder["f"])
        fake = fake_holder["f"]
        start = time.monotonic()
        r = nts_client.probe(fake.address, fake.port, ca_file=str(lab.ca.cert_path), timeout=1)
        assert (r["ok"], r["stage"]) == (False, "ntp"), r
        assert r["error"] == "timed out after 1.0s waiting for the NTP response from %s port %d" % (addr_probe, port)
        assert (r["ntp_server"], r["ntp_port"]) == (addr_probe, port)
        assert time.monotonic() - start < 2.5
        assert len(udp.recv(2048)) == 228  # the request did arrive
    finally:
        udp.close()


def test_probe_many_bounds_time_with_blackholes(good, lab, endpoints):
    holes = [Blackhole() for _ in range(4)]
    endpoints.extend(holes)
    specs = [{"host": good.address, "port": good.ntsport}] * 4 + [{"host": h.address, "port": h.port} for h in holes]
    start = time.monotonic()
    results = nts_client.probe_many(specs, concurrency=8, timeout=1, ca_file=str(lab.ca.cert_path))
    elapsed = time.monotonic() - start
    assert [r["ok"] for r in results] == [True] * 4 + [False] * 4
    assert {r["stage"] for r in results[4:]} == {"tls"}
    assert elapsed < 2.5, elapsed  # about one timeout, not four


# ---------------------------------------------------------------------------------------------------------------
# the Ansible module and the CLI


def run_module(args, check=False, action=False):
    """Through the module (a Python started for it) or, with ``action``, through the action plugin (in-process)."""
    cmd = [str(ANSIBLE), "localhost", *LOCAL, "-m", "nts.chrony.nts_probe", "-a", json.dumps(args)]
    if check:
        cmd.append("--check")
    if not action:
        # The collection pairs the module with its action plugin, which probes in-process on a local connection;
        # an async task makes the action plugin execute the module itself, as on a remote host.
        cmd += ["-B", "60", "-P", "1"]
    env = module_env()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=CWD, check=False)
    try:
        data = json.loads(out.stdout)
    except ValueError:
        raise AssertionError(
            "ansible printed no JSON (rc %d): %s %s" % (out.returncode, out.stdout, out.stderr)
        ) from None
    return out.returncode, data["plays"][0]["tasks"][0]["hosts"]["localhost"]


@pytest.mark.parametrize("action", [False, True], ids=["module", "action-plugin"])
def test_module_through_ansible(good, lab, action):
    closed_addr = unique_loopback_address()
    closed = {"host": closed_addr, "ntsport": free_port(closed_addr)}
    args = {
        "servers": [
            {"host": NAME, "port": good.ntsport, "address": good.address},
            "%s:%d" % (good.address, good.ntsport),
            closed,
        ],
        "ca_file": str(lab.ca.cert_path),
        "timeout": 2,
        "fail_on_error": False,
        "min_ok": 2,
    }
    rc, res = run_module(args, check=True, action=action)
    assert rc == 0, res
    # a module result carries its invocation; the action plugin ran the same code without starting the module
    assert ("invocation" in res) is not action
    assert res["changed"] is False
    assert res["ok_servers"] == [NAME, good.address]
    assert res["failed_servers"] == [closed_addr]
    first = res["results"][0]
    assert (first["aead"], first["cookies"], first["cookie_length"], first["ntp_port"]) == (15, 8, 100, good.port)
    assert res["results"][2]["stage"] == "tcp"

    args["fail_on_error"] = True
    rc, res = run_module(args, action=action)
    assert rc != 0 and res["failed"] is True
    assert "NTS probe failed for %s:%d (tcp:" % (closed_addr, closed["ntsport"]) in res["msg"]
    assert res["ok_servers"] == [NAME, good.address]

    rc, res = run_module({"servers": [{"host": "x", "prot": 1}]}, action=action)
    assert rc != 0 and "servers[0]: unknown key(s) prot" in res["msg"]
    rc, res = run_module({"servers": ["a.test"], "tiemout": 1}, action=action)
    assert rc != 0 and "tiemout" in res["msg"]


def run_cli(*args):
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=60, check=False)


def test_cli_exit_codes(good, expired, lab, tmp_path):
    ca = ["--ca-file", str(lab.ca.cert_path), "--timeout", "2"]
    target = "%s:%d" % (good.address, good.ntsport)
    ok = run_cli(*ca, target)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[1].startswith("OK ")

    warn = run_cli(*ca, "--warn-days", "60", target)  # the certificate has 30 days left
    assert warn.returncode == 1, warn.stdout + warn.stderr
    assert "certificate expires in" in warn.stdout

    crit = run_cli(*ca, target, "%s:%d" % (expired.address, expired.ntsport))
    assert crit.returncode == 2, crit.stdout + crit.stderr
    assert "certificate has expired" in crit.stdout

    usage = run_cli("--address", "127.0.0.9", "a.test", "b.test")
    assert usage.returncode == 3 and "exactly one server" in usage.stderr
    assert run_cli("--timeout", "-1", "a.test").returncode == 3
    assert run_cli().returncode == 3

    named = run_cli(*ca, "--address", good.address, "--json", "%s:%d" % (NAME, good.ntsport))
    assert named.returncode == 0, named.stdout + named.stderr
    data = json.loads(named.stdout)
    assert data["status"] == "OK" and data["results"][0]["server_name"] == NAME


def test_cli_catalog(good, lab, tmp_path):
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(
        "version: 1\nupdated: '2026-11-27'\nservers:\n"
        "  - host: %s\n    ntsport: %d\n    provider: lab\n    stratum: 1\n"
        "  - host: %s\n    ntsport: %d\n    notes: same server again\n"
        % (good.address, good.ntsport, good.address, good.ntsport)
    )
    out = run_cli("--ca-file", str(lab.ca.cert_path), "--catalog", str(catalog), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(out.stdout)
    assert [r["ok"] for r in data["results"]] == [True, True]

    bad = tmp_path / "bad.yml"
    bad.write_text("servers:\n  - host: a.test\n    ntsport: nope\n")
    out = run_cli("--catalog", str(bad))
    assert out.returncode == 3
    assert "servers[0] (a.test): 'ntsport' must be an integer 1..65535, got 'nope'" in out.stderr


def test_cli_runs_with_relative_import_from_elsewhere(tmp_path):
    """bin/nts-probe finds the collection relative to itself, whatever the working directory."""
    out = subprocess.run([str(CLI), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=30, check=False)
    assert out.returncode == 0 and "Exit status: 0 OK, 1 WARNING, 2 CRITICAL" in out.stdout
