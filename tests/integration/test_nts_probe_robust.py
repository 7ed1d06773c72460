"""The probe against hostile or broken endpoints on loopback: resets, stalls, sockets that cannot be created, bad CAs.

Every endpoint is a real socket created here on a random 127.x.y.z address (chronyd runs with -x via tests/lib); no
name is resolved through DNS (names come with ``address``, or the resolver is replaced). Two faults cannot be
produced for real on a host that has IPv6: "no IPv6" is simulated by a socket class that refuses AF_INET6 at
creation (the probe's own code and sockets run unchanged); "no descriptor left" is real (RLIMIT_NOFILE).
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from OpenSSL import SSL

from tests.lib.ansible_local import ANSIBLE, CWD, LOCAL, module_env
from tests.lib.chronyd import NtsServer, unique_loopback_address
from tests.lib.collection import nts_client
from tests.lib.pki import CertificateAuthority, make_shared_dir

pytestmark = pytest.mark.loopback

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "bin" / "nts-probe"
PYTHON = REPO / ".venv" / "bin" / "python"
NAME = "nts.robust.test"
RESET_OR_CLOSED = re.compile(r"connection reset by peer|connection closed by peer")


# ---------------------------------------------------------------------------------------------------------------
# fixtures: a private CA and one good chronyd NTS server for the module


class Lab:
    def __init__(self):
        self.dir = make_shared_dir(prefix="nts-robust-test-")
        self.ca = CertificateAuthority(self.dir, name="robust")
        self.ca_pem = self.ca.cert_path.read_text()
        self.other_ca = CertificateAuthority(self.dir, name="robust-other")
        self.procs = []

    def close(self):
        for proc in reversed(self.procs):
            proc.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def good(lab):
    addr = unique_loopback_address()
    srv = NtsServer.create(lab.ca.issue("good", dns_names=[NAME], ips=[addr]), address=addr, name="good")
    lab.procs.append(srv)
    return srv.start()


@pytest.fixture
def endpoints():
    made = []
    yield made
    for e in reversed(made):
        e.close()


# ---------------------------------------------------------------------------------------------------------------
# endpoints written here


def reset(sock):
    """Close with SO_LINGER 0: the kernel sends a TCP RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Scripted:
    """A loopback TCP listener that runs ``behaviour(sock)`` on every accepted connection, in its own thread.

    Behaviours with TLS get a pyOpenSSL server context with a certificate of ``lab``'s CA for the address.
    """

    def __init__(self, behaviour, lab=None, port=0):
        self.address = unique_loopback_address()
        self.behaviour = behaviour
        self.ctx = None
        if lab is not None:
            cert = lab.ca.issue("scripted-%s" % self.address, ips=[self.address])
            self.ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
            self.ctx.use_certificate_file(str(cert.cert_path))
            self.ctx.use_privatekey_file(str(cert.key_path))
            self.ctx.set_alpn_select_callback(lambda _conn, protos: b"ntske/1" if b"ntske/1" in protos else None)
        self.listener = socket.socket()
        self.listener.bind((self.address, port))
        self.listener.listen(128)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.workers = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            raw.setblocking(True)  # pyOpenSSL on a socket with a timeout raises WantRead instead of blocking
            worker = threading.Thread(target=self.handle, args=(raw,), daemon=True)
            worker.start()
            self.workers.append(worker)

    def handle(self, raw):
        try:
            self.behaviour(self, raw)
        except (OSError, SSL.Error):
            pass
        finally:
            try:
                raw.close()
            except OSError:
                pass

    def tls(self, raw):
        conn = SSL.Connection(self.ctx, raw)
        conn.set_accept_state()
        conn.do_handshake()
        return conn

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.listener.close()
        for worker in self.workers:
            worker.join(5)


def reset_on_accept(_server, raw):
    reset(raw)


def reset_after_client_hello(_server, raw):
    raw.settimeout(5)
    assert raw.recv(4096)  # the ClientHello is there: the TCP connection was complete
    reset(raw)


def close_after_client_hello(_server, raw):
    raw.settimeout(5)
    raw.recv(4096)
    raw.shutdown(socket.SHUT_RDWR)  # a plain FIN, no TLS alert


def reset_after_ke_request(server, raw):
    conn = server.tls(raw)
    conn.recv(4096)
    reset(raw)


def ke_response(ntp_address, ntp_port):
    """A valid NTS-KE response naming an NTP server (record 6) and port (record 7)."""
    return (
        nts_client.encode_record(1, b"\x00\x00", critical=True)
        + nts_client.encode_record(4, b"\x00\x0f", critical=True)
        + nts_client.encode_record(6, ntp_address.encode(), critical=True)
        + nts_client.encode_record(7, ntp_port.to_bytes(2, "big"), critical=True)
        + nts_client.encode_record(5, os.urandom(100))
        + nts_client.encode_record(0, critical=True)
    )


def staged(stall_tls, stall_ke, response):
    """Stall ``stall_tls`` s before the TLS handshake, ``stall_ke`` s before the KE response, then keep quiet."""

    def behaviour(server, raw):
        if server.stop.wait(stall_tls):
            return
        conn = server.tls(raw)
        conn.recv(4096)
        if server.stop.wait(stall_ke):
            return
        conn.sendall(response)
        server.stop.wait(10)

    return behaviour


class SilentUDP:
    """A bound UDP socket that never answers (NTP requests sent to it are kept for inspection)."""

    def __init__(self):
        self.address = unique_loopback_address()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.address, 0))
        self.port = self.sock.getsockname()[1]

    def received(self):
        self.sock.settimeout(0.5)
        try:
            return self.sock.recv(2048)
        except socket.timeout:
            return None

    def close(self):
        self.sock.close()


class NoIPv6Socket(socket.socket):
    """socket.socket as on a host without IPv6: creating an AF_INET6 socket fails with EAFNOSUPPORT."""

    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        if family == socket.AF_INET6 and fileno is None:
            raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
        super().__init__(family, type, proto, fileno)


def run_cli(*args, no_ipv6=False):
    cmd = [str(CLI), *args]  # the sh wrapper, as users run it
    env = None
    if no_ipv6:  # the same CLI module, run as __main__ in a Python whose socket class refuses AF_INET6
        code = (
            "import errno, os, runpy, socket, sys\n"
            "class S(socket.socket):\n"
            "    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):\n"
            "        if family == socket.AF_INET6 and fileno is None:\n"
            "            raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))\n"
            "        super().__init__(family, type, proto, fileno)\n"
            "socket.socket = S\n"
            "runpy.run_module('ansible_collections.nts.chrony.plugins.plugin_utils.probe_cli', run_name='__main__')\n"
        )
        cmd = [str(PYTHON), "-c", code, *args]
        env = dict(os.environ, PYTHONPATH=str(REPO / ".collections"))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, env=env)


def table_lines(stdout):
    """CLI table rows (header dropped) by SERVER column."""
    rows = {}
    for line in stdout.splitlines()[1:]:
        status, server = line.split()[:2]
        rows[server] = (status, line)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# 1. resets: every one is a clean per-server failure with a plain reason


def test_reset_after_client_hello_fails_cleanly_at_tls(endpoints):
    srv = Scripted(reset_after_client_hello)
    endpoints.append(srv)
    r = nts_client.probe(srv.address, srv.port, timeout=3)
    assert (r["ok"], r["stage"]) == (False, "tls"), r
    assert r["error"] == "connection reset by peer during the TLS handshake"
    assert r["address"] == srv.address  # the TCP connection was made before the reset


def test_close_after_client_hello_fails_cleanly_at_tls(endpoints):
    srv = Scripted(close_after_client_hello)
    endpoints.append(srv)
    r = nts_client.probe(srv.address, srv.port, timeout=3)
    assert (r["ok"], r["stage"]) == (False, "tls"), r
    assert r["error"] == "connection closed by peer (unexpected EOF) during the TLS handshake"


def test_reset_after_ke_request_fails_cleanly_at_nts_ke(lab, endpoints):
    srv = Scripted(reset_after_ke_request, lab=lab)
    endpoints.append(srv)
    r = nts_client.probe(srv.address, srv.port, ca_pem=lab.ca_pem, timeout=3)
    assert (r["ok"], r["stage"]) == (False, "nts-ke"), r
    assert r["error"] == "connection reset by peer while reading the NTS-KE response"
    assert r["cert_subject"] == "CN=%s,O=chrony-nts lab" % srv.address  # TLS itself succeeded


def test_reset_on_accept_never_escapes_and_other_results_survive(good, lab, endpoints):
    """The issue's server: accept() then RST at once. It lands at the TCP or the TLS step depending on timing.

    400 probes, 16 at a time, interleaved with a good server: every reset one is a clean failure and every good one
    passes. (The old getpeername() crash was a race hit about once in 500 probes; this is a stress test, the
    deterministic resets are the tests above.)
    """
    srv = Scripted(reset_on_accept)
    endpoints.append(srv)
    specs = []
    for i in range(400):
        specs.append({"host": srv.address, "port": srv.port})
        if i % 50 == 0:
            specs.append({"host": good.address, "port": good.ntsport})
    start = time.monotonic()
    results = nts_client.probe_many(specs, concurrency=16, timeout=3, ca_pem=lab.ca_pem)
    assert time.monotonic() - start < 30
    assert len(results) == len(specs)
    for spec, r in zip(specs, results):
        if spec["host"] == good.address:
            assert r["ok"] is True, r
            continue
        assert r["ok"] is False and r["stage"] in ("tcp", "tls"), r
        assert RESET_OR_CLOSED.search(r["error"]), r["error"]
        assert "Errno" not in r["error"] and "ECONN" not in r["error"], r["error"]


def test_cli_reports_every_server_and_exits_critical_on_resets(good, lab, endpoints):
    on_accept = Scripted(reset_on_accept)
    after_hello = Scripted(reset_after_client_hello)
    endpoints.extend([on_accept, after_hello])
    targets = ["%s:%d" % (s.address, s.port) for s in (on_accept, after_hello)] + [
        "%s:%d" % (good.address, good.ntsport)
    ]
    for _ in range(3):
        out = run_cli("--ca-file", str(lab.ca.cert_path), "--timeout", "3", *targets)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "Traceback" not in out.stdout + out.stderr and out.stderr == ""
        rows = table_lines(out.stdout)
        assert set(rows) == set(targets)
        assert rows[targets[0]][0] == "CRITICAL" and RESET_OR_CLOSED.search(rows[targets[0]][1])
        assert rows[targets[1]][0] == "CRITICAL"
        assert rows[targets[1]][1].endswith("tls: connection reset by peer during the TLS handshake")
        assert rows[targets[2]][0] == "OK", out.stdout


# ---------------------------------------------------------------------------------------------------------------
# 1b. sockets that cannot be created


def test_no_descriptor_left_is_a_tcp_failure(good, lab):
    """Real EMFILE: the process's descriptor limit is lowered and filled, so socket() itself fails."""
    nts_client.tls_context(ca_pem=lab.ca_pem)  # OpenSSL initialised before the limit is lowered
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    fillers = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 16, hard))
    try:
        while True:
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
                break
        r = nts_client.probe(good.address, good.ntsport, ca_pem=lab.ca_pem, timeout=2)
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert (r["ok"], r["stage"]) == (False, "tcp"), r
    no_fd = "cannot create a socket (too many open files in this process)"
    assert r["error"] == "cannot connect to %s port %d: %s" % (good.address, good.ntsport, no_fd)
    assert nts_client.probe(good.address, good.ntsport, ca_pem=lab.ca_pem, timeout=2)["ok"] is True


def test_no_ipv6_is_a_per_address_failure(good, lab, monkeypatch):
    port = good.ntsport
    monkeypatch.setattr(socket, "socket", NoIPv6Socket)
    r = nts_client.probe("::1", port, ca_pem=lab.ca_pem, timeout=2)
    assert (r["ok"], r["stage"]) == (False, "tcp"), r
    no_v6 = "cannot create a socket (address family not supported by this host)"
    assert r["error"] == "cannot connect to ::1 port %d: %s" % (port, no_v6)

    # a name with an IPv6 and an IPv4 address: the IPv4 one is used (the resolver is replaced, no DNS query)
    def addresses(host, p, *_args, **_kwargs):
        assert host == NAME
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", p, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (good.address, p)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", addresses)
    results = nts_client.probe_many(
        [{"host": NAME, "port": port}, "[::1]:%d" % port, {"host": good.address, "port": port}],
        timeout=2,
        ca_pem=lab.ca_pem,
    )
    assert [r["ok"] for r in results] == [True, False, True], results
    assert results[0]["address"] == good.address


def test_no_ipv6_for_the_negotiated_ntp_server_fails_at_ntp(lab, endpoints, monkeypatch):
    srv = Scripted(staged(0, 0, ke_response("::1", 12345)), lab=lab)
    endpoints.append(srv)
    monkeypatch.setattr(socket, "socket", NoIPv6Socket)
    r = nts_client.probe(srv.address, srv.port, ca_pem=lab.ca_pem, timeout=3)
    assert (r["ok"], r["stage"]) == (False, "ntp"), r
    assert r["error"] == "cannot create a UDP socket for ::1 port 12345: address family not supported by this host"
    assert (r["aead"], r["ntp_address"]) == (15, "::1")


def test_cli_without_ipv6_reports_both_servers(good, lab):
    v6 = "[::1]:%d" % good.ntsport
    v4 = "%s:%d" % (good.address, good.ntsport)
    out = run_cli("--ca-file", str(lab.ca.cert_path), "--timeout", "2", v6, v4, no_ipv6=True)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    rows = table_lines(out.stdout)
    assert rows["::1:%d" % good.ntsport][0] == "CRITICAL"
    assert "cannot create a socket (address family not supported by this host)" in rows["::1:%d" % good.ntsport][1]
    assert rows[v4][0] == "OK"


# ---------------------------------------------------------------------------------------------------------------
# 2. one deadline per server probe


def test_stalls_at_every_step_cost_one_timeout(lab, endpoints):
    """0.6 s stall before TLS, 0.6 s before the KE answer, then an NTP port that never answers; timeout 1.5 s.

    Per-step timeouts took 0.6 + 0.6 + 1.5 = 2.7 s; one deadline ends the probe at 1.5 s, in the NTP wait.
    """
    udp = SilentUDP()
    endpoints.append(udp)
    srv = Scripted(staged(0.6, 0.6, ke_response(udp.address, udp.port)), lab=lab)
    endpoints.append(srv)
    start = time.monotonic()
    r = nts_client.probe(srv.address, srv.port, ca_pem=lab.ca_pem, timeout=1.5)
    elapsed = time.monotonic() - start
    assert (r["ok"], r["stage"]) == (False, "ntp"), r
    assert r["error"] == "timed out after 1.5s waiting for the NTP response from %s port %d" % (udp.address, udp.port)
    assert r["timings"]["tls"] >= 0.55 and r["timings"]["nts_ke"] >= 0.55, r["timings"]  # the stalls happened
    assert 1.45 <= elapsed < 1.5 + 0.5, elapsed
    assert r["timings"]["total"] < 1.5 + 0.5
    assert udp.received() is not None  # the NTP request went out within the time left


def test_stalls_just_under_the_timeout_end_in_the_step_that_overruns(lab, endpoints):
    """0.8 s at TLS and 0.8 s at NTS-KE with a 1.0 s timeout: each step alone is under it, the probe is not."""
    udp = SilentUDP()
    endpoints.append(udp)
    srv = Scripted(staged(0.8, 0.8, ke_response(udp.address, udp.port)), lab=lab)
    endpoints.append(srv)
    start = time.monotonic()
    r = nts_client.probe(srv.address, srv.port, ca_pem=lab.ca_pem, timeout=1.0)
    elapsed = time.monotonic() - start
    assert (r["ok"], r["stage"]) == (False, "nts-ke"), r
    assert r["error"] == "timed out after 1.0s waiting for the NTS-KE response"
    assert 0.95 <= elapsed < 1.0 + 0.5, elapsed
    assert udp.received() is None  # never got as far as NTP


def test_slow_dns_counts_against_the_deadline(endpoints, monkeypatch):
    """0.6 s in the (replaced) resolver, then a listener that never answers TLS: the probe ends at 1.0 s, not 1.6."""
    hole = socket.socket()
    hole.bind((unique_loopback_address(), 0))
    hole.listen(8)
    address, port = hole.getsockname()
    endpoints.append(hole)

    def slow(host, p, *_args, **_kwargs):
        time.sleep(0.6)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, p))]

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    start = time.monotonic()
    r = nts_client.probe("slow.robust.test", port, timeout=1.0)
    elapsed = time.monotonic() - start
    assert (r["ok"], r["stage"]) == (False, "tls"), r
    assert r["error"] == "timed out after 1.0s during the TLS handshake"
    assert r["timings"]["dns"] >= 0.55
    assert 0.95 <= elapsed < 1.0 + 0.5, elapsed


def test_probe_many_with_stalling_servers_takes_one_timeout(good, lab, endpoints):
    udp = SilentUDP()
    endpoints.append(udp)
    stallers = [Scripted(staged(0.5, 0.5, ke_response(udp.address, udp.port)), lab=lab) for _ in range(4)]
    endpoints.extend(stallers)
    specs = [{"host": s.address, "port": s.port} for s in stallers] + [{"host": good.address, "port": good.ntsport}]
    start = time.monotonic()
    results = nts_client.probe_many(specs, concurrency=8, timeout=1.2, ca_pem=lab.ca_pem)
    elapsed = time.monotonic() - start
    assert [r["ok"] for r in results] == [False] * 4 + [True], results
    assert {r["stage"] for r in results[:4]} == {"ntp"}
    assert elapsed < 1.2 + 0.5, elapsed


# ---------------------------------------------------------------------------------------------------------------
# 3. CA input errors name the input, never a temporary file


class CountingListener:
    """A listener that never accepts: anything that connected shows up in its backlog."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((unique_loopback_address(), 0))
        self.sock.listen(8)
        self.address, self.port = self.sock.getsockname()

    def connections(self):
        self.sock.settimeout(0.2)
        count = 0
        try:
            while True:
                conn, _ = self.sock.accept()
                conn.close()
                count += 1
        except socket.timeout:
            return count

    def close(self):
        self.sock.close()


BAD_PEMS = [
    ("hello, I am not a certificate\n", "not a PEM certificate (no '-----BEGIN CERTIFICATE-----' block found)"),
    (
        "-----BEGIN CERTIFICATE-----\nMIIB!!!!\n-----END CERTIFICATE-----\n",
        "PEM block #1 is not a valid certificate (bad base64 decode)",
    ),
    (
        "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
        "PEM block #1 is 'PRIVATE KEY', expected 'CERTIFICATE'",
    ),
    ("-----BEGIN CERTIFICATE-----\nMIIB\n", "not a PEM certificate (a BEGIN line has no matching END line)"),
]


@pytest.mark.parametrize(("pem", "reason"), BAD_PEMS, ids=["text", "base64", "private-key", "truncated"])
def test_bad_ca_pem_names_ca_pem_and_the_server(pem, reason, endpoints):
    target = CountingListener()
    endpoints.append(target)
    r = nts_client.probe(NAME, target.port, address=target.address, ca_pem=pem, timeout=2)
    assert (r["ok"], r["stage"]) == (False, "certificate"), r
    assert r["error"] == "ca_pem for %s: %s" % (NAME, reason)
    assert target.connections() == 0  # refused before any packet was sent


@pytest.mark.parametrize(("pem", "reason"), BAD_PEMS[:3], ids=["text", "base64", "private-key"])
def test_bad_ca_file_names_the_path_and_the_server(pem, reason, tmp_path, endpoints):
    target = CountingListener()
    endpoints.append(target)
    path = tmp_path / "site ca.pem"
    path.write_text(pem)
    r = nts_client.probe(NAME, target.port, address=target.address, ca_file=str(path), timeout=2)
    assert (r["ok"], r["stage"]) == (False, "certificate"), r
    assert r["error"] == "ca_file %s for %s: %s" % (path, NAME, reason)
    assert target.connections() == 0


def test_ca_file_that_is_a_directory(tmp_path):
    r = nts_client.probe(NAME, 4460, address="127.0.0.9", ca_file=str(tmp_path), timeout=1)
    assert (r["stage"], r["error"]) == (
        "certificate",
        "ca_file %s for %s: cannot read it (is a directory)" % (tmp_path, NAME),
    )


def test_ca_pem_in_memory_is_trusted(good, lab):
    r = nts_client.probe(NAME, good.ntsport, address=good.address, ca_pem=lab.ca_pem, timeout=3)
    assert r["ok"] is True, r
    # a bundle: another CA first, the right one second
    bundle = lab.other_ca.cert_path.read_text() + lab.ca_pem
    assert nts_client.probe(NAME, good.ntsport, address=good.address, ca_pem=bundle, timeout=3)["ok"] is True
    # only the other CA: the chain is refused, so the PEM really is the trust store
    r = nts_client.probe(NAME, good.ntsport, address=good.address, ca_pem=lab.other_ca.cert_path.read_text(), timeout=3)
    assert (r["ok"], r["stage"]) == (False, "certificate"), r
    assert "issuer is unknown" in r["error"]


def test_server_ca_pem_replaces_the_common_ca_file(good, lab):
    results = nts_client.probe_many(
        [{"host": NAME, "port": good.ntsport, "address": good.address, "ca_pem": lab.ca_pem}],
        timeout=3,
        ca_file=str(lab.other_ca.cert_path),
    )
    assert results[0]["ok"] is True, results


# ---------------------------------------------------------------------------------------------------------------
# the Ansible module and its action plugin: resets and bad CAs are per-server results


def run_module(args, action):
    cmd = [str(ANSIBLE), "localhost", *LOCAL, "-m", "nts.chrony.nts_probe", "-a", json.dumps(args)]
    env = module_env()
    if action:
        env["ANSIBLE_ACTION_PLUGINS"] = str(REPO / "plugins" / "action")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=CWD, check=False)
    try:
        data = json.loads(out.stdout)
    except ValueError:
        raise AssertionError(
            "ansible printed no JSON (rc %d): %s %s" % (out.returncode, out.stdout, out.stderr)
        ) from None
    return out.returncode, data["plays"][0]["tasks"][0]["hosts"]["localhost"]


@pytest.mark.parametrize("action", [False, True], ids=["module", "action-plugin"])
def test_module_reports_resets_and_bad_ca_pem_per_server(good, lab, endpoints, action):
    after_hello = Scripted(reset_after_client_hello)
    endpoints.append(after_hello)
    args = {
        "servers": [
            {"host": NAME, "port": good.ntsport, "address": good.address, "ca_pem": lab.ca_pem},
            {"host": after_hello.address, "port": after_hello.port},
            {"host": "bad-ca.robust.test", "port": good.ntsport, "address": good.address, "ca_pem": "not PEM"},
        ],
        "timeout": 3,
        "fail_on_error": False,
    }
    rc, res = run_module(args, action)
    assert rc == 0, res
    assert "exception" not in res and "module_stderr" not in res, res
    assert res["ok_servers"] == [NAME]
    assert res["failed_servers"] == [after_hello.address, "bad-ca.robust.test"]
    reset_result, ca_result = res["results"][1], res["results"][2]
    assert (reset_result["stage"], reset_result["error"]) == (
        "tls",
        "connection reset by peer during the TLS handshake",
    )
    assert ca_result["stage"] == "certificate"
    assert ca_result["error"] == (
        "ca_pem for bad-ca.robust.test: not a PEM certificate (no '-----BEGIN CERTIFICATE-----' block found)"
    )

    args["fail_on_error"] = True
    rc, res = run_module(args, action)
    assert rc != 0 and res["failed"] is True
    # a plain fail_json (ansible-core marks it "(traceback unavailable)"), not a crash with a traceback
    assert "module_stderr" not in res and "Traceback" not in res.get("exception", ""), res
    assert res["msg"].startswith("NTS probe failed for "), res["msg"]
    assert (
        "%s:%d (tls: connection reset by peer during the TLS handshake)"
        % (
            after_hello.address,
            after_hello.port,
        )
        in res["msg"]
    )
    assert (
        "bad-ca.robust.test:%d (certificate: ca_pem for bad-ca.robust.test: not a PEM certificate" % (good.ntsport)
        in res["msg"]
    )
    assert "nts-probe-ca-" not in json.dumps(res) and "/tmp" not in res["msg"]
