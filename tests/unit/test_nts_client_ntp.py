"""NTS-protected NTPv4 packets: request layout and every response check.

The server side is written here independently of nts_client (its own header packing, extension fields and AES-SIV
call), so a shared mistake in both directions cannot hide.
"""

from __future__ import annotations

import os
import struct

import pytest
from ansible_collections.nts.chrony.plugins.module_utils.nts_ke import NTSError
from ansible_collections.nts.chrony.plugins.module_utils.nts_ntp import build_ntp_request, parse_ntp_response
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from tests.lib.collection import nts_client

C2S = bytes(range(32))
S2C = bytes(range(32, 64))
COOKIE = bytes(range(100))
UID = bytes(range(200, 232))
XMIT = bytes.fromhex("0123456789abcdef")
NONCE = bytes(range(16))


def ef(ftype, body):
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!HH", ftype, len(body) + 4) + body


def split_efs(data):
    out, pos = [], 48
    while pos < len(data):
        t, n = struct.unpack("!HH", data[pos : pos + 4])
        out.append((t, data[pos + 4 : pos + n], pos))
        pos += n
    return out


def server_response(
    origin=XMIT,
    uid=UID,
    key=S2C,
    stratum=1,
    leap=0,
    mode=4,
    refid=b"GPS\x00",
    new_cookies=(b"C" * 100,),
    auth=True,
    after_auth=b"",
    tamper=False,
    rx=None,
    tx=None,
):
    """An independently encoded server response (what a chrony server would send)."""
    rx = rx if rx is not None else (3913056000 << 32) | 0x80000000
    tx = tx if tx is not None else rx + 0x1000
    header = struct.pack(
        "!BBbbII4s8s8sQQ", (leap << 6) | (4 << 3) | mode, stratum, 4, -20, 0, 0, refid, bytes(8), origin, rx, tx
    )
    body = header + ef(0x0104, uid)
    if auth:
        plaintext = b"".join(ef(0x0204, c) for c in new_cookies)
        nonce = os.urandom(16)
        ct = AESSIV(key).encrypt(plaintext, [body, nonce])
        if tamper:
            ct = ct[:-1] + bytes([ct[-1] ^ 1])
        body += ef(0x0404, struct.pack("!HH", len(nonce), len(ct)) + nonce + ct + b"\x00" * (-len(ct) % 4))
    return body + after_auth


def test_request_layout_and_authenticator_verifies_server_side():
    pkt = build_ntp_request(COOKIE, C2S, UID, XMIT, NONCE)
    assert len(pkt) == 228  # 48 + 36 + 104 + 40, the size chrony sends with a 100-byte cookie
    assert pkt[0] == 0x23  # LI 0, version 4, mode 3
    assert pkt[40:48] == XMIT
    assert pkt[1:40] == bytes(39)
    efs = split_efs(pkt)
    assert [t for t, _b, _p in efs] == [0x0104, 0x0204, 0x0404]
    assert efs[0][1] == UID and efs[1][1] == COOKIE
    auth_body, auth_pos = efs[2][1], efs[2][2]
    nlen, clen = struct.unpack("!HH", auth_body[:4])
    assert (nlen, clen) == (16, 16)
    assert auth_body[4:20] == NONCE
    # what a server does: AD = everything before the authenticator, nonce last
    assert AESSIV(C2S).decrypt(auth_body[20:36], [pkt[:auth_pos], NONCE]) == b""


def test_request_placeholders_have_cookie_length():
    pkt = build_ntp_request(COOKIE, C2S, UID, XMIT, NONCE, placeholders=7)
    assert len(pkt) == 956  # chrony's request size with 7 placeholders
    efs = split_efs(pkt)
    assert [t for t, _b, _p in efs] == [0x0104, 0x0204] + [0x0304] * 7 + [0x0404]
    assert all(b == bytes(100) for t, b, _p in efs if t == 0x0304)


def test_odd_cookie_length_is_padded():
    pkt = build_ntp_request(b"abcde", C2S, UID, XMIT, NONCE)
    efs = split_efs(pkt)
    assert efs[1][1] == b"abcde\x00\x00\x00"
    assert len(pkt) % 4 == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"transmit": b"short"}, "transmit timestamp must be 8 bytes"),
        ({"uid": b"x" * 16}, "at least 32 bytes"),
        ({"placeholders": 8}, "placeholders must be 0..7"),
        ({"cookie": b""}, "cookie must not be empty"),
    ],
)
def test_request_argument_errors(kwargs, match):
    args = {"cookie": COOKIE, "c2s_key": C2S, "uid": UID, "transmit": XMIT, "nonce": NONCE}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        build_ntp_request(**args)


def test_valid_response():
    resp = parse_ntp_response(server_response(new_cookies=(b"A" * 100, b"B" * 100)), S2C, UID, XMIT)
    assert resp["mode"] == 4 and resp["stratum"] == 1 and resp["leap"] == 0
    assert resp["refid"] == b"GPS\x00"
    assert resp["cookies"] == [b"A" * 100, b"B" * 100]
    assert nts_client.format_refid(resp["refid"], 1) == "GPS"


def test_nts_nak_recognised():
    nak = server_response(stratum=0, refid=b"NTSN", auth=False)
    assert len(nak) == 84  # the size of chrony's NAK
    with pytest.raises(NTSError, match="NTS NAK") as err:
        parse_ntp_response(nak, S2C, UID, XMIT)
    assert err.value.stage == "authentication"
    assert err.value.details["nak"] is True


def test_nak_with_foreign_uid_is_not_trusted_as_ours():
    nak = server_response(stratum=0, refid=b"NTSN", auth=False, uid=b"\x01" * 32)
    with pytest.raises(NTSError, match=r"Unique Identifier .* does not match") as err:
        parse_ntp_response(nak, S2C, UID, XMIT)
    assert "nak" not in err.value.details


def test_unauthenticated_kiss_rate_is_not_a_nak():
    with pytest.raises(NTSError, match=r"no NTS Authenticator .*kiss code 'RATE'") as err:
        parse_ntp_response(server_response(stratum=0, refid=b"RATE", auth=False), S2C, UID, XMIT)
    assert err.value.stage == "authentication"
    assert "nak" not in err.value.details


def test_missing_authenticator():
    with pytest.raises(NTSError, match=r"no NTS Authenticator extension field$") as err:
        parse_ntp_response(server_response(auth=False), S2C, UID, XMIT)
    assert err.value.stage == "authentication"


def test_bad_uid():
    with pytest.raises(NTSError, match="Unique Identifier in the response does not match") as err:
        parse_ntp_response(server_response(uid=b"\x07" * 32), S2C, UID, XMIT)
    assert err.value.stage == "authentication"


def test_missing_uid():
    data = server_response()
    efs = split_efs(data)
    without_uid = data[:48] + data[efs[1][2] :]  # drop the UID field (authenticator then fails too, UID first)
    with pytest.raises(NTSError, match="no Unique Identifier"):
        parse_ntp_response(without_uid, S2C, UID, XMIT)


def test_bad_origin():
    with pytest.raises(NTSError, match=r"origin timestamp .* does not match our transmit") as err:
        parse_ntp_response(server_response(origin=b"\x00" * 8), S2C, UID, XMIT)
    assert err.value.stage == "ntp"


def test_authenticator_not_last():
    trailing = ef(0x2005, b"\x00" * 12)
    with pytest.raises(NTSError, match="not the last extension field") as err:
        parse_ntp_response(server_response(after_auth=trailing), S2C, UID, XMIT)
    assert err.value.stage == "authentication"


def test_tampered_ciphertext():
    with pytest.raises(NTSError, match="does not verify with the S2C key") as err:
        parse_ntp_response(server_response(tamper=True), S2C, UID, XMIT)
    assert err.value.stage == "authentication"


def test_tampered_header_fails_authentication():
    data = bytearray(server_response())
    data[1] = 2  # stratum changed after sealing: the header is associated data
    with pytest.raises(NTSError, match="does not verify"):
        parse_ntp_response(bytes(data), S2C, UID, XMIT)


def test_wrong_key():
    with pytest.raises(NTSError, match="does not verify"):
        parse_ntp_response(server_response(key=C2S), S2C, UID, XMIT)


@pytest.mark.parametrize("mode", [3, 5, 0])
def test_wrong_mode(mode):
    with pytest.raises(NTSError, match="mode %d, expected 4" % mode) as err:
        parse_ntp_response(server_response(mode=mode), S2C, UID, XMIT)
    assert err.value.stage == "ntp"


def test_short_packet():
    with pytest.raises(NTSError, match="shorter than an NTP header") as err:
        parse_ntp_response(b"\x24" * 47, S2C, UID, XMIT)
    assert err.value.stage == "ntp"


@pytest.mark.parametrize("bad_len", [0, 2, 6, 4000])
def test_malformed_extension_field_length(bad_len):
    data = server_response(auth=False)[:48] + struct.pack("!HH", 0x0104, bad_len) + UID
    with pytest.raises(NTSError, match="malformed extension field type 0x0104") as err:
        parse_ntp_response(data, S2C, UID, XMIT)
    assert err.value.stage == "ntp"


def test_malformed_authenticator_lengths():
    data = server_response(auth=False)
    data += ef(0x0404, struct.pack("!HH", 16, 200) + bytes(32))  # claims 200 ciphertext bytes, has 16
    with pytest.raises(NTSError, match="malformed NTS Authenticator"):
        parse_ntp_response(data, S2C, UID, XMIT)


def test_unsynchronised_server_flagged():
    resp = parse_ntp_response(server_response(stratum=0, refid=b"INIT", leap=3), S2C, UID, XMIT)
    assert resp["stratum"] == 0  # authenticated, so not a NAK
    assert nts_client.server_synchronised(resp["stratum"], resp["leap"]) is False
    assert nts_client.server_synchronised(16, 0) is False
    assert nts_client.server_synchronised(2, 3) is False
    assert nts_client.server_synchronised(2, 0) is True


def test_timestamp_conversion_round_trip_and_era_rollover():
    ns = 1_764_000_000_123_456_789
    assert abs(nts_client.ntp_to_unix_ns(nts_client.unix_ns_to_ntp(ns), ns) - ns) <= 1
    # 2036-02-07T06:28:16Z is NTP era 1 second 0: a small NTP seconds value near that date maps to era 1
    era1_start_unix = (1 << 32) - 2208988800
    pivot = era1_start_unix * 10**9
    assert nts_client.ntp_to_unix_ns(5 << 32, pivot) == (era1_start_unix + 5) * 10**9


def test_offset_formula_on_known_timestamps():
    """T1=0, T2=1.5, T3=1.6, T4=0.2 s -> offset ((1.5)+(1.4))/2 = 1.45 s, delay 0.2-0.1 = 0.1 s."""
    t1 = 1_764_000_000 * 10**9
    rx = nts_client.unix_ns_to_ntp(t1 + 1_500_000_000)
    tx = nts_client.unix_ns_to_ntp(t1 + 1_600_000_000)
    t4 = t1 + 200_000_000
    resp = parse_ntp_response(server_response(rx=rx, tx=tx), S2C, UID, XMIT)
    offset, delay = nts_client.offset_and_delay(t1, resp["receive"], resp["transmit"], t4)
    assert offset == pytest.approx(1.45, abs=1e-8)
    assert delay == pytest.approx(0.1, abs=1e-8)


def test_refid_formatting():
    assert nts_client.format_refid(b"\x7f\x7f\x01\x01", 1) == "7F7F0101"
    assert nts_client.format_refid(b"\xc0\x00\x02\x01", 2) == "192.0.2.1"
    assert nts_client.format_refid(b"INIT", 0) == "INIT"
