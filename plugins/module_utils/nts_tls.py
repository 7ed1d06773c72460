# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""TLS 1.3 for NTS-KE: trust anchors (ca_file, ca_pem), the pyOpenSSL context and handshake, certificate names and
validity, and the RFC 8915 key export.

Keys are exported with pyOpenSSL's ``Connection.export_keying_material`` (pyOpenSSL >= 17.5); the standard library's
``ssl`` has no exporter. pyOpenSSL checks no host name: :func:`check_certificate_name` does that on the leaf
certificate (subjectAltName DNS and IP entries, left-most-label wildcards, no Common Name fallback). No Ansible imports.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import struct

# AESSIV is imported only as a capability check: NTS needs AES-SIV, cryptography >= 37 (nts_ntp uses it).
try:
    from cryptography import x509
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV  # pylint: disable=unused-import

    _CRYPTOGRAPHY_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only on hosts without the library
    x509 = AESSIV = None
    _CRYPTOGRAPHY_ERROR = exc

try:
    from OpenSSL import SSL, crypto

    _PYOPENSSL_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only on hosts without the library
    SSL = crypto = None
    _PYOPENSSL_ERROR = exc

from ansible_collections.nts.chrony.plugins.module_utils.nts_ke import (
    AEAD_AES_SIV_CMAC_256,
    AEAD_KEY_LENGTH,
    ALPN_NTSKE,
    EXPORTER_LABEL,
    NEXT_PROTOCOL_NTPV4,
    NTSError,
)
from ansible_collections.nts.chrony.plugins.module_utils.nts_net import (
    _deadline,
    _is_unexpected_eof,
    _network_reason,
    _os_reason,
    _ssl_reason,
    _wait,
)

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
# Certificates


def _name_matches(pattern, name):
    pattern = pattern.lower().rstrip(".")
    name = name.lower().rstrip(".")
    if pattern == name:
        return True
    if pattern.startswith("*.") and "*" not in pattern[2:]:
        first, _dot, rest = name.partition(".")
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


def export_keys(conn, aead=AEAD_AES_SIV_CMAC_256, context_aead=None):
    """C2S and S2C keys from the TLS exporter (RFC 8915 5.1): context = protocol 0 | AEAD id | 0 (C2S) / 1 (S2C).

    The key length is the negotiated ``aead``'s; ``context_aead`` (default ``aead``) is the id written into the
    context: 15 for AEAD_AES_128_GCM_SIV with a server that did not echo record 1024 (chrony < 4.6.1's derivation,
    see nts_ke.exporter_aead).
    """
    length = AEAD_KEY_LENGTH[aead]
    ctx_id = aead if context_aead is None else context_aead
    try:
        c2s = conn.export_keying_material(EXPORTER_LABEL, length, struct.pack("!HHB", NEXT_PROTOCOL_NTPV4, ctx_id, 0))
        s2c = conn.export_keying_material(EXPORTER_LABEL, length, struct.pack("!HHB", NEXT_PROTOCOL_NTPV4, ctx_id, 1))
    except SSL.Error as exc:
        raise NTSError("nts-ke", "cannot export the NTS keys from TLS: %s" % _ssl_reason(exc)) from None
    return c2s, s2c
