"""AEAD negotiation and chrony's AES-128-GCM-SIV key-derivation quirk, end to end on loopback.

Two kinds of servers, both on random 127.x.y.z addresses (nothing else is contacted):

* the machine's chronyd 4.3 (run with -x by tests/lib): it has no AES-128-GCM-SIV, so an offer of [30, 15]
  negotiates 15 and an offer of [30] alone is refused with an empty AEAD record;
* a small NTS server written here (TLS 1.3 NTS-KE with pyOpenSSL, NTP over UDP, AES-SIV and AES-GCM-SIV straight from
  cryptography, not through the probe's code) that derives AEAD 30 keys the way a chosen implementation does:
  chrony >= 4.6.1 (context id 30 and an echoed record 1024 when the client sent 1024, else id 15), chrony 4.4 to 4.6
  (id 15, record 1024 unknown), an RFC 8915 server that does not know record 1024 (id 30, no echo), or one that
  answers every NTP request with an NTS NAK. Real chrony 4.6.1 and 4.9 are covered by tests/lab/test_probe_releases.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV, AESSIV
from OpenSSL import SSL

from tests.lib.ansible_local import ANSIBLE, CWD, LOCAL, module_env
from tests.lib.chronyd import NtsServer, unique_loopback_address
from tests.lib.collection import nts_client
from tests.lib.pki import CertificateAuthority, make_shared_dir

pytestmark = pytest.mark.loopback

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "bin" / "nts-probe"
NAME = "nts.aead.test"
LABEL = b"EXPORTER-network-time-security"
KEY_LENGTH = {15: 32, 30: 16}
NTP_UNIX = 2208988800


class FakeNtsServer:
    """NTS-KE on TCP and NTS-protected NTP on UDP, same address, independent of the probe's packet code.

    ``derivation`` (AEAD 30 keys): "chrony-4.6.1", "chrony-4.4", "rfc-silent" or "nak-all" (see the module doc).
    ``aeads``: the AEAD ids it implements; it picks the first one the client offers, as chrony does.
    """

    def __init__(self, ca, derivation, aeads=(30, 15)):
        self.address = unique_loopback_address()
        self.derivation, self.aeads = derivation, tuple(aeads)
        cert = ca.issue("fake-%s" % derivation, dns_names=[NAME], ips=[self.address])
        self.ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        self.ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        self.ctx.use_certificate_file(str(cert.cert_path))
        self.ctx.use_privatekey_file(str(cert.key_path))
        self.ctx.set_alpn_select_callback(lambda _conn, protos: b"ntske/1" if b"ntske/1" in protos else None)
        self.listener = socket.socket()
        self.listener.bind((self.address, 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.ntsport = self.listener.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((self.address, 0))
        self.udp.settimeout(0.2)
        self.port = self.udp.getsockname()[1]
        self.cookies = {}  # cookie -> (aead, c2s, s2c)
        self.ke_requests = []  # per NTS-KE: {"aeads": [...], "record_1024": bool, "chosen": id, "context": id}
        self.ntp_requests = []  # per NTP request: {"aead", "nonce_length", "auth_body", "answer": "ok"|"nak"}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self.serve_ke, self.serve_ntp)]
        for t in self.threads:
            t.start()

    # --- NTS-KE ---------------------------------------------------------------------------------------------------
    def serve_ke(self):
        while not self.stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            raw.setblocking(True)
            try:
                self.handle_ke(raw)
            except (OSError, SSL.Error):
                pass
            finally:
                raw.close()

    def handle_ke(self, raw):
        conn = SSL.Connection(self.ctx, raw)
        conn.set_accept_state()
        conn.do_handshake()
        data = b""
        records = []
        while not records or records[-1][0] != 0:
            data += conn.recv(4096)
            records, pos = [], 0
            while pos + 4 <= len(data):
                word, length = struct.unpack("!HH", data[pos : pos + 4])
                if pos + 4 + length > len(data):
                    break
                records.append((word & 0x7FFF, data[pos + 4 : pos + 4 + length]))
                pos += 4 + length
        offered = []
        sent_1024 = False
        for rtype, body in records:
            if rtype == 4:
                offered = [v for (v,) in struct.iter_unpack("!H", body)]
            elif rtype == 1024:
                sent_1024 = True
        chosen = next((a for a in offered if a in self.aeads), None)
        echo = chosen == 30 and sent_1024 and self.derivation in ("chrony-4.6.1", "nak-all")
        context = chosen
        if chosen == 30 and self.derivation != "rfc-silent" and not echo:
            context = 15  # chrony: id 15 unless both sides exchanged record 1024
        self.ke_requests.append({"aeads": offered, "record_1024": sent_1024, "chosen": chosen, "context": context})

        def rec(rtype, body=b"", critical=False):
            return struct.pack("!HH", rtype | (0x8000 if critical else 0), len(body)) + body

        out = rec(1, b"\x00\x00", True)
        if chosen is None:
            out += rec(4, b"", True) + rec(0, b"", True)
        else:
            out += rec(4, struct.pack("!H", chosen), True)
            if echo:
                out += rec(1024)
            out += rec(7, struct.pack("!H", self.port), True)
            length = KEY_LENGTH[chosen]
            c2s = conn.export_keying_material(LABEL, length, struct.pack("!HHB", 0, context, 0))
            s2c = conn.export_keying_material(LABEL, length, struct.pack("!HHB", 0, context, 1))
            for _ in range(8):
                cookie = os.urandom(64 if chosen == 30 else 100)
                self.cookies[cookie] = (chosen, c2s, s2c)
                out += rec(5, cookie)
            out += rec(0, b"", True)
        conn.sendall(out)
        conn.shutdown()

    # --- NTP ------------------------------------------------------------------------------------------------------
    def serve_ntp(self):
        while not self.stop.is_set():
            try:
                pkt, peer = self.udp.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            answer = self.answer(pkt)
            if answer:
                self.udp.sendto(answer, peer)

    def answer(self, pkt):
        efs, pos = [], 48
        while pos + 4 <= len(pkt):
            ftype, length = struct.unpack("!HH", pkt[pos : pos + 4])
            efs.append((ftype, pos, pkt[pos + 4 : pos + length]))
            pos += length
        uid = next(b for t, _p, b in efs if t == 0x0104)
        cookie = next(b for t, _p, b in efs if t == 0x0204)
        _t, auth_start, auth = efs[-1]
        nonce_len, ct_len = struct.unpack("!HH", auth[:4])
        nonce = auth[4 : 4 + nonce_len]
        ct_start = 4 + nonce_len + (-nonce_len % 4)
        ciphertext = auth[ct_start : ct_start + ct_len]
        aead, c2s, s2c = self.cookies.get(cookie, (None, None, None))
        seen = {"aead": aead, "nonce_length": nonce_len, "auth_body": len(auth), "answer": "nak"}
        self.ntp_requests.append(seen)
        ok = aead is not None and self.derivation != "nak-all"
        if ok:
            try:
                if aead == 30:
                    AESGCMSIV(c2s).decrypt(nonce, ciphertext, pkt[:auth_start])
                else:
                    AESSIV(c2s).decrypt(ciphertext, [pkt[:auth_start], nonce])
            except (InvalidTag, ValueError):
                ok = False
        now = time.time_ns()
        ntp_now = ((now // 10**9 + NTP_UNIX) << 32) | ((now % 10**9 << 32) // 10**9)
        stratum, refid = (1, b"GPS\x00") if ok else (0, b"NTSN")
        header = struct.pack(
            "!BBbbII4sQ8sQQ", 0x24, stratum, 4, -20, 0, 0, refid, ntp_now, pkt[40:48], ntp_now, ntp_now
        )
        body = header + struct.pack("!HH", 0x0104, 4 + len(uid)) + uid
        if not ok:
            return body
        seen["answer"] = "ok"
        new_cookie = os.urandom(len(cookie))
        self.cookies[new_cookie] = (aead, c2s, s2c)
        plaintext = struct.pack("!HH", 0x0204, 4 + len(new_cookie)) + new_cookie
        if aead == 30:
            nonce = os.urandom(12)
            sealed = AESGCMSIV(s2c).encrypt(nonce, plaintext, body)
        else:
            nonce = os.urandom(16)
            sealed = AESSIV(s2c).encrypt(plaintext, [body, nonce])
        auth_body = struct.pack("!HH", len(nonce), len(sealed)) + nonce + sealed + b"\x00" * (-len(sealed) % 4)
        return body + struct.pack("!HH", 0x0404, 4 + len(auth_body)) + auth_body

    def close(self):
        self.stop.set()
        self.listener.close()
        self.udp.close()
        for t in self.threads:
            t.join(2)


class Lab:
    def __init__(self):
        self.dir = make_shared_dir(prefix="nts-aead-test-")
        self.ca = CertificateAuthority(self.dir, name="aead")
        self.made = []

    def fake(self, derivation, aeads=(30, 15)):
        server = FakeNtsServer(self.ca, derivation, aeads)
        self.made.append(server)
        return server

    def close(self):
        for thing in reversed(self.made):
            (thing.close if isinstance(thing, FakeNtsServer) else thing.cleanup)()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def chrony43(lab):
    addr = unique_loopback_address()
    srv = NtsServer.create(lab.ca.issue("chrony", dns_names=[NAME], ips=[addr]), address=addr, name="chrony")
    lab.made.append(srv)
    return srv.start()


def probe(server, lab, **kwargs):
    kwargs.setdefault("ca_file", str(lab.ca.cert_path))
    kwargs.setdefault("timeout", 3)
    return nts_client.probe(NAME, server.ntsport, address=server.address, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# chronyd 4.3: no AES-128-GCM-SIV


def test_chrony_43_negotiates_15_when_30_is_offered_first(chrony43, lab):
    r = probe(chrony43, lab)
    assert r["ok"] is True, r
    assert r["aeads_offered"] == [30, 15]
    assert (r["aead"], r["aead_name"]) == (15, "AEAD_AES_SIV_CMAC_256")
    assert (r["compliant_exporter"], r["exporter_context"], r["exporter_retry"]) == (False, 15, False)
    assert r["aead_note"] is None
    assert r["ignored_records"] == []  # 4.3 ignores our record 1024 and sends none back


def test_chrony_43_refuses_30_alone(chrony43, lab):
    r = probe(chrony43, lab, aeads=[30])
    assert (r["ok"], r["stage"]) == (False, "nts-ke"), r
    assert r["error"] == "server accepts none of the offered AEAD algorithms 30 (empty AEAD record)"


def test_chrony_43_with_15_only(chrony43, lab):
    r = probe(chrony43, lab, aeads=[15])
    assert r["ok"] is True and r["aead"] == 15 and r["aeads_offered"] == [15], r


# ---------------------------------------------------------------------------------------------------------------
# the key-derivation variants


def test_compliant_server_echoes_1024_and_keys_use_context_30(lab):
    server = lab.fake("chrony-4.6.1")
    r = probe(server, lab)
    assert r["ok"] is True, r
    assert (r["aead"], r["aead_name"]) == (30, "AEAD_AES_128_GCM_SIV")
    assert (r["compliant_exporter"], r["exporter_context"], r["exporter_retry"], r["aead_note"]) == (
        True,
        30,
        False,
        None,
    )
    assert (r["cookies"], r["cookie_length"], r["ntp_cookies"]) == (8, 64, 1)
    assert server.ke_requests == [{"aeads": [30, 15], "record_1024": True, "chosen": 30, "context": 30}]
    # 12-byte nonce, 16-byte tag, no additional padding: a 32-byte authenticator body
    assert server.ntp_requests == [{"aead": 30, "nonce_length": 12, "auth_body": 32, "answer": "ok"}]


def test_compliant_server_not_asked_for_1024_uses_context_15(lab):
    server = lab.fake("chrony-4.6.1")
    r = probe(server, lab, compliant_exporter=False)
    assert r["ok"] is True, r
    assert (r["aead"], r["compliant_exporter"], r["exporter_context"], r["exporter_retry"]) == (30, False, 15, False)
    assert "did not echo record 1024" in r["aead_note"]
    assert server.ke_requests[0]["record_1024"] is False


def test_pre_461_chrony_keys_use_context_15_with_a_16_byte_key(lab):
    server = lab.fake("chrony-4.4")
    r = probe(server, lab)
    assert r["ok"] is True, r
    assert (r["aead"], r["compliant_exporter"], r["exporter_context"], r["exporter_retry"]) == (30, False, 15, False)
    assert r["aead_note"].startswith("the server did not echo record 1024: AES-128-GCM-SIV keys derived with ")
    assert "chrony 4.4 to 4.6" in r["aead_note"]
    assert server.ke_requests[0] == {"aeads": [30, 15], "record_1024": True, "chosen": 30, "context": 15}
    assert [q["answer"] for q in server.ntp_requests] == ["ok"]


def test_rfc_server_without_1024_nak_then_retry_with_context_30(lab):
    server = lab.fake("rfc-silent")
    r = probe(server, lab)
    assert r["ok"] is True, r
    assert (r["aead"], r["compliant_exporter"], r["exporter_context"], r["exporter_retry"]) == (30, False, 30, True)
    assert "answered the request keyed with exporter context id 15 (the pre-4.6.1 chrony derivation)" in r["aead_note"]
    assert r["aead_note"].endswith("the server uses the RFC 8915 key derivation without announcing it")
    assert [q["answer"] for q in server.ntp_requests] == ["nak", "ok"]
    assert len(server.ke_requests) == 1  # one key exchange, the second request used the next cookie


def test_forced_context_30_against_pre_461_chrony_names_the_old_derivation(lab):
    server = lab.fake("chrony-4.4")
    r = probe(server, lab, exporter_context=30)
    assert r["ok"] is True, r
    assert (r["exporter_context"], r["exporter_retry"]) == (15, True)
    assert r["aead_note"].endswith("the server uses the pre-4.6.1 chrony key derivation")
    assert [q["answer"] for q in server.ntp_requests] == ["nak", "ok"]


def test_nak_to_both_derivations_is_one_clear_failure(lab):
    server = lab.fake("nak-all")
    r = probe(server, lab, compliant_exporter=False)
    assert (r["ok"], r["stage"], r["nak"], r["exporter_retry"]) == (False, "authentication", True, True), r
    assert "NTS NAK (kiss code NTSN) to requests keyed with both AES-128-GCM-SIV key derivations" in r["error"]
    assert "did not echo record 1024" in r["error"] and "aeads [15]" in r["error"]
    assert len(server.ntp_requests) == 2


def test_nak_after_confirmed_1024_is_not_retried(lab):
    server = lab.fake("nak-all")
    r = probe(server, lab)
    assert (r["ok"], r["stage"], r["nak"], r["exporter_retry"]) == (False, "authentication", True, False), r
    assert r["error"].endswith("which the server confirmed with record 1024)")
    assert len(server.ntp_requests) == 1


def test_bogus_cookie_is_not_retried(lab):
    server = lab.fake("chrony-4.4")
    r = probe(server, lab, cookie_override=os.urandom(64))
    assert (r["ok"], r["nak"], r["exporter_retry"]) == (False, True, False), r
    assert "because the server did not echo record 1024" in r["error"]


def test_siv_only_server_negotiates_15_and_ignores_1024(lab):
    server = lab.fake("chrony-4.6.1", aeads=(15,))
    r = probe(server, lab)
    assert r["ok"] is True, r
    assert (r["aead"], r["compliant_exporter"], r["exporter_context"], r["aead_note"]) == (15, False, 15, None)
    assert server.ntp_requests == [{"aead": 15, "nonce_length": 16, "auth_body": 36, "answer": "ok"}]


def test_offering_15_only_sends_neither_30_nor_1024(lab):
    server = lab.fake("chrony-4.6.1")
    r = probe(server, lab, aeads=[15])
    assert r["ok"] is True and r["aead"] == 15, r
    assert server.ke_requests == [{"aeads": [15], "record_1024": False, "chosen": 15, "context": 15}]


def test_preference_order_is_the_clients(lab):
    server = lab.fake("chrony-4.6.1")
    r = probe(server, lab, aeads=[15, 30])
    assert r["ok"] is True and r["aead"] == 15, r
    assert server.ke_requests[0]["aeads"] == [15, 30] and server.ke_requests[0]["record_1024"] is True


# ---------------------------------------------------------------------------------------------------------------
# through the module, the action plugin and the CLI


def run_module(args, action):
    cmd = [str(ANSIBLE), "localhost", *LOCAL, "-m", "nts.chrony.nts_probe", "-a", json.dumps(args)]
    if not action:
        cmd += ["-B", "60", "-P", "1"]  # async: the action plugin runs the module itself
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=module_env(), cwd=CWD, check=False)
    try:
        data = json.loads(out.stdout)
    except ValueError:
        raise AssertionError(
            "ansible printed no JSON (rc %d): %s %s" % (out.returncode, out.stdout, out.stderr)
        ) from None
    return out.returncode, data["plays"][0]["tasks"][0]["hosts"]["localhost"]


@pytest.mark.parametrize("action", [False, True], ids=["module", "action-plugin"])
def test_module_aeads_option(lab, chrony43, action):
    server = lab.fake("chrony-4.6.1")
    servers = [
        {"host": NAME, "port": server.ntsport, "address": server.address},
        {"host": NAME, "port": chrony43.ntsport, "address": chrony43.address},
    ]
    base = {"servers": servers, "ca_file": str(lab.ca.cert_path), "timeout": 3}
    rc, res = run_module(base, action)
    assert rc == 0, res
    assert [(r["aead"], r["aead_name"], r["compliant_exporter"]) for r in res["results"]] == [
        (30, "AEAD_AES_128_GCM_SIV", True),
        (15, "AEAD_AES_SIV_CMAC_256", False),
    ]
    assert all(r["aeads_offered"] == [30, 15] for r in res["results"])
    rc, res = run_module(dict(base, aeads=[15]), action)
    assert rc == 0 and [r["aead"] for r in res["results"]] == [15, 15], res
    rc, res = run_module(dict(base, aeads=[30], min_ok=1, fail_on_error=False), action)
    assert rc == 0, res
    assert [r["ok"] for r in res["results"]] == [True, False]
    assert "none of the offered AEAD algorithms 30" in res["results"][1]["error"]
    rc, res = run_module(dict(base, aeads=[16]), action)
    assert rc != 0 and "aeads: AEAD id 16 is not supported" in res["msg"]


def test_cli_aead_option(lab, chrony43):
    server = lab.fake("chrony-4.6.1")
    common = [str(CLI), "--ca-file", str(lab.ca.cert_path), "--timeout", "3", "--address", server.address]
    out = subprocess.run([*common, "--json", "%s:%d" % (NAME, server.ntsport)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    r = json.loads(out.stdout)["results"][0]
    assert (r["aead"], r["aead_name"], r["exporter_context"]) == (30, "AEAD_AES_128_GCM_SIV", 30)
    out = subprocess.run([*common, "--aead", "15", "%s:%d" % (NAME, server.ntsport)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[1].split()[2] == "15"  # the AEAD column
    out = subprocess.run(
        [str(CLI), "--ca-file", str(lab.ca.cert_path), "--aead", "30", "%s:%d" % (chrony43.address, chrony43.ntsport)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "none of the offered AEAD algorithms 30" in out.stdout


# ---------------------------------------------------------------------------------------------------------------
# a Python whose cryptography has no AESGCMSIV: Debian 12's own (python3-cryptography 38.0.4, python3-openssl 23)

SYSTEM_PYTHON = os.environ.get("CHRONY_NTS_OLD_CRYPTO_PYTHON", "/usr/bin/python3")
PROBE_SCRIPT = """
import json, sys
from ansible_collections.nts.chrony.plugins.module_utils import nts_prober
import cryptography
out = {"cryptography": cryptography.__version__, "results": []}
for address, port in json.loads(sys.argv[1]):
    out["results"].append(nts_prober.probe(sys.argv[2], port, address=address, ca_file=sys.argv[3], timeout=3))
print(json.dumps(out))
"""


def old_crypto_python():
    check = "import cryptography, OpenSSL; from cryptography.hazmat.primitives.ciphers.aead import AESSIV; " + (
        "import cryptography.hazmat.primitives.ciphers.aead as a; print(hasattr(a, 'AESGCMSIV'))"
    )
    try:
        out = subprocess.run([SYSTEM_PYTHON, "-c", check], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        out = None
    if out is None or out.returncode != 0 or out.stdout.strip() != "False":
        pytest.skip("%s is not a Python with cryptography and pyOpenSSL but without AESGCMSIV" % SYSTEM_PYTHON)
    return SYSTEM_PYTHON


def test_probe_on_a_python_without_aesgcmsiv(lab, chrony43):
    """Debian 12's system Python: AEAD 30 is not offered, the results say why, and the AES-SIV exchange works (its
    cryptography 38 cannot seal an empty plaintext with AESSIV, which every NTS request needs: S2V does it)."""
    python = old_crypto_python()
    gcm = lab.fake("chrony-4.6.1")
    targets = [[chrony43.address, chrony43.ntsport], [gcm.address, gcm.ntsport]]
    out = subprocess.run(
        [python, "-c", PROBE_SCRIPT, json.dumps(targets), NAME, str(lab.ca.cert_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(REPO / ".collections")),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(out.stdout)
    for r in data["results"]:
        assert r["ok"] is True, (data["cryptography"], r["stage"], r["error"])
        assert (r["aead"], r["aeads_offered"]) == (15, [15])
        assert "AEAD 30 (AEAD_AES_128_GCM_SIV) not offered: cryptography %s" % data["cryptography"] in r["aead_note"]
    assert gcm.ke_requests == [{"aeads": [15], "record_1024": False, "chosen": 15, "context": 15}]
