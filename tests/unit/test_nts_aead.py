"""AEAD_AES_128_GCM_SIV (id 30) next to AEAD_AES_SIV_CMAC_256 (id 15): RFC 8452 vectors, packet layout, record 1024,
the exporter context chosen for chrony's key-derivation quirk, and what happens where AESGCMSIV is missing.

The RFC 8452 Appendix C.1 vectors below are AEAD_AES_128_GCM_SIV's (16-byte key, 12-byte nonce); "Result" is
ciphertext || 16-byte tag. They pin our argument order (nonce, plaintext, one associated data string) and that the tag
is APPENDED for GCM-SIV (AES-SIV prepends it).
"""

from __future__ import annotations

import struct

import pytest
from ansible_collections.nts.chrony.plugins.module_utils import nts_ntp, nts_prober
from ansible_collections.nts.chrony.plugins.module_utils.nts_ke import NTSError
from ansible_collections.nts.chrony.plugins.module_utils.nts_tls import MissingDependencyError
from cryptography.exceptions import InternalError, InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV, AESSIV

from tests.lib.collection import nts_client

GCM_SIV = 30
SIV = 15

# RFC 8452 Appendix C.1 (AEAD_AES_128_GCM_SIV): key, nonce, AAD, plaintext, result (ciphertext || tag)
RFC8452_C1 = [
    pytest.param(
        "01000000000000000000000000000000",
        "030000000000000000000000",
        "",
        "",
        "dc20e2d83f25705bb49e439eca56de25",
        id="empty-plaintext",
    ),
    pytest.param(
        "01000000000000000000000000000000",
        "030000000000000000000000",
        "",
        "0100000000000000",
        "b5d839330ac7b786578782fff6013b815b287c22493a364c",
        id="8-byte-plaintext",
    ),
    pytest.param(
        "01000000000000000000000000000000",
        "030000000000000000000000",
        "",
        "010000000000000000000000",
        "7323ea61d05932260047d942a4978db357391a0bc4fdec8b0d106639",
        id="12-byte-plaintext",
    ),
    pytest.param(
        "01000000000000000000000000000000",
        "030000000000000000000000",
        "",
        "01000000000000000000000000000000",
        "743f7c8077ab25f8624e2e948579cf77303aaf90f6fe21199c6068577437a0c4",
        id="16-byte-plaintext",
    ),
    pytest.param(
        "01000000000000000000000000000000",
        "030000000000000000000000",
        "01",
        "0200000000000000",
        "1e6daba35669f4273b0a1a2560969cdf790d99759abd1508",
        id="8-byte-plaintext-1-byte-aad",
    ),
    pytest.param(
        "e66021d5eb8e4f4066d4adb9c33560e4",
        "f46e44bb3da0015c94f70887",
        "",
        "",
        "a4194b79071b01a87d65f706e3949578",
        id="random-key-empty",
    ),
    pytest.param(
        "36864200e0eaf5284d884a0e77d31646",
        "bae8e37fc83441b16034566b",
        "46bb91c3c5",
        "7a806c",
        "af60eb711bd85bc1e4d3e0a462e074eea428a8",
        id="random-key-3-byte-plaintext",
    ),
    pytest.param(
        "aedb64a6c590bc84d1a5e269e4b47801",
        "afc0577e34699b9e671fdd4f",
        "fc880c94a95198874296",
        "bdc66f146545",
        "bb93a3e34d3cd6a9c45545cfc11f03ad743dba20f966",
        id="random-key-6-byte-plaintext",
    ),
]


@pytest.mark.parametrize(("key", "nonce", "aad", "plaintext", "result"), RFC8452_C1)
def test_rfc8452_c1_vectors_seal_and_open(key, nonce, aad, plaintext, result):
    key, nonce, aad = bytes.fromhex(key), bytes.fromhex(nonce), bytes.fromhex(aad)
    plaintext, result = bytes.fromhex(plaintext), bytes.fromhex(result)
    ad = [aad] if aad else []
    sealed = nts_client.aead_seal(key, plaintext, ad, nonce, GCM_SIV)
    assert sealed == result
    assert len(sealed) == len(plaintext) + 16  # the tag is appended
    assert nts_client.aead_open(key, result, ad, nonce, GCM_SIV) == plaintext
    # the same vector straight through cryptography, so the test also says what the library itself returns
    assert AESGCMSIV(key).encrypt(nonce, plaintext, aad or None) == result


def test_empty_associated_data_string_equals_none():
    key, nonce = bytes.fromhex("01000000000000000000000000000000"), bytes.fromhex("030000000000000000000000")
    assert nts_client.aead_seal(key, b"", [b""], nonce, GCM_SIV) == bytes.fromhex("dc20e2d83f25705bb49e439eca56de25")


@pytest.mark.parametrize("index", [0, 7, 8, 23])
def test_gcm_siv_any_flipped_bit_fails(index):
    key, nonce = bytes.fromhex("01000000000000000000000000000000"), bytes.fromhex("030000000000000000000000")
    tampered = bytearray.fromhex("1e6daba35669f4273b0a1a2560969cdf790d99759abd1508")
    tampered[index] ^= 0x80
    with pytest.raises(InvalidTag):
        nts_client.aead_open(key, bytes(tampered), [b"\x01"], nonce, GCM_SIV)


def test_gcm_siv_wrong_associated_data_fails():
    key, nonce = bytes.fromhex("01000000000000000000000000000000"), bytes.fromhex("030000000000000000000000")
    with pytest.raises(InvalidTag):
        nts_client.aead_open(key, bytes.fromhex("1e6daba35669f4273b0a1a2560969cdf790d99759abd1508"), [], nonce, 30)


@pytest.mark.parametrize(
    ("aead", "key", "nonce", "ad", "match"),
    [
        (GCM_SIV, bytes(32), bytes(12), [b"x"], "needs a 16-byte key, got 32"),
        (SIV, bytes(16), bytes(16), [b"x"], "needs a 32-byte key, got 16"),
        (GCM_SIV, bytes(16), bytes(16), [b"x"], "needs a 12-byte nonce, got 16"),
        (GCM_SIV, bytes(16), None, [b"x"], "needs a 12-byte nonce, got None"),
        (GCM_SIV, bytes(16), bytes(12), [b"x", b"y"], "one associated data string, got 2"),
        (17, bytes(64), bytes(16), [b"x"], "unsupported AEAD 17"),
    ],
)
def test_seal_argument_errors(aead, key, nonce, ad, match):
    with pytest.raises(ValueError, match=match):
        nts_client.aead_seal(key, b"", ad, nonce, aead)


def test_siv_default_is_unchanged():
    """Callers that pass no AEAD still get AES-SIV-CMAC-256 (tag first, nonce last in the AD list)."""
    out = nts_client.aead_seal(bytes(32), b"abc", [b"ad"], bytes(16))
    assert out == nts_client.aead_seal(bytes(32), b"abc", [b"ad"], bytes(16), SIV)
    assert nts_client.aead_open(bytes(32), out, [b"ad"], bytes(16), SIV) == b"abc"


# ---------------------------------------------------------------------------------------------------------------
# packets


def test_additional_padding_rule():
    assert nts_client.additional_padding(SIV, 16) == 0
    assert nts_client.additional_padding(GCM_SIV, 12) == 0  # N_REQ = min(16, N_MAX 12) = 12
    assert nts_client.additional_padding(SIV, 12) == 4
    assert nts_client.additional_padding(SIV, 13) == 0  # padded to 16 already


def test_gcm_siv_request_layout_and_server_side_check():
    key, uid, xmit, nonce, cookie = bytes(range(16)), bytes(range(32)), bytes(8), bytes(range(12)), b"K" * 64
    pkt = nts_client.build_ntp_request(cookie, key, uid, xmit, nonce, aead=GCM_SIV)
    # 48 header + 36 UID + 68 cookie + auth EF 4 + 4 + 12 nonce + 16 tag = 188 bytes (< 200, chrony's goal)
    assert len(pkt) == 188
    auth = pkt[-36:]
    assert struct.unpack("!HHHH", auth[:8]) == (0x0404, 36, 12, 16)
    assert auth[8:20] == nonce
    # what chrony checks: header + MIN(16, N_MAX) + padded ciphertext fits the EF body (32 bytes)
    assert 4 + min(16, 12) + 16 <= 32
    assert AESGCMSIV(key).decrypt(nonce, auth[20:36], pkt[:-36]) == b""


def test_siv_request_refuses_short_nonce():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        nts_client.build_ntp_request(b"K" * 100, bytes(32), bytes(32), bytes(8), bytes(12))


def _gcm_response(key, uid, xmit, nonce_len=12, cookies=(b"N" * 64,)):
    header = struct.pack("!BBbbII4s8s8sQQ", 0x24, 1, 4, -20, 0, 0, b"GPS\x00", bytes(8), xmit, 1 << 32, 2 << 32)

    def ef(t, b):
        b += b"\x00" * (-len(b) % 4)
        return struct.pack("!HH", t, len(b) + 4) + b

    body = header + ef(0x0104, uid)
    nonce = bytes(range(nonce_len))
    plaintext = b"".join(ef(0x0204, c) for c in cookies)
    if nonce_len == 12:
        ct = AESGCMSIV(key).encrypt(nonce, plaintext, body)
    else:
        ct = bytes(len(plaintext) + 16)
    return body + ef(0x0404, struct.pack("!HH", nonce_len, len(ct)) + nonce + b"\x00" * (-nonce_len % 4) + ct)


def test_gcm_siv_response_decrypts_and_yields_cookies():
    key, uid, xmit = bytes(range(16, 32)), bytes(range(32)), bytes(range(8))
    resp = nts_client.parse_ntp_response(_gcm_response(key, uid, xmit), key, uid, xmit, GCM_SIV)
    assert resp["cookies"] == [b"N" * 64]
    with pytest.raises(NTSError, match=r"does not verify with the S2C key \(AEAD_AES_128_GCM_SIV") as err:
        nts_client.parse_ntp_response(_gcm_response(key, uid, xmit), bytes(16), uid, xmit, GCM_SIV)
    assert err.value.stage == "authentication"


def test_gcm_siv_response_with_wrong_nonce_length_is_malformed():
    key, uid, xmit = bytes(16), bytes(32), bytes(8)
    with pytest.raises(NTSError, match="needs a 12-byte nonce, the response has 16"):
        nts_client.parse_ntp_response(_gcm_response(key, uid, xmit, nonce_len=16), key, uid, xmit, GCM_SIV)


# ---------------------------------------------------------------------------------------------------------------
# NTS-KE: record 1024 and the exporter context


def test_request_offering_30_carries_record_1024():
    # Next Protocol 0 | AEAD 30, 15 | 1024 (C=0, empty) | End of Message: what chrony >= 4.6.1 sends
    assert nts_client.build_ke_request([30, 15]).hex() == "80010002000080040004001e000f0400000080000000"
    # offered but switched off, or not offered at all: no 1024
    assert (
        nts_client.build_ke_request([30, 15], compliant_exporter=False).hex() == "80010002000080040004001e000f80000000"
    )
    assert nts_client.build_ke_request([15]).hex() == "80010002000080040002000f80000000"
    assert (
        nts_client.build_ke_request([15], compliant_exporter=True).hex() == "80010002000080040002000f0400000080000000"
    )


@pytest.mark.parametrize("aeads", [[], ["15"], [True], [70000]])
def test_request_refuses_bad_aead_lists(aeads):
    with pytest.raises(ValueError):
        nts_client.build_ke_request(aeads)


def _records(*parts):
    return nts_client.decode_ke_message(b"".join(parts))


NEXT = nts_client.encode_record(1, b"\x00\x00", critical=True)
COOKIE = nts_client.encode_record(5, b"C" * 64)
EOM = nts_client.encode_record(0, critical=True)


def test_echoed_1024_means_compliant_exporter():
    aead30 = nts_client.encode_record(4, b"\x00\x1e", critical=True)
    echo = nts_client.encode_record(1024)
    ke = nts_client.interpret_ke_response(_records(NEXT, aead30, echo, COOKIE, EOM), (30, 15))
    assert (ke["aead"], ke["compliant_exporter"], ke["ignored"]) == (30, True, [])
    ke = nts_client.interpret_ke_response(_records(NEXT, aead30, COOKIE, EOM), (30, 15))
    assert (ke["aead"], ke["compliant_exporter"]) == (30, False)


def test_non_empty_1024_is_malformed():
    aead30 = nts_client.encode_record(4, b"\x00\x1e", critical=True)
    with pytest.raises(NTSError, match="malformed Compliant AES-128-GCM-SIV Exporter Context record"):
        nts_client.interpret_ke_response(
            _records(NEXT, aead30, nts_client.encode_record(1024, b"\x00\x01"), COOKIE, EOM), (30, 15)
        )


def test_server_choosing_30_when_only_15_was_offered_is_refused():
    aead30 = nts_client.encode_record(4, b"\x00\x1e", critical=True)
    with pytest.raises(NTSError, match=r"chose AEAD \[30\], which was not offered"):
        nts_client.interpret_ke_response(_records(NEXT, aead30, COOKIE, EOM), (15,))


@pytest.mark.parametrize(
    ("aead", "compliant", "expected"),
    [(30, True, 30), (30, False, 15), (15, True, 15), (15, False, 15)],
)
def test_exporter_context_id(aead, compliant, expected):
    assert nts_client.exporter_aead(aead, compliant) == expected


class RecordingConnection:
    def __init__(self):
        self.calls = []

    def export_keying_material(self, label, length, context):
        self.calls.append((label, length, context.hex()))
        return bytes(length)


@pytest.mark.parametrize(
    ("aead", "context_aead", "length", "ctx"),
    [(30, None, 16, "0000001e"), (30, 15, 16, "0000000f"), (15, None, 32, "0000000f")],
)
def test_export_keys_length_follows_the_aead_and_the_context_may_not(aead, context_aead, length, ctx):
    conn = RecordingConnection()
    c2s, s2c = nts_client.export_keys(conn, aead, context_aead)
    assert len(c2s) == len(s2c) == length
    assert conn.calls == [
        (b"EXPORTER-network-time-security", length, ctx + "00"),
        (b"EXPORTER-network-time-security", length, ctx + "01"),
    ]


def test_exporter_contexts_to_try():
    contexts = nts_prober._exporter_contexts
    assert contexts(15, False, None, True) == [15]
    assert contexts(30, True, None, False) == [30]
    assert contexts(30, False, None, True) == [15, 30]  # chrony < 4.6.1 first, RFC 8915 after a NAK
    assert contexts(30, True, 15, True) == [15, 30]  # forced first context
    assert contexts(30, False, 30, True) == [30, 15]


# ---------------------------------------------------------------------------------------------------------------
# which AEADs are offered, and hosts without AESGCMSIV


def test_default_offers_30_then_15_here():
    assert nts_client.default_aeads() == [30, 15]
    assert nts_client.choose_aeads() == ([30, 15], None)
    assert nts_client.choose_aeads([15]) == ([15], None)
    assert nts_client.choose_aeads((15, 30)) == ([15, 30], None)


@pytest.mark.parametrize(
    ("aeads", "match"),
    [
        ([], "at least one"),
        ([17], "AEAD id 17 is not supported"),
        ([15, 15], "listed twice"),
        (["30"], "not an integer"),
        ([True], "not an integer"),
        ("30", "must be a list"),
    ],
)
def test_choose_aeads_errors(aeads, match):
    with pytest.raises(ValueError, match=match):
        nts_client.choose_aeads(aeads)


@pytest.fixture
def no_gcm_siv(monkeypatch):
    """This host as Debian 12's python3-cryptography 38 leaves it: no AESGCMSIV (the answer cache emptied)."""
    monkeypatch.setattr(nts_ntp, "AESGCMSIV", None)
    monkeypatch.setattr(nts_ntp, "_AEAD_UNAVAILABLE", {})
    monkeypatch.setattr(nts_ntp, "_cryptography_version", lambda: "38.0.4")


def test_without_aesgcmsiv_only_15_is_offered_and_the_note_says_why(no_gcm_siv):
    assert nts_client.default_aeads() == [15]
    offered, note = nts_client.choose_aeads()
    assert offered == [15]
    assert note.startswith("AEAD 30 (AEAD_AES_128_GCM_SIV) not offered: cryptography 38.0.4 on this host has no ")
    assert "AESGCMSIV" in note
    assert nts_client.choose_aeads([30, 15]) == ([15], note)
    with pytest.raises(MissingDependencyError, match="cannot offer any of the requested AEADs"):
        nts_client.choose_aeads([30])


def test_without_aesgcmsiv_a_probe_result_says_why(no_gcm_siv, monkeypatch):
    """The note is in the result even when the probe fails early (here: DNS, replaced so nothing leaves the host)."""

    def no_dns(host, *_args, **_kwargs):
        raise NTSError("dns", "cannot resolve %r: test" % host)

    monkeypatch.setattr(nts_prober, "resolve", no_dns)
    r = nts_client.probe("nts.invalid", timeout=1)
    assert (r["ok"], r["stage"], r["aeads_offered"]) == (False, "dns", [15])
    assert "cryptography 38.0.4" in r["aead_note"]


def test_openssl_without_gcm_siv_is_detected(monkeypatch):
    """A cryptography whose OpenSSL lacks AES-GCM-SIV has the class but refuses it: that is 'unavailable' too."""

    class Refusing:
        def __init__(self, key):
            raise RuntimeError("AES-GCM-SIV is not supported by this version of OpenSSL")

    monkeypatch.setattr(nts_ntp, "AESGCMSIV", Refusing)
    monkeypatch.setattr(nts_ntp, "_AEAD_UNAVAILABLE", {})
    reason = nts_client.aead_unavailable(30)
    assert "cannot use AESGCMSIV: AES-GCM-SIV is not supported by this version of OpenSSL" in reason
    assert nts_client.default_aeads() == [15]


def _task(**params):
    p = dict(
        servers=["nts.invalid"],
        ca_file=None,
        no_cert_time_check=False,
        timeout=1.0,
        concurrency=1,
        fail_on_error=True,
        min_ok=1,
        aeads=None,
    )
    p.update(params)
    return p


@pytest.mark.parametrize(
    ("aeads", "match"),
    [([17], "aeads: AEAD id 17 is not supported"), ([15, 15], "listed twice"), ([], "at least one")],
)
def test_task_refuses_bad_aeads_up_front(aeads, match, monkeypatch):
    monkeypatch.setattr(nts_prober, "probe_many", lambda *a, **k: pytest.fail("must not probe"))
    out, failure, _warnings = nts_prober.run_probe_task(_task(aeads=aeads))
    assert match in failure and out["results"] == []


def test_task_without_aesgcmsiv(no_gcm_siv, monkeypatch):
    seen = []

    def fake_probe_many(specs, **kwargs):
        seen.append(kwargs["aeads"])
        return []

    monkeypatch.setattr(nts_prober, "probe_many", fake_probe_many)
    _out, failure, _warnings = nts_prober.run_probe_task(_task(aeads=[30]))
    assert failure.startswith("aeads: NTS probe cannot offer any of the requested AEADs: AEAD 30")
    _out, _failure, warnings = nts_prober.run_probe_task(_task(aeads=[30, 15], min_ok=0))
    assert seen == [[30, 15]] and len(warnings) == 1 and "cryptography 38.0.4" in warnings[0]
    _out, _failure, warnings = nts_prober.run_probe_task(_task(min_ok=0))
    assert seen[-1] is None and warnings == []  # the default says it per result, not as a warning


def test_argument_spec_and_module_docs_agree():
    import yaml
    from ansible_collections.nts.chrony.plugins.modules import nts_probe

    assert nts_prober.PROBE_ARGUMENT_SPEC["aeads"] == {"type": "list", "elements": "int"}
    doc = yaml.safe_load(nts_probe.DOCUMENTATION)
    assert doc["options"]["aeads"]["type"] == "list" and doc["options"]["aeads"]["elements"] == "int"
    ret = yaml.safe_load(nts_probe.RETURN)["results"]["contains"]
    new = {
        "aead",
        "aead_name",
        "aeads_offered",
        "aead_note",
        "compliant_exporter",
        "exporter_context",
        "exporter_retry",
    }
    assert new <= set(nts_prober._result_template("h", 4460, None, "h"))
    assert new <= set(ret)


def test_cli_aead_option(monkeypatch, capsys, no_gcm_siv):
    from ansible_collections.nts.chrony.plugins.plugin_utils import probe_cli

    assert probe_cli.aead_list("30,15") == [30, 15]
    calls = []

    def fake_probe_many(specs, **kwargs):
        calls.append(kwargs["aeads"])
        failed = nts_prober._result_template("a.test", 4460, None, "a.test")
        failed.update(stage="dns", error="not resolved in this test")
        return [failed]

    monkeypatch.setattr(nts_prober, "probe_many", fake_probe_many)
    assert probe_cli.main(["--aead", "30", "--aead", "15", "a.test"]) == 2
    assert calls == [[30, 15]]
    assert "AEAD 30 (AEAD_AES_128_GCM_SIV) not offered" in capsys.readouterr().err
    assert probe_cli.main(["--aead", "30", "a.test"]) == 3
    assert "cannot offer any of the requested AEADs" in capsys.readouterr().err
    assert probe_cli.main(["--aead", "17", "a.test"]) == 3
    assert "--aead: AEAD id 17 is not supported" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# AES-SIV with an empty plaintext (every NTS request): cryptography 38 (Debian 12) cannot, S2V fills in


@pytest.mark.parametrize("key_length", [32, 48, 64])
@pytest.mark.parametrize("components", [0, 1, 2, 3])
def test_siv_of_empty_plaintext_equals_aessiv(key_length, components):
    key = bytes(range(key_length))
    ad = [bytes([i]) * (7 + 13 * i) for i in range(components)]
    assert nts_client.siv_of_empty_plaintext(key, ad) == AESSIV(key).encrypt(b"", ad or None)


class AessivLike38:
    """cryptography 38.0.4 with OpenSSL 3.0: InternalError sealing an empty plaintext, InvalidTag opening one."""

    def __init__(self, key):
        self.real = AESSIV(key)

    def encrypt(self, data, associated_data):
        if not data:
            raise InternalError("Unknown OpenSSL error.", [])
        return self.real.encrypt(data, associated_data)

    def decrypt(self, data, associated_data):
        if len(data) == 16:
            raise InvalidTag()
        return self.real.decrypt(data, associated_data)


def test_requests_are_sealed_where_aessiv_refuses_empty_plaintexts(monkeypatch):
    key, uid, xmit, nonce = bytes(range(32)), bytes(range(32)), bytes(8), bytes(range(16))
    expected = nts_client.build_ntp_request(b"K" * 100, key, uid, xmit, nonce)
    monkeypatch.setattr(nts_ntp, "AESSIV", AessivLike38)
    pkt = nts_client.build_ntp_request(b"K" * 100, key, uid, xmit, nonce)
    assert pkt == expected
    assert AESSIV(key).decrypt(pkt[-16:], [pkt[:-40], nonce]) == b""  # the real library accepts it
    assert nts_client.aead_open(key, pkt[-16:], [pkt[:-40]], nonce) == b""
    with pytest.raises(InvalidTag):
        nts_client.aead_open(key, bytes(16), [pkt[:-40]], nonce)
    with pytest.raises(InternalError):  # only the empty plaintext is worked around
        AessivLike38(key).encrypt(b"", [b"x"])
    assert nts_client.aead_seal(key, b"abc", [b"x"], nonce) == AESSIV(key).encrypt(b"abc", [b"x", nonce])
