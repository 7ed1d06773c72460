# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""NTS-KE (RFC 8915 section 4): constants, the probe's error type, and the record layer (encode, read, interpret).

No Ansible imports; part of the native NTS probe (see nts_prober).
"""

from __future__ import annotations

import struct

STAGES = ("dns", "tcp", "tls", "certificate", "nts-ke", "ntp", "authentication")

NTS_KE_PORT = 4460
NTP_PORT = 123
ALPN_NTSKE = b"ntske/1"
EXPORTER_LABEL = b"EXPORTER-network-time-security"

# NTS-KE record types (RFC 8915 section 4 and the IANA registry)
REC_END_OF_MESSAGE = 0
REC_NEXT_PROTOCOL = 1
REC_ERROR = 2
REC_WARNING = 3
REC_AEAD = 4
REC_COOKIE = 5
REC_SERVER = 6
REC_PORT = 7
# chrony-defined, IANA-registered: "Compliant AES-128-GCM-SIV Exporter Context" (C=0, empty body). A client offering
# AEAD 30 sends it; a server that derives AEAD 30 keys with the RFC 8915 context (AEAD id 30) echoes it.
REC_COMPLIANT_GCM_SIV_EXPORTER = 1024
CRITICAL_BIT = 0x8000

RECORD_NAMES = {
    REC_END_OF_MESSAGE: "End of Message",
    REC_NEXT_PROTOCOL: "NTS Next Protocol Negotiation",
    REC_ERROR: "Error",
    REC_WARNING: "Warning",
    REC_AEAD: "AEAD Algorithm Negotiation",
    REC_COOKIE: "New Cookie for NTPv4",
    REC_SERVER: "NTPv4 Server Negotiation",
    REC_PORT: "NTPv4 Port Negotiation",
    REC_COMPLIANT_GCM_SIV_EXPORTER: "Compliant AES-128-GCM-SIV Exporter Context",
}
KE_ERROR_CODES = {0: "Unrecognized Critical Record", 1: "Bad Request", 2: "Internal Server Error"}

NEXT_PROTOCOL_NTPV4 = 0
# AEAD algorithms (IANA "AEAD Algorithms" registry) the probe implements
AEAD_AES_SIV_CMAC_256 = 15
AEAD_AES_128_GCM_SIV = 30
AEAD_NAMES = {AEAD_AES_SIV_CMAC_256: "AEAD_AES_SIV_CMAC_256", AEAD_AES_128_GCM_SIV: "AEAD_AES_128_GCM_SIV"}
AEAD_KEY_LENGTH = {AEAD_AES_SIV_CMAC_256: 32, AEAD_AES_128_GCM_SIV: 16}
# The nonce the probe sends: 16 bytes for AES-SIV (RFC 8915 5.6 asks for at least 16), exactly 12 for GCM-SIV
AEAD_NONCE_LENGTH = {AEAD_AES_SIV_CMAC_256: 16, AEAD_AES_128_GCM_SIV: 12}
# N_MAX of RFC 5116 (longest nonce the algorithm takes; AES-SIV takes any length), for the additional padding rule
AEAD_MAX_NONCE_LENGTH = {AEAD_AES_SIV_CMAC_256: 16, AEAD_AES_128_GCM_SIV: 12}
SUPPORTED_AEADS = (AEAD_AES_128_GCM_SIV, AEAD_AES_SIV_CMAC_256)

# chrony's limits (nts_ke.h): a response larger than these is refused
MAX_MESSAGE_LENGTH = 16384
MAX_RECORD_BODY_LENGTH = 256
MAX_COOKIE_LENGTH = 256
MAX_COOKIES = 8

# NTP extension field types (RFC 8915 section 5.7)
EF_UNIQUE_IDENTIFIER = 0x0104
EF_COOKIE = 0x0204
EF_COOKIE_PLACEHOLDER = 0x0304
EF_AUTHENTICATOR = 0x0404

NTP_HEADER_LENGTH = 48
NONCE_LENGTH = 16  # AES-SIV's; see AEAD_NONCE_LENGTH
UID_LENGTH = 32
SIV_TAG_LENGTH = 16  # the tag of both AEADs (AES-SIV prepends it, AES-GCM-SIV appends it)
MAX_PLACEHOLDERS = 7
NTP_UNIX_DELTA = 2208988800  # seconds from 1900-01-01 to 1970-01-01
KISS_NTS_NAK = b"NTSN"


class NTSError(Exception):
    """A failed probe step: ``stage`` (one of :data:`STAGES`) and a human ``message``."""

    def __init__(self, stage, message, **details):
        if stage not in STAGES:
            raise ValueError("unknown NTS probe stage %r" % (stage,))
        super().__init__("%s: %s" % (stage, message))
        self.stage = stage
        self.message = message
        self.details = details


# ---------------------------------------------------------------------------------------------------------------
# NTS-KE records


def encode_record(rtype, body=b"", critical=False):
    """Encode one NTS-KE record: C bit | 15-bit type | 16-bit body length | body."""
    if not 0 <= rtype < 0x8000:
        raise ValueError("record type %r out of range 0..32767" % (rtype,))
    if len(body) > 0xFFFF:
        raise ValueError("record body of %d bytes exceeds 65535" % len(body))
    return struct.pack("!HH", rtype | (CRITICAL_BIT if critical else 0), len(body)) + bytes(body)


def aead_name(aead):
    """'AEAD_AES_128_GCM_SIV' for 30, 'AEAD_AES_SIV_CMAC_256' for 15, 'AEAD id N' for any other id."""
    return AEAD_NAMES.get(aead, "AEAD id %s" % (aead,))


def exporter_aead(aead, compliant_exporter):
    """The AEAD id to put in the key exporter context (RFC 8915 5.1) for a session that negotiated ``aead``.

    RFC 8915 says the negotiated id. chrony 4.4 to 4.6 (and chrony >= 4.6.1 when the peer does not ask for the
    compliant context) derive AEAD_AES_128_GCM_SIV keys with id 15 instead; a server that echoed record 1024
    (``compliant_exporter``) uses 30. The key LENGTH is always the negotiated algorithm's (16 bytes for 30).
    """
    if aead == AEAD_AES_128_GCM_SIV and not compliant_exporter:
        return AEAD_AES_SIV_CMAC_256
    return aead


def build_ke_request(aeads=(AEAD_AES_SIV_CMAC_256,), protocols=(NEXT_PROTOCOL_NTPV4,), compliant_exporter=None):
    """The client request: Next Protocol (critical), AEAD Algorithm (critical), [1024], End of Message.

    Record 1024 (Compliant AES-128-GCM-SIV Exporter Context, C=0, empty) is sent when ``compliant_exporter`` is
    True, or by default (None) when AEAD_AES_128_GCM_SIV is offered, as chrony >= 4.6.1 does.
    """
    aeads = list(aeads)
    if not aeads:
        raise ValueError("at least one AEAD algorithm must be offered")
    for aead in aeads:
        if isinstance(aead, bool) or not isinstance(aead, int) or not 0 <= aead <= 0xFFFF:
            raise ValueError("AEAD id %r is not an integer 0..65535" % (aead,))
    if compliant_exporter is None:
        compliant_exporter = AEAD_AES_128_GCM_SIV in aeads
    return (
        encode_record(REC_NEXT_PROTOCOL, b"".join(struct.pack("!H", p) for p in protocols), critical=True)
        + encode_record(REC_AEAD, b"".join(struct.pack("!H", a) for a in aeads), critical=True)
        + (encode_record(REC_COMPLIANT_GCM_SIV_EXPORTER) if compliant_exporter else b"")
        + encode_record(REC_END_OF_MESSAGE, critical=True)
    )


class KERecord:
    """One decoded NTS-KE record. ``oversized`` records had a body above the cap and were not kept."""

    __slots__ = ("body", "critical", "length", "oversized", "rtype")

    def __init__(self, rtype, critical, body, length=None, oversized=False):
        self.rtype = rtype
        self.critical = critical
        self.body = body
        self.length = len(body) if length is None else length
        self.oversized = oversized

    def __repr__(self):
        return "KERecord(type=%d, critical=%s, length=%d)" % (self.rtype, self.critical, self.length)


class KEMessageReader:
    """Incremental NTS-KE message decoder fed with bytes as they arrive from TLS.

    ``feed`` returns True once End of Message is decoded; bytes after it are refused. Size caps are enforced as soon
    as a header is seen, so a hostile server cannot make the client buffer more than ``MAX_MESSAGE_LENGTH`` bytes.
    A record body above ``MAX_RECORD_BODY_LENGTH`` is an error when the record is critical and skipped otherwise
    (chrony does the same).
    """

    def __init__(self, max_message=MAX_MESSAGE_LENGTH, max_body=MAX_RECORD_BODY_LENGTH):
        self.max_message = max_message
        self.max_body = max_body
        self.records = []
        self.total = 0
        self.complete = False
        self._buf = b""

    def feed(self, data):
        if self.complete:
            if data:
                raise NTSError("nts-ke", "server sent %d bytes after End of Message" % len(data))
            return True
        self.total += len(data)
        if self.total > self.max_message:
            raise NTSError(
                "nts-ke",
                "NTS-KE response exceeds %d bytes without End of Message" % self.max_message,
            )
        self._buf += data
        while len(self._buf) >= 4:
            word, length = struct.unpack("!HH", self._buf[:4])
            critical = bool(word & CRITICAL_BIT)
            rtype = word & ~CRITICAL_BIT
            if length > self.max_body and critical:
                raise NTSError(
                    "nts-ke",
                    "critical record type %d (%s) has a %d-byte body, above the %d-byte limit"
                    % (rtype, RECORD_NAMES.get(rtype, "unknown"), length, self.max_body),
                )
            if len(self._buf) < 4 + length:
                break
            body = self._buf[4 : 4 + length]
            self._buf = self._buf[4 + length :]
            if length > self.max_body:
                self.records.append(KERecord(rtype, critical, b"", length=length, oversized=True))
            else:
                self.records.append(KERecord(rtype, critical, body))
            if rtype == REC_END_OF_MESSAGE:
                if self._buf:
                    raise NTSError("nts-ke", "server sent %d bytes after End of Message" % len(self._buf))
                self.complete = True
                return True
        return False

    def finish(self):
        """Called when the peer closed the stream: raise unless a full message was decoded."""
        if self.complete:
            return
        if not self.records and not self._buf:
            raise NTSError("nts-ke", "server closed the connection without sending an NTS-KE response")
        if 0 < len(self._buf) < 4:
            raise NTSError(
                "nts-ke",
                "NTS-KE response truncated inside a record header (%d of 4 bytes) before End of Message"
                % len(self._buf),
            )
        if self._buf:
            word, length = struct.unpack("!HH", self._buf[:4])
            raise NTSError(
                "nts-ke",
                "NTS-KE response truncated inside record type %d: %d of %d body bytes before End of Message"
                % (word & ~CRITICAL_BIT, len(self._buf) - 4, length),
            )
        raise NTSError("nts-ke", "NTS-KE response ended without an End of Message record")


def decode_ke_message(data):
    """Decode a complete NTS-KE message (bytes) into records; raise NTSError(stage nts-ke) if malformed."""
    reader = KEMessageReader()
    reader.feed(bytes(data))
    reader.finish()
    return reader.records


def _u16_list(record, what):
    if len(record.body) % 2:
        raise NTSError("nts-ke", "%s record has an odd body length %d" % (what, len(record.body)))
    return [v for (v,) in struct.iter_unpack("!H", record.body)]


def interpret_ke_response(records, offered_aeads=(AEAD_AES_SIV_CMAC_256,)):
    """Check a decoded server response and return a dict: aead, cookies, server, port, ignored, compliant_exporter.

    ``compliant_exporter`` is True when the server sent record 1024 (it derives AEAD_AES_128_GCM_SIV keys with the
    RFC 8915 exporter context); a non-empty 1024 record is malformed (chrony rejects it too).

    Raises NTSError(stage nts-ke) for Error and Warning records, unknown critical records, a missing or empty
    Next Protocol or AEAD record, a missing End of Message, malformed negotiation records, or no usable cookie.
    """
    next_protocols = None
    aead = None
    cookies = []
    server = None
    port = None
    ignored = []
    compliant_exporter = False
    if not records or records[-1].rtype != REC_END_OF_MESSAGE:
        raise NTSError("nts-ke", "NTS-KE response ended without an End of Message record")
    for rec in records[:-1]:
        name = RECORD_NAMES.get(rec.rtype, "unknown record type %d" % rec.rtype)
        if rec.oversized:
            ignored.append("%s (oversized, %d bytes)" % (name, rec.length))
            continue
        if rec.rtype == REC_END_OF_MESSAGE:
            raise NTSError("nts-ke", "End of Message record before the end of the response")
        if rec.rtype == REC_ERROR:
            if len(rec.body) != 2:
                raise NTSError("nts-ke", "server sent a malformed Error record (%d-byte body)" % len(rec.body))
            (code,) = struct.unpack("!H", rec.body)
            raise NTSError(
                "nts-ke",
                "server answered with NTS-KE Error %d (%s)" % (code, KE_ERROR_CODES.get(code, "unassigned code")),
                ke_error=code,
            )
        if rec.rtype == REC_WARNING:
            code = struct.unpack("!H", rec.body)[0] if len(rec.body) == 2 else None
            raise NTSError("nts-ke", "server answered with NTS-KE Warning %s (treated as fatal)" % (code,))
        if rec.rtype == REC_NEXT_PROTOCOL:
            if next_protocols is not None:
                raise NTSError("nts-ke", "server sent more than one Next Protocol record")
            next_protocols = _u16_list(rec, "Next Protocol")
        elif rec.rtype == REC_AEAD:
            if aead is not None:
                raise NTSError("nts-ke", "server sent more than one AEAD Algorithm record")
            ids = _u16_list(rec, "AEAD Algorithm")
            if not ids:
                raise NTSError(
                    "nts-ke",
                    "server accepts none of the offered AEAD algorithms %s (empty AEAD record)"
                    % ", ".join(str(a) for a in offered_aeads),
                )
            if len(ids) != 1 or ids[0] not in offered_aeads:
                raise NTSError("nts-ke", "server chose AEAD %s, which was not offered" % ids)
            aead = ids[0]
        elif rec.rtype == REC_COOKIE:
            if not rec.body or len(rec.body) > MAX_COOKIE_LENGTH:
                ignored.append("cookie of %d bytes" % len(rec.body))
            elif len(cookies) >= MAX_COOKIES:
                ignored.append("cookie beyond the first %d" % MAX_COOKIES)
            else:
                cookies.append(rec.body)
        elif rec.rtype == REC_SERVER:
            try:
                text = rec.body.decode("ascii")
            except UnicodeDecodeError:
                text = None
            if not text or not all(33 <= ord(ch) <= 126 for ch in text):
                raise NTSError("nts-ke", "malformed NTPv4 Server Negotiation record %r" % (rec.body[:64],))
            server = text
        elif rec.rtype == REC_PORT:
            if len(rec.body) != 2:
                raise NTSError(
                    "nts-ke", "malformed NTPv4 Port Negotiation record (%d-byte body, expected 2)" % len(rec.body)
                )
            (port,) = struct.unpack("!H", rec.body)
            if port == 0:
                raise NTSError("nts-ke", "server negotiated NTP port 0")
        elif rec.rtype == REC_COMPLIANT_GCM_SIV_EXPORTER:
            if rec.body:
                raise NTSError(
                    "nts-ke",
                    "malformed Compliant AES-128-GCM-SIV Exporter Context record (%d-byte body, expected empty)"
                    % len(rec.body),
                )
            compliant_exporter = True
        elif rec.critical:
            raise NTSError("nts-ke", "server sent unknown critical record type %d" % rec.rtype)
        else:
            ignored.append("%s (non-critical)" % name)
    if next_protocols is None:
        raise NTSError("nts-ke", "server response has no Next Protocol record")
    if not next_protocols:
        raise NTSError("nts-ke", "server supports none of the offered next protocols (empty Next Protocol record)")
    if next_protocols != [NEXT_PROTOCOL_NTPV4]:
        raise NTSError("nts-ke", "server chose next protocol %s instead of NTPv4 (0)" % next_protocols)
    if aead is None:
        raise NTSError("nts-ke", "server response has no AEAD Algorithm record")
    if not cookies:
        raise NTSError("nts-ke", "server sent no usable cookie")
    return {
        "aead": aead,
        "cookies": cookies,
        "server": server,
        "port": port,
        "ignored": ignored,
        "compliant_exporter": compliant_exporter,
    }
