# -*- coding: utf-8 -*-
# Copyright: chrony-nts project contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Native NTS (RFC 8915) probe: one NTS-KE handshake plus one authenticated NTPv4 exchange.

The module proves that a server speaks NTS without chrony: it connects to the NTS-KE port over TLS 1.3 with ALPN
``ntske/1``, verifies the certificate chain and the host name or IP address, negotiates NTPv4 and
AEAD_AES_SIV_CMAC_256 (id 15, the algorithm every NTS server must implement), exports the C2S/S2C keys, sends one
NTS-protected NTPv4 request with one cookie and checks the authenticated response.

Library choice. Keys are exported with pyOpenSSL's ``Connection.export_keying_material`` (pyOpenSSL >= 17.5). The
standard library's ``ssl`` module has no exporter; the alternative (``SSLContext.keylog_filename`` plus an HKDF
derivation of the exporter from the logged ``EXPORTER_SECRET``) writes TLS secrets to a file and re-implements part
of TLS 1.3 by hand. pyOpenSSL keeps the secrets inside OpenSSL and is already a controller dependency. Its price is
that it checks no host name: :func:`check_certificate_name` does that on the leaf certificate with ``cryptography``
(subjectAltName DNS and IP entries only, left-most-label wildcards, no Common Name fallback, as RFC 6125 and
browsers do). AES-SIV comes from ``cryptography``'s ``AESSIV`` (cryptography >= 37).

Timeouts. ``timeout`` is ONE deadline for the whole probe of one server: DNS, TCP connect, TLS handshake, NTS-KE
exchange, the NTP server's DNS and the UDP exchange all share it, so a server that stalls at every step still costs
at most ``timeout`` seconds (plus scheduling slack), never a multiple of it. Sockets are non-blocking and every wait
is a ``poll()`` (``select()`` where poll is missing) bounded by the time left. DNS has no timeout in libc, so the
lookup runs in a daemon thread that is abandoned when the deadline passes. A step that runs out of time reports
"timed out after <timeout>s ..." with the step it was in.

Errors raise :class:`NTSError` with ``stage`` in :data:`STAGES`: ``dns``, ``tcp``, ``tls`` (handshake, protocol
version, ALPN), ``certificate`` (CA input, chain, validity dates, name), ``nts-ke`` (records), ``ntp`` (UDP exchange,
packet format, mode, origin timestamp) and ``authentication`` (unique identifier, authenticator, decryption, NTS NAK).
:func:`probe` turns them into a result dictionary with ``ok`` False and never raises for network or protocol faults:
socket and OpenSSL errors at any point (socket creation, connect, handshake, send, recv, close), a connection reset
included, become a failure of the stage in progress with a plain reason such as "connection reset by peer during the
TLS handshake". A CA that cannot be loaded is reported naming the input (``ca_pem for <server>`` or ``ca_file <path>
for <server>``).

No Ansible imports here: the module, the CLI ``bin/nts-probe`` and the tests all use this file. Python >= 3.9.
"""

from __future__ import annotations

import datetime
import errno
import ipaddress
import math
import os
import re
import select
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    _CRYPTOGRAPHY_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only on hosts without the library
    x509 = InvalidTag = AESSIV = None
    _CRYPTOGRAPHY_ERROR = exc

try:
    from OpenSSL import SSL, crypto

    _PYOPENSSL_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only on hosts without the library
    SSL = crypto = None
    _PYOPENSSL_ERROR = exc


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
}
KE_ERROR_CODES = {0: "Unrecognized Critical Record", 1: "Bad Request", 2: "Internal Server Error"}

NEXT_PROTOCOL_NTPV4 = 0
AEAD_AES_SIV_CMAC_256 = 15
AEAD_KEY_LENGTH = {AEAD_AES_SIV_CMAC_256: 32}

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
NONCE_LENGTH = 16
UID_LENGTH = 32
SIV_TAG_LENGTH = 16
MAX_PLACEHOLDERS = 7
NTP_UNIX_DELTA = 2208988800  # seconds from 1900-01-01 to 1970-01-01
KISS_NTS_NAK = b"NTSN"

# OpenSSL X509_V_FLAG_NO_CHECK_TIME: skip notBefore/notAfter checks (pyOpenSSL has no named constant for it)
X509_V_FLAG_NO_CHECK_TIME = 0x200000

# Common OpenSSL X509_V_ERR_* codes, for readable certificate errors
_X509_ERRORS = {
    2: "unable to get the issuer certificate",
    4: "unable to decrypt the certificate signature",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    13: "certificate notBefore field is malformed",
    14: "certificate notAfter field is malformed",
    18: "self-signed certificate (not trusted)",
    19: "self-signed certificate in the chain (not trusted)",
    20: "unable to get the local issuer certificate: the issuer is unknown (wrong or missing CA)",
    21: "unable to verify the first certificate",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
    27: "certificate not trusted",
    28: "certificate rejected",
}


class NTSError(Exception):
    """A failed probe step: ``stage`` (one of :data:`STAGES`) and a human ``message``."""

    def __init__(self, stage, message, **details):
        if stage not in STAGES:
            raise ValueError("unknown NTS probe stage %r" % (stage,))
        super().__init__("%s: %s" % (stage, message))
        self.stage = stage
        self.message = message
        self.details = details


class MissingDependencyError(RuntimeError):
    """pyOpenSSL or a recent enough cryptography is not importable on this host."""


def check_dependencies():
    """Raise :class:`MissingDependencyError` with an actionable message when a library is missing."""
    problems = []
    if _CRYPTOGRAPHY_ERROR is not None:
        problems.append(
            "the Python library 'cryptography' >= 37 (for AESSIV) is not importable: %s" % (_CRYPTOGRAPHY_ERROR,)
        )
    if _PYOPENSSL_ERROR is not None:
        problems.append(
            "the Python library 'pyOpenSSL' >= 17.5 (for the TLS exporter) is not importable: %s" % (_PYOPENSSL_ERROR,)
        )
    elif not hasattr(SSL.Connection, "export_keying_material"):
        problems.append("pyOpenSSL is too old: Connection.export_keying_material needs pyOpenSSL >= 17.5")
    if problems:
        raise MissingDependencyError(
            "NTS probe cannot run on this host: %s. Install them (pip install 'cryptography>=37' 'pyOpenSSL>=17.5') "
            "or run the probe on the controller (delegate_to: localhost)." % "; ".join(problems)
        )


# ---------------------------------------------------------------------------------------------------------------
# NTS-KE records


def encode_record(rtype, body=b"", critical=False):
    """Encode one NTS-KE record: C bit | 15-bit type | 16-bit body length | body."""
    if not 0 <= rtype < 0x8000:
        raise ValueError("record type %r out of range 0..32767" % (rtype,))
    if len(body) > 0xFFFF:
        raise ValueError("record body of %d bytes exceeds 65535" % len(body))
    return struct.pack("!HH", rtype | (CRITICAL_BIT if critical else 0), len(body)) + bytes(body)


def build_ke_request(aeads=(AEAD_AES_SIV_CMAC_256,), protocols=(NEXT_PROTOCOL_NTPV4,)):
    """The client request: Next Protocol (critical), AEAD Algorithm (critical), End of Message."""
    return (
        encode_record(REC_NEXT_PROTOCOL, b"".join(struct.pack("!H", p) for p in protocols), critical=True)
        + encode_record(REC_AEAD, b"".join(struct.pack("!H", a) for a in aeads), critical=True)
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
    """Check a decoded server response and return a dict: aead, cookies, server, port, ignored.

    Raises NTSError(stage nts-ke) for Error and Warning records, unknown critical records, a missing or empty
    Next Protocol or AEAD record, a missing End of Message, malformed negotiation records, or no usable cookie.
    """
    next_protocols = None
    aead = None
    cookies = []
    server = None
    port = None
    ignored = []
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
    return {"aead": aead, "cookies": cookies, "server": server, "port": port, "ignored": ignored}


# ---------------------------------------------------------------------------------------------------------------
# AEAD and NTP packets


def aead_seal(key, plaintext, associated_data, nonce):
    """AES-SIV-CMAC encrypt: ``associated_data`` is a list of byte strings, the nonce goes LAST (RFC 5297 3).

    Returns SIV tag (16 bytes) || ciphertext. ``nonce`` None means deterministic mode (RFC 5297 A.1).
    """
    ad = list(associated_data) + ([nonce] if nonce is not None else [])
    return AESSIV(key).encrypt(plaintext, ad or None)


def aead_open(key, ciphertext, associated_data, nonce):
    """Inverse of :func:`aead_seal`; raises ``cryptography.exceptions.InvalidTag`` when authentication fails."""
    ad = list(associated_data) + ([nonce] if nonce is not None else [])
    return AESSIV(key).decrypt(ciphertext, ad or None)


def _pad4(data):
    return data + b"\x00" * (-len(data) % 4)


def encode_ef(ftype, body):
    """An NTP extension field: type, total length (multiple of 4), body zero-padded to 4 octets."""
    padded = _pad4(body)
    return struct.pack("!HH", ftype, 4 + len(padded)) + padded


def unix_ns_to_ntp(ns):
    """Unix time in nanoseconds -> 64-bit NTP timestamp integer (era 0)."""
    sec, rem = divmod(ns, 1000000000)
    return ((sec + NTP_UNIX_DELTA) << 32) | ((rem << 32) // 1000000000)


def ntp_to_unix_ns(value, pivot_ns):
    """64-bit NTP timestamp -> Unix nanoseconds, choosing the NTP era closest to ``pivot_ns`` (RFC 5905 era rule)."""
    sec = value >> 32
    frac = value & 0xFFFFFFFF
    pivot_ntp = pivot_ns // 1000000000 + NTP_UNIX_DELTA
    era = (pivot_ntp - sec + (1 << 31)) >> 32
    sec += era << 32
    return (sec - NTP_UNIX_DELTA) * 1000000000 + ((frac * 1000000000) >> 32)


def build_ntp_request(cookie, c2s_key, uid, transmit, nonce, placeholders=0):
    """Build an NTS-protected NTPv4 client request.

    ``transmit`` is the 8-byte value put into the transmit timestamp (random, not the local clock: the real T1 is
    kept by the caller). Extension fields: Unique Identifier, one cookie, ``placeholders`` Cookie Placeholders of
    the cookie's length, then the Authenticator (empty plaintext, associated data = everything before it).
    """
    if len(transmit) != 8:
        raise ValueError("transmit timestamp must be 8 bytes, got %d" % len(transmit))
    if len(uid) < 32:
        raise ValueError("unique identifier must be at least 32 bytes, got %d" % len(uid))
    if not 0 <= placeholders <= MAX_PLACEHOLDERS:
        raise ValueError("placeholders must be 0..%d, got %r" % (MAX_PLACEHOLDERS, placeholders))
    if not cookie:
        raise ValueError("cookie must not be empty")
    header = struct.pack("!BBbb", (0 << 6) | (4 << 3) | 3, 0, 0, 0) + b"\x00" * 36 + bytes(transmit)
    efs = encode_ef(EF_UNIQUE_IDENTIFIER, uid) + encode_ef(EF_COOKIE, cookie)
    efs += encode_ef(EF_COOKIE_PLACEHOLDER, b"\x00" * len(cookie)) * placeholders
    ad = header + efs
    ciphertext = aead_seal(c2s_key, b"", [ad], nonce)
    # nonce and ciphertext are 16 bytes each: no padding and no additional padding needed (RFC 8915 5.6)
    auth_body = struct.pack("!HH", len(nonce), len(ciphertext)) + _pad4(nonce) + _pad4(ciphertext)
    return ad + encode_ef(EF_AUTHENTICATOR, auth_body)


def parse_extension_fields(data, offset, what):
    """Split ``data[offset:]`` into (type, start, end, body) tuples; raise NTSError(ntp) if malformed."""
    fields = []
    while offset < len(data):
        if len(data) - offset < 4:
            raise NTSError("ntp", "%s: %d trailing bytes after the extension fields" % (what, len(data) - offset))
        ftype, length = struct.unpack("!HH", data[offset : offset + 4])
        if length < 4 or length % 4 or offset + length > len(data):
            raise NTSError(
                "ntp",
                "%s: malformed extension field type 0x%04x with length %d at offset %d" % (what, ftype, length, offset),
            )
        fields.append((ftype, offset, offset + length, data[offset + 4 : offset + length]))
        offset += length
    return fields


def parse_ntp_response(data, s2c_key, uid, transmit):
    """Validate an NTS-protected NTPv4 server response and return its fields.

    Checks, in this order: length and mode 4 (stage ntp), origin timestamp == our transmit value (ntp), the Unique
    Identifier (authentication), NTS NAK (authentication, ``nak`` detail True), authenticator present and last,
    AES-SIV decryption with the S2C key (authentication). Returns a dict with leap, version, mode, stratum, poll,
    precision, root_delay, root_dispersion, refid (bytes), receive and transmit (NTP 64-bit ints) and cookies (list
    of new cookies from the encrypted extension fields).
    """
    if len(data) < NTP_HEADER_LENGTH:
        raise NTSError("ntp", "response of %d bytes is shorter than an NTP header (48)" % len(data))
    b0, stratum, poll, precision, root_delay, root_disp = struct.unpack("!BBbbII", data[:12])
    refid = data[12:16]
    origin = data[24:32]
    receive, xmit = struct.unpack("!QQ", data[32:48])
    leap, version, mode = b0 >> 6, (b0 >> 3) & 7, b0 & 7
    if mode != 4:
        raise NTSError("ntp", "response has NTP mode %d, expected 4 (server)" % mode)
    if version not in (3, 4):
        raise NTSError("ntp", "response has NTP version %d" % version)
    if origin != transmit:
        raise NTSError(
            "ntp",
            "origin timestamp %s does not match our transmit value %s (stale or spoofed response)"
            % (origin.hex(), bytes(transmit).hex()),
        )
    fields = parse_extension_fields(data, NTP_HEADER_LENGTH, "NTP response")
    uids = [f for f in fields if f[0] == EF_UNIQUE_IDENTIFIER]
    auth_index = [i for i, f in enumerate(fields) if f[0] == EF_AUTHENTICATOR]
    if not uids:
        raise NTSError("authentication", "response carries no Unique Identifier extension field")
    if len(uids) > 1 or uids[0][3] != uid:
        raise NTSError("authentication", "Unique Identifier in the response does not match the request")
    is_kiss = stratum == 0 and refid == KISS_NTS_NAK
    if not auth_index:
        if is_kiss:
            raise NTSError(
                "authentication",
                "server sent an NTS NAK (kiss code NTSN): it rejected the cookie or the request's authenticator",
                nak=True,
            )
        kiss = refid.decode("ascii", "replace") if stratum == 0 else None
        raise NTSError(
            "authentication",
            "response carries no NTS Authenticator extension field"
            + (" (stratum 0, kiss code %r)" % kiss if kiss else ""),
        )
    if len(auth_index) > 1 or auth_index[0] != len(fields) - 1:
        raise NTSError("authentication", "NTS Authenticator is not the last extension field of the response")
    _ftype, start, _end, body = fields[-1]
    uid_start = uids[0][1]
    if uid_start > start:
        raise NTSError("authentication", "Unique Identifier follows the authenticator")
    if len(body) < 4:
        raise NTSError("authentication", "NTS Authenticator field too short (%d bytes)" % len(body))
    nonce_len, ct_len = struct.unpack("!HH", body[:4])
    nonce_end = 4 + nonce_len + (-nonce_len % 4)
    ct_end = nonce_end + ct_len + (-ct_len % 4)
    if nonce_len == 0 or ct_len < SIV_TAG_LENGTH or ct_end > len(body):
        raise NTSError(
            "authentication",
            "malformed NTS Authenticator (nonce %d bytes, ciphertext %d bytes, field body %d bytes)"
            % (nonce_len, ct_len, len(body)),
        )
    nonce = body[4 : 4 + nonce_len]
    ciphertext = body[nonce_end : nonce_end + ct_len]
    try:
        plaintext = aead_open(s2c_key, ciphertext, [data[:start]], nonce)
    except InvalidTag:
        raise NTSError(
            "authentication", "NTS Authenticator does not verify with the S2C key (tampered or forged response)"
        ) from None
    cookies = []
    for ftype, _s, _e, fbody in parse_extension_fields(plaintext, 0, "encrypted extension fields"):
        if ftype == EF_COOKIE:
            cookies.append(fbody)
    return {
        "leap": leap,
        "version": version,
        "mode": mode,
        "stratum": stratum,
        "poll": poll,
        "precision": precision,
        "root_delay": root_delay / 65536.0,
        "root_dispersion": root_disp / 65536.0,
        "refid": refid,
        "receive": receive,
        "transmit": xmit,
        "cookies": cookies,
    }


def offset_and_delay(t1_ns, receive, transmit, t4_ns):
    """RFC 5905 offset ((T2-T1)+(T3-T4))/2 and delay (T4-T1)-(T3-T2) in seconds; T2/T3 are NTP 64-bit values."""
    t2 = ntp_to_unix_ns(receive, t1_ns)
    t3 = ntp_to_unix_ns(transmit, t1_ns)
    return ((t2 - t1_ns) + (t3 - t4_ns)) / 2e9, ((t4_ns - t1_ns) - (t3 - t2)) / 1e9


def server_synchronised(stratum, leap):
    """False for an unsynchronised server: stratum 0 (unspecified/kiss), 16 or more, or leap indicator 3 (alarm)."""
    return 1 <= stratum <= 15 and leap != 3


def format_refid(refid, stratum):
    """Reference ID as text: ASCII for stratum 0/1, an IPv4 dotted quad for higher strata, hex otherwise."""
    if stratum <= 1:
        text = refid.rstrip(b"\x00").decode("ascii", "replace")
        if text and all(32 <= ord(c) < 127 for c in text):
            return text
    elif stratum < 16:
        return socket.inet_ntoa(refid)
    return refid.hex().upper()


# ---------------------------------------------------------------------------------------------------------------
# Certificates


def _name_matches(pattern, name):
    pattern = pattern.lower().rstrip(".")
    name = name.lower().rstrip(".")
    if pattern == name:
        return True
    if pattern.startswith("*.") and "*" not in pattern[2:]:
        first, _, rest = name.partition(".")
        return bool(first) and bool(rest) and rest == pattern[2:] and rest.count(".") >= 1
    return False


def check_certificate_name(cert, name):
    """Raise NTSError(certificate) unless ``cert`` (cryptography x509) is valid for host ``name`` (DNS or IP)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise NTSError(
            "certificate", "certificate has no subjectAltName extension, so it cannot be valid for %r" % name
        ) from None
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None:
        ips = san.get_values_for_type(x509.IPAddress)
        if ip in ips:
            return
        raise NTSError(
            "certificate",
            "certificate is not valid for IP address %s (subjectAltName IPs: %s)"
            % (name, ", ".join(str(i) for i in ips) or "none"),
        )
    dns = san.get_values_for_type(x509.DNSName)
    if any(_name_matches(p, name) for p in dns):
        return
    raise NTSError(
        "certificate",
        "certificate is not valid for %r (subjectAltName DNS names: %s)" % (name, ", ".join(dns) or "none"),
    )


def _cert_time(cert, attr):
    value = getattr(cert, attr + "_utc", None)  # cryptography >= 42
    if value is None:
        value = getattr(cert, attr).replace(tzinfo=datetime.timezone.utc)
    return value


def certificate_summary(cert, now=None):
    """Subject, issuer, notBefore, notAfter (ISO 8601 UTC) and whole days left until notAfter."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    not_after = _cert_time(cert, "not_valid_after")
    not_before = _cert_time(cert, "not_valid_before")
    return {
        "cert_subject": cert.subject.rfc4514_string(),
        "cert_issuer": cert.issuer.rfc4514_string(),
        "cert_not_before": not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cert_not_after": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cert_days_left": int((not_after - now).total_seconds() // 86400),
    }


# ---------------------------------------------------------------------------------------------------------------
# Network steps (all bounded by the one deadline of the probe; waits via poll())

# Plain reasons for the socket errors a probe meets; anything else falls back to strerror.
_PLAIN_ERRNO = {
    errno.ECONNRESET: "connection reset by peer",
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "connection closed by peer (broken pipe)",
    errno.ENOTCONN: "connection closed by peer (socket no longer connected)",
    errno.ETIMEDOUT: "connection timed out",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network is unreachable",
    errno.EAFNOSUPPORT: "address family not supported by this host",
    errno.EADDRNOTAVAIL: "cannot use the address (not available on this host)",
    errno.EMFILE: "too many open files in this process",
    errno.ENFILE: "too many open files on this host",
}


def _os_reason(exc):
    """A plain lower-case reason for an OSError (or an errno number): 'connection reset by peer'."""
    num = exc if isinstance(exc, int) else getattr(exc, "errno", None)
    if num in _PLAIN_ERRNO:
        return _PLAIN_ERRNO[num]
    if isinstance(num, int) and num > 0:
        text = os.strerror(num)
    else:
        text = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
    return text[:1].lower() + text[1:]


def _ssl_reason(exc):
    parts = []
    try:
        for err in exc.args[0]:
            if isinstance(err, tuple) and len(err) == 3 and err[2] and err[2] not in parts:
                parts.append(err[2])
    except (IndexError, TypeError):
        pass
    return ", ".join(parts[:3]) or str(exc) or exc.__class__.__name__


def _is_unexpected_eof(exc):
    """OpenSSL 3 reports a peer that closed without close_notify as an error, older ones as SysCallError(-1)."""
    if isinstance(exc, SSL.SysCallError):
        return not exc.args or exc.args[0] in (-1, 0)
    return "unexpected eof" in _ssl_reason(exc).lower()


def _network_reason(exc):
    """Plain reason for an OSError or a pyOpenSSL error (SysCallError carries errno and its name)."""
    if SSL is not None and isinstance(exc, SSL.Error):
        if isinstance(exc, SSL.ZeroReturnError):
            return "connection closed by peer (TLS close_notify)"
        if _is_unexpected_eof(exc):
            return "connection closed by peer (unexpected EOF)"
        if isinstance(exc, SSL.SysCallError):
            num = exc.args[0] if exc.args else None
            return _os_reason(num) if isinstance(num, int) and num > 0 else str(exc)
        return _ssl_reason(exc)
    if isinstance(exc, OSError):
        return _os_reason(exc)
    return str(exc) or exc.__class__.__name__


def _remaining(deadline, stage, what):
    left = deadline - time.monotonic()
    if left <= 0:
        raise NTSError(stage, "timed out %s" % what, timeout=True)
    return left


def _wait(sock, want_write, deadline, stage, what):
    """Wait until ``sock`` is readable/writable (or has an error to report) or raise NTSError at the deadline.

    poll() has no FD_SETSIZE limit (select() fails with ValueError for descriptors >= 1024, which a busy Ansible
    worker can reach); errors and hang-ups count as ready so that the next call on the socket reports them.
    """
    left = _remaining(deadline, stage, what)
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLOUT if want_write else select.POLLIN)
        ready = poller.poll(min(math.ceil(left * 1000), 2**31 - 1))  # poll() takes a C int of milliseconds
    elif want_write:  # pragma: no cover - platforms without poll()
        _r, ready, _x = select.select([], [sock], [sock], left)
    else:  # pragma: no cover
        ready, _w, _x = select.select([sock], [], [sock], left)
    if not ready:
        raise NTSError(stage, "timed out %s" % what, timeout=True)


def _deadline(timeout, deadline):
    return time.monotonic() + timeout if deadline is None else deadline


def _close_quietly(sock):
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


def resolve(host, port, timeout, socktype=socket.SOCK_STREAM, deadline=None):
    """getaddrinfo bounded by ``deadline`` (default now + ``timeout``; it runs in a daemon thread).

    IP literals skip the lookup.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sockaddr = (str(ip), port, 0, 0) if ip.version == 6 else (str(ip), port)
        return [(family, sockaddr)]
    deadline = _deadline(timeout, deadline)
    box = {}

    def lookup():
        try:
            box["result"] = socket.getaddrinfo(host, port, 0, socktype)
        except (OSError, UnicodeError) as exc:
            box["error"] = exc

    worker = threading.Thread(target=lookup, name="nts-dns-%s" % host, daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        raise NTSError("dns", "timed out after %.1fs resolving %r" % (timeout, host), timeout=True)
    if "error" in box:
        raise NTSError("dns", "cannot resolve %r: %s" % (host, box["error"]))
    addrs = [(fam, sa) for fam, _t, _p, _c, sa in box["result"] if fam in (socket.AF_INET, socket.AF_INET6)]
    if not addrs:
        raise NTSError("dns", "%r resolved to no IPv4 or IPv6 address" % host)
    return addrs


def tcp_connect(addrs, timeout, deadline=None):
    """Non-blocking connect to the first address that accepts, all before ``deadline``; TCP_NODELAY set.

    Returns ``(socket, sockaddr)``. A socket that cannot even be created (no IPv6 on this host, no free descriptor)
    is that address's failure, like a refused connection; the next address is tried.
    """
    deadline = _deadline(timeout, deadline)
    errors = []
    for family, sockaddr in addrs:
        sock = None
        try:
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:
                errors.append("%s port %d: cannot create a socket (%s)" % (sockaddr[0], sockaddr[1], _os_reason(exc)))
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex(sockaddr)
            if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                raise OSError(err, os.strerror(err))
            if err:
                _wait(sock, True, deadline, "tcp", "connecting to %s port %d" % sockaddr[:2])
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
            return sock, sockaddr
        except NTSError:
            _close_quietly(sock)
            raise NTSError(
                "tcp",
                "timed out after %.1fs connecting to %s port %d" % (timeout, sockaddr[0], sockaddr[1]),
                timeout=True,
            ) from None
        except OSError as exc:
            _close_quietly(sock)
            errors.append("%s port %d: %s" % (sockaddr[0], sockaddr[1], _os_reason(exc)))
    raise NTSError("tcp", "cannot connect to " + "; ".join(errors))


class _VerifyRecorder:
    def __init__(self):
        self.errors = []

    def __call__(self, _conn, cert, errnum, depth, ok):
        if not ok:
            try:
                subject = cert.to_cryptography().subject.rfc4514_string() if cert is not None else None
            except Exception:  # a certificate too odd to describe still gets its error recorded
                subject = "(unreadable subject)"
            self.errors.append((errnum, depth, subject))
        return ok


# ---------------------------------------------------------------------------------------------------------------
# Trust anchors: ca_file (a path) or ca_pem (PEM text), errors name the input, never a temporary file

_PEM_BLOCK_RE = re.compile(r"-----BEGIN ([^-\r\n]*)-----(.*?)-----END ([^-\r\n]*)-----", re.DOTALL)
_PEM_BEGIN_RE = re.compile(r"-----BEGIN ([^-\r\n]*)-----")


def load_ca_pem(text, what):
    """PEM text -> pyOpenSSL X509 certificates; NTSError(certificate) starting with ``what`` when not loadable.

    Every PEM block must be a ``CERTIFICATE`` that OpenSSL can parse; there must be at least one.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise NTSError("certificate", "%s: not a PEM certificate (the text is not ASCII)" % what) from None
    if not isinstance(text, str):
        raise NTSError("certificate", "%s: must be PEM text, got %s" % (what, type(text).__name__))
    blocks = _PEM_BLOCK_RE.findall(text)
    if not blocks:
        if _PEM_BEGIN_RE.search(text):
            raise NTSError("certificate", "%s: not a PEM certificate (a BEGIN line has no matching END line)" % what)
        raise NTSError("certificate", "%s: not a PEM certificate (no '-----BEGIN CERTIFICATE-----' block found)" % what)
    begins = len(_PEM_BEGIN_RE.findall(text))
    if begins != len(blocks):
        raise NTSError(
            "certificate",
            "%s: not a PEM certificate (%d BEGIN lines but only %d complete PEM blocks)" % (what, begins, len(blocks)),
        )
    certs = []
    for i, (label, body, end_label) in enumerate(blocks, 1):
        if label != end_label:
            raise NTSError(
                "certificate",
                "%s: PEM block #%d starts with BEGIN %s but ends with END %s" % (what, i, label, end_label),
            )
        if label not in ("CERTIFICATE", "X509 CERTIFICATE"):
            raise NTSError("certificate", "%s: PEM block #%d is '%s', expected 'CERTIFICATE'" % (what, i, label))
        pem = "-----BEGIN %s-----%s-----END %s-----\n" % (label, body, label)
        try:
            certs.append(crypto.load_certificate(crypto.FILETYPE_PEM, pem.encode("ascii")))
        except (crypto.Error, ValueError) as exc:
            reason = _ssl_reason(exc) if isinstance(exc, crypto.Error) else str(exc)
            raise NTSError(
                "certificate", "%s: PEM block #%d is not a valid certificate (%s)" % (what, i, reason)
            ) from None
    return certs


def _load_ca_file(ctx, path, what):
    """``ctx.load_verify_locations(path)`` with errors that name ``path`` and say what is wrong with it."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise NTSError("certificate", "%s: cannot read it (%s)" % (what, _os_reason(exc))) from None
    try:
        ctx.load_verify_locations(path)
    except SSL.Error as exc:
        load_ca_pem(data, what)  # raises the precise reason when the content is at fault
        raise NTSError("certificate", "%s: OpenSSL cannot load it (%s)" % (what, _ssl_reason(exc))) from None


def tls_context(ca_file=None, ca_pem=None, no_cert_time_check=False, owner=None):
    """A TLS 1.3 client context with ALPN ntske/1 trusting ``ca_pem`` (text), ``ca_file`` or the system store.

    Returns ``(context, recorder)``; the recorder collects verification errors for one connection. ``owner`` (the
    server) is named in CA errors: "ca_pem for nts1.example: ..." or "ca_file /etc/ca.pem for nts1.example: ...".
    """
    suffix = " for %s" % owner if owner else ""
    recorder = _VerifyRecorder()
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_alpn_protos([ALPN_NTSKE])
    ctx.set_verify(SSL.VERIFY_PEER, recorder)
    if ca_pem is not None:
        what = "ca_pem" + suffix
        store = ctx.get_cert_store()
        for i, cert in enumerate(load_ca_pem(ca_pem, what), 1):
            try:
                store.add_cert(cert)
            except crypto.Error as exc:
                if "already in hash table" not in _ssl_reason(exc):  # the same CA twice is harmless
                    raise NTSError(
                        "certificate", "%s: cannot add certificate #%d (%s)" % (what, i, _ssl_reason(exc))
                    ) from None
    elif ca_file:
        _load_ca_file(ctx, ca_file, "ca_file %s%s" % (ca_file, suffix))
    else:
        ctx.set_default_verify_paths()
    if no_cert_time_check:
        ctx.get_cert_store().set_flags(X509_V_FLAG_NO_CHECK_TIME)
    return ctx, recorder


def tls_handshake(sock, server_name, tls, timeout, deadline=None):
    """TLS 1.3 handshake with ALPN ntske/1, chain and name verification. Returns the pyOpenSSL connection.

    ``tls`` is the ``(context, recorder)`` pair of :func:`tls_context`.
    """
    ctx, recorder = tls
    deadline = _deadline(timeout, deadline)
    conn = SSL.Connection(ctx, sock)
    try:
        ipaddress.ip_address(server_name)
    except ValueError:
        try:
            conn.set_tlsext_host_name(server_name.rstrip(".").encode("idna"))
        except UnicodeError as exc:
            raise NTSError("tls", "server name %r cannot be sent as TLS SNI: %s" % (server_name, exc)) from None
    conn.set_connect_state()
    what = "after %.1fs during the TLS handshake" % timeout
    while True:
        try:
            conn.do_handshake()
            break
        except SSL.WantReadError:
            _wait(sock, False, deadline, "tls", what)
        except SSL.WantWriteError:
            _wait(sock, True, deadline, "tls", what)
        except SSL.Error as exc:
            if recorder.errors:
                errnum, depth, subject = recorder.errors[0]
                raise NTSError(
                    "certificate",
                    "certificate verification failed for %r: %s (depth %d, subject %s)"
                    % (server_name, _X509_ERRORS.get(errnum, "X509 verify error %d" % errnum), depth, subject),
                    x509_error=errnum,
                ) from None
            if isinstance(exc, SSL.SysCallError) or _is_unexpected_eof(exc):
                raise NTSError("tls", "%s during the TLS handshake" % _network_reason(exc)) from None
            reason = _ssl_reason(exc)
            if "version" in reason:
                reason += " (this client requires TLS 1.3)"
            raise NTSError("tls", "TLS handshake failed: %s" % reason) from None
    if conn.get_protocol_version_name() != "TLSv1.3":
        raise NTSError("tls", "negotiated %s instead of TLS 1.3" % conn.get_protocol_version_name())
    alpn = conn.get_alpn_proto_negotiated()
    if alpn != ALPN_NTSKE:
        raise NTSError(
            "tls", "server did not negotiate ALPN 'ntske/1' (got %r): not an NTS-KE server" % (alpn or None,)
        )
    leaf = conn.get_peer_certificate()
    if leaf is None:
        raise NTSError("certificate", "server presented no certificate")
    try:
        check_certificate_name(leaf.to_cryptography(), server_name)
    except ValueError as exc:  # cryptography parses extensions lazily: a malformed subjectAltName raises here
        raise NTSError("certificate", "cannot parse the server certificate: %s" % exc) from None
    return conn


def ke_exchange(conn, sock, request, timeout, deadline=None):
    """Send the NTS-KE request and read the response up to End of Message (not up to the server's close)."""
    deadline = _deadline(timeout, deadline)
    what = "after %.1fs waiting for the NTS-KE response" % timeout
    view = memoryview(request)
    while view:
        try:
            sent = conn.send(view.tobytes())
            view = view[sent:]
        except SSL.WantWriteError:
            _wait(sock, True, deadline, "nts-ke", what)
        except SSL.WantReadError:
            _wait(sock, False, deadline, "nts-ke", what)
        except SSL.SysCallError as exc:
            raise NTSError("nts-ke", "%s while sending the NTS-KE request" % _network_reason(exc)) from None
        except SSL.Error as exc:
            raise NTSError("nts-ke", "cannot send the NTS-KE request: %s" % _network_reason(exc)) from None
    reader = KEMessageReader()
    while True:
        try:
            chunk = conn.recv(4096)
        except SSL.WantReadError:
            _wait(sock, False, deadline, "nts-ke", what)
            continue
        except SSL.WantWriteError:
            _wait(sock, True, deadline, "nts-ke", what)
            continue
        except SSL.ZeroReturnError:
            reader.finish()
            break
        except SSL.Error as exc:
            if _is_unexpected_eof(exc):  # the server closed without close_notify: judge what it sent
                reader.finish()
                break
            if isinstance(exc, SSL.SysCallError):
                raise NTSError("nts-ke", "%s while reading the NTS-KE response" % _network_reason(exc)) from None
            raise NTSError("nts-ke", "TLS error while reading the NTS-KE response: %s" % _ssl_reason(exc)) from None
        if not chunk:
            reader.finish()
            break
        if reader.feed(chunk):
            break
    return reader.records


def export_keys(conn, aead=AEAD_AES_SIV_CMAC_256):
    """C2S and S2C keys from the TLS exporter (RFC 8915 5.1): context = protocol 0 | AEAD id | 0 (C2S) / 1 (S2C)."""
    length = AEAD_KEY_LENGTH[aead]
    try:
        c2s = conn.export_keying_material(EXPORTER_LABEL, length, struct.pack("!HHB", NEXT_PROTOCOL_NTPV4, aead, 0))
        s2c = conn.export_keying_material(EXPORTER_LABEL, length, struct.pack("!HHB", NEXT_PROTOCOL_NTPV4, aead, 1))
    except SSL.Error as exc:
        raise NTSError("nts-ke", "cannot export the NTS keys from TLS: %s" % _ssl_reason(exc)) from None
    return c2s, s2c


def ntp_exchange(family, sockaddr, cookie, c2s, s2c, timeout, placeholders=0, deadline=None):
    """Send one NTS NTPv4 request over UDP and return (parsed response, T1 ns, T4 ns)."""
    deadline = _deadline(timeout, deadline)
    uid = os.urandom(UID_LENGTH)
    transmit = os.urandom(8)
    packet = build_ntp_request(cookie, c2s, uid, transmit, os.urandom(NONCE_LENGTH), placeholders)
    where = "%s port %d" % (sockaddr[0], sockaddr[1])
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:
        raise NTSError("ntp", "cannot create a UDP socket for %s: %s" % (where, _os_reason(exc))) from None
    try:
        try:
            sock.setblocking(False)
            sock.connect(sockaddr)
            t1 = time.time_ns()
            sock.send(packet)
        except OSError as exc:
            raise NTSError("ntp", "cannot send to %s: %s" % (where, _os_reason(exc))) from None
        while True:
            _wait(sock, False, deadline, "ntp", "after %.1fs waiting for the NTP response from %s" % (timeout, where))
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                continue
            except OSError as exc:  # e.g. ICMP port unreachable -> ECONNREFUSED
                raise NTSError("ntp", "no NTP service at %s: %s" % (where, _os_reason(exc))) from None
            t4 = time.time_ns()
            return parse_ntp_response(data, s2c, uid, transmit), t1, t4
    finally:
        _close_quietly(sock)


# ---------------------------------------------------------------------------------------------------------------
# Public entry points


def parse_hostport(text, default_port=NTS_KE_PORT):
    """'host', 'host:port', '[v6]:port' or a bare IPv6 literal -> (host, port); ValueError names the bad part."""
    text = str(text).strip()
    if not text:
        raise ValueError("empty server specification")
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("unbalanced '[' in server %r" % text)
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("unexpected %r after ']' in server %r" % (rest, text))
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host:
        raise ValueError("empty host in server %r" % text)
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError("port %r of server %r is not an integer" % (port, text)) from None
    if not 1 <= port <= 65535:
        raise ValueError("port %d of server %r is outside 1..65535" % (port, text))
    return host, port


def _result_template(host, port, address, server_name):
    return {
        "host": host,
        "port": port,
        "address": address,
        "server_name": server_name,
        "ok": False,
        "stage": None,
        "error": None,
        "nak": False,
        "aead": None,
        "cookies": None,
        "cookie_length": None,
        "ntp_server": None,
        "ntp_address": None,
        "ntp_port": None,
        "ntp_cookies": None,
        "cert_subject": None,
        "cert_issuer": None,
        "cert_not_before": None,
        "cert_not_after": None,
        "cert_days_left": None,
        "offset": None,
        "delay": None,
        "stratum": None,
        "leap": None,
        "refid": None,
        "root_delay": None,
        "root_dispersion": None,
        "synchronised": None,
        "ignored_records": [],
        "timings": {},
    }


def probe(
    host,
    port=NTS_KE_PORT,
    address=None,
    server_name=None,
    ca_file=None,
    no_cert_time_check=False,
    timeout=5.0,
    placeholders=0,
    cookie_override=None,
    ca_pem=None,
):
    """Probe one NTS server; return a result dict and never raise for network or protocol faults.

    ``timeout`` is the deadline of the whole probe (DNS, TCP, TLS, NTS-KE, the NTP server's DNS and the NTP
    exchange together), not of each step. ``address`` (an IP literal) is connected to instead of resolving ``host``;
    the certificate is still verified for ``server_name`` (default ``host``). ``ca_file`` (a path) or ``ca_pem`` (PEM
    text, loaded in memory) replaces the system trust store; a CA that cannot be loaded fails the probe at stage
    ``certificate`` before any packet is sent, with a message naming the input and the server. ``cookie_override``
    sends that cookie instead of a server-issued one (testing NTS NAK handling). Result keys: see
    :func:`_result_template`; ``ok`` True means the key exchange and one authenticated NTP exchange both succeeded.

    Socket and OpenSSL errors anywhere (a reset connection, a socket that cannot be created, ...) are the failure of
    the stage in progress. Raises :class:`MissingDependencyError` when pyOpenSSL/cryptography are missing and
    ValueError for bad arguments.
    """
    check_dependencies()
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError("port %r of server %r is not an integer" % (port, host)) from None
    if not 1 <= port <= 65535:
        raise ValueError("port %d of server %r is outside 1..65535" % (port, host))
    if not host or not isinstance(host, str):
        raise ValueError("host must be a non-empty string, got %r" % (host,))
    if address is not None:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise ValueError("address %r for server %r is not an IP address" % (address, host)) from None
    if isinstance(timeout, bool) or not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError("timeout must be a positive number of seconds, got %r" % (timeout,))
    if isinstance(placeholders, bool) or not isinstance(placeholders, int) or not 0 <= placeholders <= MAX_PLACEHOLDERS:
        raise ValueError("placeholders must be an integer 0..%d, got %r" % (MAX_PLACEHOLDERS, placeholders))
    if ca_file and ca_pem is not None:
        raise ValueError("server %r: give ca_file or ca_pem, not both" % (host,))
    server_name = server_name or host
    result = _result_template(host, port, address, server_name)
    timings = result["timings"]
    start = time.monotonic()
    deadline = start + timeout
    conn = sock = None
    stage = "certificate"  # the stage in progress, for errors that are not NTSError

    def lap(name, t0):
        timings[name] = round(time.monotonic() - t0, 6)
        return time.monotonic()

    try:
        tls = tls_context(ca_file, ca_pem, no_cert_time_check, owner=host)  # CA input errors before any packet
        stage = "dns"
        t0 = time.monotonic()
        addrs = resolve(address or host, port, timeout, deadline=deadline)
        t0 = lap("dns", t0)
        stage = "tcp"
        sock, peer = tcp_connect(addrs, timeout, deadline=deadline)
        result["address"] = peer[0]
        t0 = lap("tcp", t0)
        stage = "tls"
        conn = tls_handshake(sock, server_name, tls, timeout, deadline=deadline)
        stage = "certificate"
        try:
            result.update(certificate_summary(conn.get_peer_certificate().to_cryptography()))
        except ValueError as exc:
            raise NTSError("certificate", "cannot parse the server certificate: %s" % exc) from None
        t0 = lap("tls", t0)
        stage = "nts-ke"
        records = ke_exchange(conn, sock, build_ke_request(), timeout, deadline=deadline)
        ke = interpret_ke_response(records)
        c2s, s2c = export_keys(conn, ke["aead"])
        t0 = lap("nts_ke", t0)
        result.update(
            aead=ke["aead"],
            cookies=len(ke["cookies"]),
            cookie_length=len(ke["cookies"][0]),
            ntp_server=ke["server"],
            ntp_port=ke["port"] or NTP_PORT,
            ignored_records=ke["ignored"],
        )
        _close_tls(conn, sock)
        conn = sock = None

        # NTP destination: negotiated server (record 6) or the NTS-KE server's own address
        stage = "ntp"
        ntp_port = result["ntp_port"]
        ntp_host = ke["server"]
        if ntp_host is None or (address and ntp_host.lower().rstrip(".") == host.lower().rstrip(".")):
            ntp_addrs = [(_family_of(peer[0]), (peer[0], ntp_port, *peer[2:]))]
        else:
            ntp_addrs = resolve(ntp_host, ntp_port, timeout, socket.SOCK_DGRAM, deadline=deadline)
            t0 = lap("ntp_dns", t0)
        family, sockaddr = ntp_addrs[0]
        result["ntp_address"] = sockaddr[0]
        cookie = cookie_override if cookie_override is not None else ke["cookies"][0]
        resp, t1, t4 = ntp_exchange(family, sockaddr, cookie, c2s, s2c, timeout, placeholders, deadline=deadline)
        lap("ntp", t0)
        offset, delay = offset_and_delay(t1, resp["receive"], resp["transmit"], t4)
        result.update(
            ok=True,
            offset=offset,
            delay=delay,
            stratum=resp["stratum"],
            leap=resp["leap"],
            refid=format_refid(resp["refid"], resp["stratum"]),
            root_delay=resp["root_delay"],
            root_dispersion=resp["root_dispersion"],
            synchronised=server_synchronised(resp["stratum"], resp["leap"]),
            ntp_cookies=len(resp["cookies"]),
        )
    except NTSError as exc:
        result.update(ok=False, stage=exc.stage, error=exc.message, nak=bool(exc.details.get("nak")))
    except (OSError, SSL.Error) as exc:  # a network error no step turned into an NTSError
        result.update(ok=False, stage=stage, error="%s during the %s stage" % (_network_reason(exc), stage))
    except Exception as exc:  # a bug met by odd input must not cost the other servers their results
        result.update(
            ok=False,
            stage=stage,
            error="unexpected %s during the %s stage: %s (a bug in nts_client, please report it)"
            % (exc.__class__.__name__, stage, exc),
        )
    finally:
        if conn is not None or sock is not None:
            _close_tls(conn, sock)
        timings["total"] = round(time.monotonic() - start, 6)
    return result


def _family_of(ip_text):
    return socket.AF_INET6 if ipaddress.ip_address(ip_text).version == 6 else socket.AF_INET


def _close_tls(conn, sock):
    """Send one close_notify (never waits for the peer's) and close the socket; errors here change nothing."""
    if conn is not None:
        try:
            conn.shutdown()
        except (SSL.Error, OSError):
            pass
    _close_quietly(sock)


_SPEC_KEYS = frozenset(
    (
        "host",
        "port",
        "ntsport",
        "address",
        "server_name",
        "ca_file",
        "ca_pem",
        "no_cert_time_check",
        "timeout",
        "placeholders",
    )
)


def probe_many(specs, concurrency=16, timeout=5.0, **common):
    """Probe several servers with a bounded thread pool; results in the order of ``specs``.

    Each spec is a dict of :func:`probe` keyword arguments (``host`` required, ``ntsport`` accepted as an alias of
    ``port``) or a ``host[:port]`` string;
    ``common`` supplies defaults (ca_file, no_cert_time_check, ...); a spec's own ``ca_file`` or ``ca_pem`` replaces
    the common one. ``timeout`` is each server's overall deadline, so with ``concurrency`` >= the number of servers
    the whole run takes at most about one ``timeout``. One server's failure, however it fails, is its own result.
    """
    check_dependencies()
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError("concurrency must be a positive integer, got %r" % (concurrency,))
    calls = []
    for spec in specs:
        if isinstance(spec, str):
            host, port = parse_hostport(spec)
            kwargs = dict(common, host=host, port=port)
        elif isinstance(spec, dict):
            if not spec.get("host"):
                raise ValueError("server entry %r has no 'host'" % (spec,))
            unknown = sorted(set(spec) - _SPEC_KEYS)
            if unknown:
                raise ValueError(
                    "server entry for %r has unknown key(s) %s (allowed: %s)"
                    % (spec["host"], ", ".join(unknown), ", ".join(sorted(_SPEC_KEYS)))
                )
            kwargs = dict(common)
            own = {k: v for k, v in spec.items() if v is not None}
            if own.get("ca_file") or own.get("ca_pem") is not None:  # the server's own CA replaces the common one
                kwargs.pop("ca_file", None)
                kwargs.pop("ca_pem", None)
            kwargs.update(own)
            if "ntsport" in kwargs:
                ntsport = kwargs.pop("ntsport")
                if "port" in spec and spec["port"] != ntsport:
                    raise ValueError(
                        "server entry for %r: 'port' %r and 'ntsport' %r disagree"
                        % (spec["host"], spec["port"], ntsport)
                    )
                kwargs["port"] = ntsport
        else:
            raise ValueError("server entry %r is neither a string nor a dict" % (spec,))
        kwargs.setdefault("timeout", timeout)
        calls.append(kwargs)
    if not calls:
        return []
    with ThreadPoolExecutor(max_workers=min(concurrency, len(calls)), thread_name_prefix="nts-probe") as pool:
        return list(pool.map(lambda kw: probe(**kw), calls))


# --- The nts_probe task: the module (on any host) and its action plugin (in-process on the controller) share this. ---

PROBE_ARGUMENT_SPEC = dict(
    servers=dict(type="list", elements="raw", required=True),
    ca_file=dict(type="path"),
    no_cert_time_check=dict(type="bool", default=False),
    timeout=dict(type="float", default=5.0),
    concurrency=dict(type="int", default=16),
    fail_on_error=dict(type="bool", default=True),
    min_ok=dict(type="int", default=1),
)

SERVER_KEYS = ("host", "port", "ntsport", "address", "ca_file", "ca_pem", "server_name")


def normalise_servers(servers):
    """Turn the ``servers`` option into probe_many specs; raise ValueError naming the bad entry and field."""
    specs = []
    for i, entry in enumerate(servers):
        where = "servers[%d]" % i
        if isinstance(entry, str):
            try:
                host, port = parse_hostport(entry)
            except ValueError as exc:
                raise ValueError("%s: %s" % (where, exc)) from None
            specs.append({"host": host, "port": port})
            continue
        if not isinstance(entry, dict):
            raise ValueError("%s: must be a string or a dictionary, got %s %r" % (where, type(entry).__name__, entry))
        unknown = sorted(set(entry) - set(SERVER_KEYS))
        if unknown:
            raise ValueError(
                "%s: unknown key(s) %s (allowed: %s)" % (where, ", ".join(unknown), ", ".join(SERVER_KEYS))
            )
        host = entry.get("host")
        if not isinstance(host, str) or not host.strip():
            raise ValueError("%s: 'host' must be a non-empty string, got %r" % (where, host))
        if "port" in entry and "ntsport" in entry and entry["port"] != entry["ntsport"]:
            raise ValueError(
                "%s: 'port' (%r) and its alias 'ntsport' (%r) disagree" % (where, entry["port"], entry["ntsport"])
            )
        port = entry.get("port", entry.get("ntsport", 4460))
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise ValueError("%s: 'port' must be an integer, got %r" % (where, port)) from None
        if not 1 <= port <= 65535:
            raise ValueError("%s: 'port' %d is outside 1..65535" % (where, port))
        spec = {"host": host.strip(), "port": port}
        if entry.get("ca_file") and entry.get("ca_pem"):
            raise ValueError("%s: give 'ca_file' or 'ca_pem', not both" % where)
        for key in ("address", "ca_file", "ca_pem", "server_name"):
            value = entry.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not value:
                raise ValueError("%s: '%s' must be a non-empty string, got %r" % (where, key, value))
            spec[key] = value
        specs.append(spec)
    return specs


def run_probe_task(p):
    """Run the nts_probe task on checked parameters ``p``; returns (result, failure message or None, warnings).

    A server's ``ca_pem`` is loaded in memory (nothing is written to disk), so a CA error names ``ca_pem`` and the
    server. Every server gets a result, whatever its network does; only bad parameters fail the task up front.
    """
    out = dict(changed=False, results=[], ok_servers=[], failed_servers=[])
    if not p["servers"]:
        return out, "servers: at least one server is required", []
    if p["timeout"] <= 0:
        return out, "timeout: must be a positive number of seconds, got %r" % p["timeout"], []
    if p["concurrency"] < 1:
        return out, "concurrency: must be at least 1, got %r" % p["concurrency"], []
    if p["min_ok"] < 0:
        return out, "min_ok: must be 0 or more, got %r" % p["min_ok"], []
    if p["min_ok"] > len(p["servers"]):
        return out, "min_ok: %d is more than the %d server(s) given" % (p["min_ok"], len(p["servers"])), []
    try:
        specs = normalise_servers(p["servers"])
    except ValueError as exc:
        return out, str(exc), []
    for spec in specs:
        if spec.get("ca_file"):
            spec["ca_file"] = os.path.expanduser(spec["ca_file"])
    try:
        results = probe_many(
            specs,
            concurrency=p["concurrency"],
            timeout=p["timeout"],
            ca_file=p["ca_file"],
            no_cert_time_check=p["no_cert_time_check"],
        )
    except MissingDependencyError as exc:
        return out, str(exc), []
    except ValueError as exc:
        return out, "invalid server specification: %s" % exc, []
    out.update(
        results=results,
        ok_servers=[r["host"] for r in results if r["ok"]],
        failed_servers=[r["host"] for r in results if not r["ok"]],
    )
    warnings = [
        "%s answered with authenticated time but says it is unsynchronised (stratum %s, leap %s)"
        % (r["host"], r["stratum"], r["leap"])
        for r in results
        if r["ok"] and not r["synchronised"]
    ]
    reasons = []
    if p["fail_on_error"] and out["failed_servers"]:
        reasons.append(
            "NTS probe failed for %s"
            % "; ".join(
                "%s:%s (%s: %s)" % (r["host"], r["port"], r["stage"], r["error"]) for r in results if not r["ok"]
            )
        )
    if len(out["ok_servers"]) < p["min_ok"]:
        reasons.append("only %d server(s) passed, min_ok is %d" % (len(out["ok_servers"]), p["min_ok"]))
    return out, "; ".join(reasons) or None, warnings
