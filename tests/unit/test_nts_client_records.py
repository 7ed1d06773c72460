"""NTS-KE record encoding and decoding, including malformed and hostile server responses.

Byte strings marked "chrony 4.3" were captured from a real chrony 4.3 NTS-KE server on loopback (see
/work/shared/reference/nts-and-chrony.md 1.2); the rest are built record by record.
"""

from __future__ import annotations

import random
import struct

import pytest
from ansible_collections.nts.chrony.plugins.module_utils.nts_ke import (
    NTSError,
    decode_ke_message,
    encode_record,
    interpret_ke_response,
)

from tests.lib.collection import nts_client

NEXT_NTPV4 = encode_record(1, b"\x00\x00", critical=True)
AEAD_15 = encode_record(4, b"\x00\x0f", critical=True)
EOM = encode_record(0, critical=True)
COOKIE = encode_record(5, bytes(range(100)))


def response(*records):
    return b"".join(records)


def ke(data):
    return interpret_ke_response(decode_ke_message(data))


def test_request_is_byte_exact_with_chrony_client():
    assert nts_client.build_ke_request() == bytes.fromhex("8001 0002 0000 8004 0002 000f 8000 0000")


def test_encode_record_bounds():
    assert encode_record(5, b"ab") == b"\x00\x05\x00\x02ab"
    with pytest.raises(ValueError, match="record type"):
        encode_record(0x8000)
    with pytest.raises(ValueError, match="exceeds 65535"):
        encode_record(5, bytes(0x10000))


def test_chrony_response_with_port_negotiation():
    data = bytes.fromhex("8001 0002 0000 8004 0002 000f 8007 0002 5283") + COOKIE * 8 + EOM
    result = ke(data)
    assert result["aead"] == 15
    assert result["port"] == 21123
    assert result["server"] is None
    assert len(result["cookies"]) == 8 and all(len(c) == 100 for c in result["cookies"])
    assert result["ignored"] == []


def test_server_negotiation_record():
    result = ke(response(NEXT_NTPV4, AEAD_15, encode_record(6, b"ntp1.example.test", critical=True), COOKIE, EOM))
    assert result["server"] == "ntp1.example.test"
    assert result["port"] is None


@pytest.mark.parametrize("body", [b"", b"has space", b"\xff\xfe", b"tab\there"])
def test_malformed_server_negotiation(body):
    with pytest.raises(NTSError, match="malformed NTPv4 Server Negotiation") as err:
        ke(response(NEXT_NTPV4, AEAD_15, encode_record(6, body, critical=True), COOKIE, EOM))
    assert err.value.stage == "nts-ke"


@pytest.mark.parametrize(("body", "match"), [(b"\x01", "2"), (b"\x00\x01\x02", "expected 2"), (b"\x00\x00", "port 0")])
def test_malformed_port_negotiation(body, match):
    with pytest.raises(NTSError, match=match) as err:
        ke(response(NEXT_NTPV4, AEAD_15, encode_record(7, body, critical=True), COOKIE, EOM))
    assert err.value.stage == "nts-ke"


def test_truncated_header():
    with pytest.raises(NTSError, match=r"truncated inside a record header \(2 of 4 bytes\)") as err:
        decode_ke_message(NEXT_NTPV4 + b"\x80\x04")
    assert err.value.stage == "nts-ke"


def test_truncated_body():
    with pytest.raises(NTSError, match="truncated inside record type 5: 10 of 100 body bytes") as err:
        decode_ke_message(NEXT_NTPV4 + COOKIE[:14])
    assert err.value.stage == "nts-ke"


def test_missing_end_of_message():
    with pytest.raises(NTSError, match="without an End of Message"):
        decode_ke_message(response(NEXT_NTPV4, AEAD_15, COOKIE))
    with pytest.raises(NTSError, match="without an End of Message"):
        interpret_ke_response([])


def test_empty_response():
    with pytest.raises(NTSError, match="without sending an NTS-KE response"):
        decode_ke_message(b"")


def test_oversized_critical_record_rejected_from_its_header():
    reader = nts_client.KEMessageReader()
    # only the header arrives: the cap must trigger before the body is buffered
    with pytest.raises(NTSError, match=r"critical record type 6 .* 300-byte body, above the 256-byte limit"):
        reader.feed(struct.pack("!HH", 0x8006, 300))


def test_oversized_non_critical_record_skipped_like_chrony():
    big_cookie = encode_record(5, bytes(300))
    result = ke(response(NEXT_NTPV4, AEAD_15, big_cookie, COOKIE, EOM))
    assert len(result["cookies"]) == 1
    assert result["ignored"] == ["New Cookie for NTPv4 (oversized, 300 bytes)"]
    with pytest.raises(NTSError, match="no usable cookie"):
        ke(response(NEXT_NTPV4, AEAD_15, big_cookie, EOM))


def test_oversized_message_rejected():
    filler = encode_record(0x4000, bytes(200))  # unknown, non-critical, within the record cap
    data = NEXT_NTPV4 + AEAD_15 + filler * 90 + EOM  # > 16384 bytes
    assert len(data) > nts_client.MAX_MESSAGE_LENGTH
    with pytest.raises(NTSError, match="exceeds 16384 bytes without End of Message") as err:
        decode_ke_message(data)
    assert err.value.stage == "nts-ke"


def test_stream_reader_stops_at_end_of_message_and_refuses_trailing_bytes():
    reader = nts_client.KEMessageReader()
    data = response(NEXT_NTPV4, AEAD_15, COOKIE, EOM)
    # one byte at a time, as a slow server would deliver it
    done = [reader.feed(data[i : i + 1]) for i in range(len(data))]
    assert done[-1] is True and not any(done[:-1])
    assert [r.rtype for r in reader.records] == [1, 4, 5, 0]
    with pytest.raises(NTSError, match="after End of Message"):
        reader.feed(b"\x00")
    with pytest.raises(NTSError, match="3 bytes after End of Message"):
        decode_ke_message(data + b"abc")


def test_unknown_critical_record_rejected():
    with pytest.raises(NTSError, match="unknown critical record type 16385") as err:
        ke(response(NEXT_NTPV4, AEAD_15, encode_record(0x4001, b"x", critical=True), COOKIE, EOM))
    assert err.value.stage == "nts-ke"


def test_unknown_non_critical_records_ignored():
    # ntpd-rs uses draft records 8..14; they must not break the exchange. chrony's record 1024 is understood (it
    # tells how AES-128-GCM-SIV keys are derived) and is no longer among the ignored ones.
    extra = encode_record(8, b"") + encode_record(1024, b"") + encode_record(0x4001, b"zz")
    result = ke(response(NEXT_NTPV4, AEAD_15, extra, COOKIE, EOM))
    assert len(result["cookies"]) == 1
    assert result["ignored"] == ["unknown record type 8 (non-critical)", "unknown record type 16385 (non-critical)"]
    assert result["compliant_exporter"] is True


@pytest.mark.parametrize(
    ("code", "text"), [(0, "Unrecognized Critical Record"), (1, "Bad Request"), (2, "Internal Server Error")]
)
def test_error_records(code, text):
    data = encode_record(2, struct.pack("!H", code), critical=True) + EOM
    with pytest.raises(NTSError, match="NTS-KE Error %d \\(%s\\)" % (code, text)) as err:
        ke(data)
    assert err.value.stage == "nts-ke"
    assert err.value.details["ke_error"] == code


def test_chrony_bad_request_capture():
    with pytest.raises(NTSError, match=r"Error 1 \(Bad Request\)"):
        ke(bytes.fromhex("8002 0002 0001 8000 0000"))


def test_malformed_error_record():
    with pytest.raises(NTSError, match="malformed Error record"):
        ke(encode_record(2, b"\x00", critical=True) + EOM)


def test_warning_record_is_fatal():
    with pytest.raises(NTSError, match="Warning 7"):
        ke(response(NEXT_NTPV4, AEAD_15, encode_record(3, b"\x00\x07", critical=True), COOKIE, EOM))


def test_empty_aead_capture_from_chrony():
    with pytest.raises(NTSError, match="accepts none of the offered AEAD algorithms 15") as err:
        ke(bytes.fromhex("8001 0002 0000 8004 0000 8000 0000"))
    assert err.value.stage == "nts-ke"


def test_empty_next_protocol_capture_from_chrony():
    with pytest.raises(NTSError, match="none of the offered next protocols"):
        ke(bytes.fromhex("8001 0000 8000 0000"))


@pytest.mark.parametrize(
    ("records", "match"),
    [
        ((AEAD_15, COOKIE), "no Next Protocol record"),
        ((NEXT_NTPV4, COOKIE), "no AEAD Algorithm record"),
        ((NEXT_NTPV4, AEAD_15), "no usable cookie"),
        ((encode_record(1, b"\x80\x00", critical=True), AEAD_15, COOKIE), "next protocol \\[32768\\]"),
        ((NEXT_NTPV4, encode_record(4, b"\x00\x1e", critical=True), COOKIE), "AEAD \\[30\\], which was not offered"),
        ((NEXT_NTPV4, encode_record(4, b"\x00\x0f\x00\x1e"), COOKIE), "not offered"),
        ((NEXT_NTPV4, encode_record(4, b"\x00"), COOKIE), "odd body length"),
        ((NEXT_NTPV4, NEXT_NTPV4, AEAD_15, COOKIE), "more than one Next Protocol"),
        ((NEXT_NTPV4, AEAD_15, AEAD_15, COOKIE), "more than one AEAD"),
    ],
)
def test_negotiation_failures(records, match):
    with pytest.raises(NTSError, match=match) as err:
        ke(response(*records, EOM))
    assert err.value.stage == "nts-ke"


def test_end_of_message_in_the_middle():
    records = [
        nts_client.KERecord(1, True, b"\x00\x00"),
        nts_client.KERecord(0, True, b""),
        nts_client.KERecord(0, True, b""),
    ]
    with pytest.raises(NTSError, match="before the end of the response"):
        interpret_ke_response(records)


def test_cookie_count_capped_at_eight():
    result = ke(response(NEXT_NTPV4, AEAD_15, COOKIE * 10, EOM))
    assert len(result["cookies"]) == 8
    assert result["ignored"] == ["cookie beyond the first 8"] * 2


def test_random_garbage_only_ever_raises_ntserror():
    """A hostile or broken server can send anything: the parser must end in a result or an NTSError, fast."""
    rng = random.Random(8915)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(3000):
        n = rng.randint(0, 64)
        prefix = response(NEXT_NTPV4, AEAD_15) if rng.random() < 0.5 else b""
        data = prefix + bytes(rng.getrandbits(8) for _ in range(n))
        if rng.random() < 0.3:
            data += EOM
        try:
            ke(data)
            outcomes["ok"] += 1
        except NTSError as exc:
            assert exc.stage == "nts-ke"
            outcomes["error"] += 1
    assert outcomes["error"] > 0
