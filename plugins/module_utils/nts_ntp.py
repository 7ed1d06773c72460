# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""NTS-protected NTPv4 packets (RFC 8915 section 5): the AEADs (AEAD_AES_SIV_CMAC_256 and AEAD_AES_128_GCM_SIV),
extension fields, request building and response checking, timestamps. No Ansible imports.

AES-SIV comes from ``cryptography``'s ``AESSIV`` (cryptography >= 37). AES-128-GCM-SIV (RFC 8452) comes from its
``AESGCMSIV``, which only recent builds have (the PyPI wheels of cryptography >= 42, which bundle OpenSSL >= 3.2;
not Debian 12's python3-cryptography 38): :func:`aead_unavailable` says whether and why it is missing, and
:func:`default_aeads` offers AEAD 30 only where it works.
"""

from __future__ import annotations

import hmac
import socket
import struct

try:
    from cryptography.exceptions import InternalError, InvalidTag
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    _CRYPTOGRAPHY_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only on hosts without the library
    InternalError = InvalidTag = AESSIV = cmac = algorithms = None
    _CRYPTOGRAPHY_ERROR = exc

try:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

    _GCM_SIV_IMPORT_ERROR = None
except ImportError as exc:  # cryptography < 42, or a distribution build without it (Debian 12: 38.0.4)
    AESGCMSIV = None
    _GCM_SIV_IMPORT_ERROR = exc

from ansible_collections.nts.chrony.plugins.module_utils.nts_ke import (
    AEAD_AES_128_GCM_SIV,
    AEAD_AES_SIV_CMAC_256,
    AEAD_KEY_LENGTH,
    AEAD_MAX_NONCE_LENGTH,
    AEAD_NONCE_LENGTH,
    EF_AUTHENTICATOR,
    EF_COOKIE,
    EF_COOKIE_PLACEHOLDER,
    EF_UNIQUE_IDENTIFIER,
    KISS_NTS_NAK,
    MAX_PLACEHOLDERS,
    NTP_HEADER_LENGTH,
    NTP_UNIX_DELTA,
    SIV_TAG_LENGTH,
    SUPPORTED_AEADS,
    NTSError,
    aead_name,
)

# ---------------------------------------------------------------------------------------------------------------
# AEADs

_AEAD_UNAVAILABLE = {}


def _cryptography_version():
    try:
        import cryptography

        return cryptography.__version__
    except ImportError:  # pragma: no cover
        return None


def aead_unavailable(aead):
    """None when this host can use AEAD ``aead``, else the reason (a sentence naming the library and its version).

    AES-128-GCM-SIV needs ``cryptography``'s ``AESGCMSIV`` AND an OpenSSL that implements it (a build against an
    OpenSSL older than 3.2 has the class but refuses it): one key is set up and used once to find out, and the answer
    is kept for the life of the process.
    """
    if aead in _AEAD_UNAVAILABLE:
        return _AEAD_UNAVAILABLE[aead]
    version = _cryptography_version()
    reason = None
    if aead not in SUPPORTED_AEADS:
        reason = "%s is not implemented by this probe (it implements %s)" % (
            aead_name(aead),
            ", ".join("%d" % a for a in SUPPORTED_AEADS),
        )
    elif _CRYPTOGRAPHY_ERROR is not None:
        reason = "the Python library 'cryptography' is not importable: %s" % (_CRYPTOGRAPHY_ERROR,)
    elif aead == AEAD_AES_128_GCM_SIV:
        if AESGCMSIV is None:
            reason = (
                "cryptography %s on this host has no AESGCMSIV (AES-128-GCM-SIV needs cryptography >= 42 built "
                "with OpenSSL >= 3.2, e.g. the PyPI wheels)" % version
            )
        else:
            try:
                AESGCMSIV(bytes(16)).encrypt(bytes(12), b"", None)
            except Exception as exc:  # UnsupportedAlgorithm from a build whose OpenSSL lacks AES-GCM-SIV
                reason = "cryptography %s on this host cannot use AESGCMSIV: %s" % (version, exc)
    _AEAD_UNAVAILABLE[aead] = reason
    return reason


def default_aeads():
    """The AEADs offered by default, in preference order: [30, 15] where AES-128-GCM-SIV works, else [15]."""
    return [a for a in SUPPORTED_AEADS if aead_unavailable(a) is None]


def _check_key(aead, key):
    if aead not in AEAD_KEY_LENGTH:
        raise ValueError("unsupported AEAD %r (supported: %s)" % (aead, ", ".join(str(a) for a in SUPPORTED_AEADS)))
    if len(key) != AEAD_KEY_LENGTH[aead]:
        raise ValueError("%s needs a %d-byte key, got %d" % (aead_name(aead), AEAD_KEY_LENGTH[aead], len(key)))


def _gcm_siv_inputs(associated_data, nonce):
    if nonce is None or len(nonce) != AEAD_NONCE_LENGTH[AEAD_AES_128_GCM_SIV]:
        raise ValueError("AEAD_AES_128_GCM_SIV needs a 12-byte nonce, got %r" % (None if nonce is None else len(nonce)))
    ad = list(associated_data)
    if len(ad) > 1:
        raise ValueError("AEAD_AES_128_GCM_SIV takes one associated data string, got %d" % len(ad))
    return bytes(nonce), (bytes(ad[0]) if ad else None)


def _dbl(block):
    """RFC 5297 dbl(): multiply a 128-bit block by x in GF(2^128)."""
    value = int.from_bytes(block, "big") << 1
    if value >> 128:
        value = (value & ((1 << 128) - 1)) ^ 0x87
    return value.to_bytes(16, "big")


def _aes_cmac(key, data):
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def siv_of_empty_plaintext(key, components):
    """AES-SIV output (the 16-byte SIV, nothing else) for an EMPTY plaintext: RFC 5297 S2V with K1 = the key's first
    half over ``components`` (associated data, then the nonce) and the empty plaintext as last string.

    Used where ``AESSIV`` fails on empty plaintexts: cryptography 38 with OpenSSL 3.0 (Debian 12's python3-cryptography
    38.0.4) raises InternalError when sealing one and InvalidTag when opening a valid one, and every NTS client
    request has an empty plaintext.
    """
    k1 = bytes(key[: len(key) // 2])
    digest = _aes_cmac(k1, bytes(16))
    for component in components:
        digest = bytes(a ^ b for a, b in zip(_dbl(digest), _aes_cmac(k1, bytes(component))))
    last = bytes(a ^ b for a, b in zip(_dbl(digest), b"\x80" + bytes(15)))  # dbl(D) xor pad(""), RFC 5297 2.4
    return _aes_cmac(k1, last)


def aead_seal(key, plaintext, associated_data, nonce, aead=AEAD_AES_SIV_CMAC_256):
    """Encrypt and authenticate ``plaintext`` with AEAD ``aead`` (15 or 30); ``associated_data`` is a list.

    AEAD_AES_SIV_CMAC_256 (RFC 5297): the nonce goes LAST in the associated data list and the result is SIV tag
    (16 bytes) || ciphertext; ``nonce`` None means deterministic mode (RFC 5297 A.1). AEAD_AES_128_GCM_SIV (RFC 8452):
    one associated data string at most, a 12-byte nonce, and the result is ciphertext || tag (16 bytes).
    """
    _check_key(aead, key)
    if aead == AEAD_AES_128_GCM_SIV:
        nonce, ad = _gcm_siv_inputs(associated_data, nonce)
        return AESGCMSIV(key).encrypt(nonce, plaintext, ad)
    ad = list(associated_data) + ([nonce] if nonce is not None else [])
    try:
        return AESSIV(key).encrypt(plaintext, ad or None)
    except (InternalError, ValueError):
        if plaintext:
            raise
        return siv_of_empty_plaintext(key, ad)


def aead_open(key, ciphertext, associated_data, nonce, aead=AEAD_AES_SIV_CMAC_256):
    """Inverse of :func:`aead_seal`; raises ``cryptography.exceptions.InvalidTag`` when authentication fails."""
    _check_key(aead, key)
    if aead == AEAD_AES_128_GCM_SIV:
        nonce, ad = _gcm_siv_inputs(associated_data, nonce)
        return AESGCMSIV(key).decrypt(nonce, ciphertext, ad)
    ad = list(associated_data) + ([nonce] if nonce is not None else [])
    if len(ciphertext) == SIV_TAG_LENGTH:  # empty plaintext: checked here, cryptography 38 rejects every such input
        if not hmac.compare_digest(siv_of_empty_plaintext(key, ad), bytes(ciphertext)):
            raise InvalidTag()
        return b""
    return AESSIV(key).decrypt(ciphertext, ad or None)


# ---------------------------------------------------------------------------------------------------------------
# NTP packets


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


def additional_padding(aead, nonce_length):
    """Octets of Additional Padding a client request needs (RFC 8915 5.6): N_REQ = min(16, N_MAX) rounded up to a
    multiple of 4, minus the padded nonce; 0 for both AEADs with the nonces the probe uses (16 and 12 bytes)."""
    n_req = min(16, AEAD_MAX_NONCE_LENGTH.get(aead, 16))
    n_req += -n_req % 4
    return max(0, n_req - (nonce_length + (-nonce_length % 4)))


def build_ntp_request(cookie, c2s_key, uid, transmit, nonce, placeholders=0, aead=AEAD_AES_SIV_CMAC_256):
    """Build an NTS-protected NTPv4 client request.

    ``transmit`` is the 8-byte value put into the transmit timestamp (random, not the local clock: the real T1 is
    kept by the caller). Extension fields: Unique Identifier, one cookie, ``placeholders`` Cookie Placeholders of
    the cookie's length, then the Authenticator (empty plaintext, associated data = everything before it) sealed
    with ``aead`` (the nonce must be 16 bytes or more for AES-SIV, exactly 12 for AES-128-GCM-SIV).
    """
    if len(transmit) != 8:
        raise ValueError("transmit timestamp must be 8 bytes, got %d" % len(transmit))
    if len(uid) < 32:
        raise ValueError("unique identifier must be at least 32 bytes, got %d" % len(uid))
    if not 0 <= placeholders <= MAX_PLACEHOLDERS:
        raise ValueError("placeholders must be 0..%d, got %r" % (MAX_PLACEHOLDERS, placeholders))
    if not cookie:
        raise ValueError("cookie must not be empty")
    if aead == AEAD_AES_SIV_CMAC_256 and len(nonce) < 16:
        raise ValueError("AEAD_AES_SIV_CMAC_256 requests need a nonce of at least 16 bytes, got %d" % len(nonce))
    header = struct.pack("!BBbb", (0 << 6) | (4 << 3) | 3, 0, 0, 0) + b"\x00" * 36 + bytes(transmit)
    efs = encode_ef(EF_UNIQUE_IDENTIFIER, uid) + encode_ef(EF_COOKIE, cookie)
    efs += encode_ef(EF_COOKIE_PLACEHOLDER, b"\x00" * len(cookie)) * placeholders
    ad = header + efs
    ciphertext = aead_seal(c2s_key, b"", [ad], nonce, aead)
    # the nonce (16 or 12 bytes) and the 16-byte tag need no padding; additional padding only for short nonces
    auth_body = struct.pack("!HH", len(nonce), len(ciphertext)) + _pad4(nonce) + _pad4(ciphertext)
    auth_body += b"\x00" * additional_padding(aead, len(nonce))
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


def parse_ntp_response(data, s2c_key, uid, transmit, aead=AEAD_AES_SIV_CMAC_256):
    """Validate an NTS-protected NTPv4 server response and return its fields.

    Checks, in this order: length and mode 4 (stage ntp), origin timestamp == our transmit value (ntp), the Unique
    Identifier (authentication), NTS NAK (authentication, ``nak`` detail True), authenticator present and last,
    decryption with the S2C key and the negotiated ``aead`` (authentication; AES-128-GCM-SIV needs a 12-byte
    nonce). Returns a dict with leap, version, mode, stratum, poll, precision, root_delay, root_dispersion, refid
    (bytes), receive and transmit (NTP 64-bit ints) and cookies (list of new cookies from the encrypted extension
    fields).
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
    if aead == AEAD_AES_128_GCM_SIV and nonce_len != AEAD_NONCE_LENGTH[AEAD_AES_128_GCM_SIV]:
        raise NTSError(
            "authentication",
            "malformed NTS Authenticator: AEAD_AES_128_GCM_SIV needs a 12-byte nonce, the response has %d" % nonce_len,
        )
    try:
        plaintext = aead_open(s2c_key, ciphertext, [data[:start]], nonce, aead)
    except InvalidTag:
        raise NTSError(
            "authentication",
            "NTS Authenticator does not verify with the S2C key (%s; tampered or forged response, or keys derived "
            "differently)" % aead_name(aead),
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
