# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Native NTS (RFC 8915) probe: one NTS-KE handshake plus one authenticated NTPv4 exchange.

The module proves that a server speaks NTS without chrony: it connects to the NTS-KE port over TLS 1.3 with ALPN
``ntske/1``, verifies the certificate chain and the host name or IP address, negotiates NTPv4 and an AEAD
(AEAD_AES_128_GCM_SIV, id 30, where this host's ``cryptography`` has AESGCMSIV, and AEAD_AES_SIV_CMAC_256, id 15, the
algorithm every NTS server must implement), exports the C2S/S2C keys, sends one NTS-protected NTPv4 request with one
cookie and checks the authenticated response.

AEAD_AES_128_GCM_SIV and chrony. RFC 8915 5.1 puts the negotiated AEAD id into the key exporter context; chrony 4.4
to 4.6 put 15 there for AEAD 30 as well (with AEAD 30's 16-byte key length), and chrony >= 4.6.1 keeps doing so unless
both sides send NTS-KE record 1024 (Compliant AES-128-GCM-SIV Exporter Context, non-critical, empty). The probe sends
record 1024 whenever it offers 30 and derives the keys with id 30 if the server echoes the record, else with id 15 (what
chrony < 4.6.1 expects). If the first NTP response of such an unconfirmed AEAD 30 session is an NTS NAK, the probe
sends one more request with the next cookie and the keys of the other context (as chrony >= 4.6.1 clients switch keys
after such a NAK), reports which derivation the server uses, and when that gets a NAK too says that both failed.
See :func:`probe` for the result fields (``aead``, ``aead_name``, ``compliant_exporter``, ``exporter_context``,
``exporter_retry``, ``aead_note``).

Library choice. Keys are exported with pyOpenSSL's ``Connection.export_keying_material`` (pyOpenSSL >= 17.5). The
standard library's ``ssl`` module has no exporter; the alternative (``SSLContext.keylog_filename`` plus an HKDF
derivation of the exporter from the logged ``EXPORTER_SECRET``) writes TLS secrets to a file and re-implements part
of TLS 1.3 by hand. pyOpenSSL keeps the secrets inside OpenSSL and is already a controller dependency. Its price is
that it checks no host name: :func:`check_certificate_name` does that on the leaf certificate with ``cryptography``
(subjectAltName DNS and IP entries only, left-most-label wildcards, no Common Name fallback, as RFC 6125 and
browsers do). AES-SIV comes from ``cryptography``'s ``AESSIV`` (cryptography >= 37), AES-128-GCM-SIV from its
``AESGCMSIV`` when that exists and works (PyPI wheels of cryptography >= 42; not Debian 12's 38.0.4): where it does
not, AEAD 30 is not offered and each result's ``aead_note`` says why (nts_ntp.aead_unavailable).

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

import ipaddress
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.nts.chrony.plugins.module_utils.nts_ke import (
    AEAD_AES_128_GCM_SIV,
    AEAD_AES_SIV_CMAC_256,
    MAX_PLACEHOLDERS,
    NTP_PORT,
    NTS_KE_PORT,
    SUPPORTED_AEADS,
    NTSError,
    aead_name,
    build_ke_request,
    exporter_aead,
    interpret_ke_response,
)
from ansible_collections.nts.chrony.plugins.module_utils.nts_net import (
    _close_quietly,
    _network_reason,
    ke_exchange,
    ntp_exchange,
    resolve,
    tcp_connect,
)
from ansible_collections.nts.chrony.plugins.module_utils.nts_ntp import (
    aead_unavailable,
    format_refid,
    offset_and_delay,
    server_synchronised,
)
from ansible_collections.nts.chrony.plugins.module_utils.nts_tls import (
    SSL,
    MissingDependencyError,
    certificate_summary,
    check_dependencies,
    export_keys,
    tls_context,
    tls_handshake,
)

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
        "aead_name": None,
        "aeads_offered": [],
        "aead_note": None,
        "compliant_exporter": None,
        "exporter_context": None,
        "exporter_retry": False,
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


def choose_aeads(aeads=None):
    """The AEADs to offer, in preference order, and a note naming any left out and why (None when none was).

    ``aeads`` None means every AEAD the probe implements that works on this host: [30, 15] where ``cryptography``
    has a working AESGCMSIV, else [15] (and the note says why 30 is missing). An explicit list may hold 30 and 15
    (each once); 30 is dropped with the same note where it cannot work, and :class:`MissingDependencyError` is
    raised when nothing is left. Other values raise ValueError.
    """
    if aeads is None:
        wanted = list(SUPPORTED_AEADS)
    else:
        if isinstance(aeads, (str, bytes)) or not isinstance(aeads, (list, tuple)):
            raise ValueError("aeads must be a list of AEAD ids, got %r" % (aeads,))
        wanted = []
        for aead in aeads:
            if isinstance(aead, bool) or not isinstance(aead, int):
                raise ValueError("aeads: %r is not an integer AEAD id" % (aead,))
            if aead not in SUPPORTED_AEADS:
                raise ValueError(
                    "aeads: AEAD id %d is not supported (supported: %s)"
                    % (aead, ", ".join("%d = %s" % (a, aead_name(a)) for a in SUPPORTED_AEADS))
                )
            if aead in wanted:
                raise ValueError("aeads: AEAD id %d is listed twice" % aead)
            wanted.append(aead)
        if not wanted:
            raise ValueError("aeads: give at least one AEAD id")
    offered = []
    notes = []
    for aead in wanted:
        reason = aead_unavailable(aead)
        if reason is None:
            offered.append(aead)
        else:
            notes.append("AEAD %d (%s) not offered: %s" % (aead, aead_name(aead), reason))
    if not offered:
        raise MissingDependencyError("NTS probe cannot offer any of the requested AEADs: %s" % "; ".join(notes))
    return offered, "; ".join(notes) or None


def _exporter_contexts(aead, compliant_exporter, first, retry):
    """Exporter context ids to try, in order, for a session that negotiated ``aead`` (see :func:`probe`)."""
    if aead != AEAD_AES_128_GCM_SIV:
        return [aead]
    first = exporter_aead(aead, compliant_exporter) if first is None else first
    if not retry:
        return [first]
    return [first, AEAD_AES_128_GCM_SIV if first == AEAD_AES_SIV_CMAC_256 else AEAD_AES_SIV_CMAC_256]


def _derivation(ctx):
    if ctx == AEAD_AES_SIV_CMAC_256:
        return "exporter context id 15 (the pre-4.6.1 chrony derivation)"
    return "exporter context id 30 (RFC 8915)"


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
    aeads=None,
    compliant_exporter=None,
    exporter_context=None,
):
    """Probe one NTS server; return a result dict and never raise for network or protocol faults.

    ``timeout`` is the deadline of the whole probe (DNS, TCP, TLS, NTS-KE, the NTP server's DNS and the NTP
    exchange together), not of each step. ``address`` (an IP literal) is connected to instead of resolving ``host``;
    the certificate is still verified for ``server_name`` (default ``host``). ``ca_file`` (a path) or ``ca_pem`` (PEM
    text, loaded in memory) replaces the system trust store; a CA that cannot be loaded fails the probe at stage
    ``certificate`` before any packet is sent, with a message naming the input and the server. ``cookie_override``
    sends that cookie instead of a server-issued one (testing NTS NAK handling). Result keys: see
    :func:`_result_template`; ``ok`` True means the key exchange and one authenticated NTP exchange both succeeded.

    AEADs. ``aeads`` lists the AEAD ids to offer in preference order (see :func:`choose_aeads`; default [30, 15]
    where ``cryptography`` has a working AESGCMSIV, else [15]). The result names the negotiated one (``aead``,
    ``aead_name``), the ones offered (``aeads_offered``) and, in ``aead_note``, why one was not offered and how
    AEAD_AES_128_GCM_SIV keys were derived when that is not plain RFC 8915.

    chrony's AES-128-GCM-SIV key derivation. RFC 8915 puts the negotiated AEAD id into the TLS exporter context.
    chrony 4.4 to 4.6 put 15 there for AEAD 30 too (keys of AEAD 30's 16-byte length, exported with id 15); chrony
    >= 4.6.1 does the same unless both sides send record 1024 ("Compliant AES-128-GCM-SIV Exporter Context", C=0,
    empty), in which case it uses 30. So when 30 is offered the request carries record 1024 (``compliant_exporter``
    False leaves it out, None sends it exactly when 30 is offered), and when 30 is negotiated the keys are exported
    with id 30 if the server echoed 1024 (``compliant_exporter`` True in the result) and with id 15 if it did not.
    A server that did not echo 1024 but derives the keys as RFC 8915 says answers the first request with an NTS NAK:
    the probe then sends one more request with the next cookie and the keys of the other context (``exporter_retry``
    True, as chrony >= 4.6.1 clients switch keys after such a NAK), and reports which derivation worked
    (``exporter_context``: 15 or 30, and ``aead_note``), or, when both get a NAK, says so. ``exporter_context`` (15
    or 30) forces the context tried first (diagnostics); the other is still tried after a NAK.

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
    if exporter_context not in (None, AEAD_AES_SIV_CMAC_256, AEAD_AES_128_GCM_SIV) or isinstance(
        exporter_context, bool
    ):
        raise ValueError("exporter_context must be None, 15 or 30, got %r" % (exporter_context,))
    if compliant_exporter not in (None, True, False):
        raise ValueError("compliant_exporter must be None, True or False, got %r" % (compliant_exporter,))
    offered, aead_note = choose_aeads(aeads)
    server_name = server_name or host
    result = _result_template(host, port, address, server_name)
    result.update(aeads_offered=offered, aead_note=aead_note)
    notes = [aead_note] if aead_note else []
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
        request = build_ke_request(offered, compliant_exporter=compliant_exporter)
        records = ke_exchange(conn, sock, request, timeout, deadline=deadline)
        ke = interpret_ke_response(records, offered)
        aead = ke["aead"]
        echoed = ke["compliant_exporter"]
        retry = cookie_override is None and len(ke["cookies"]) > 1 and (not echoed or exporter_context is not None)
        contexts = _exporter_contexts(aead, echoed, exporter_context, retry)
        keys = [export_keys(conn, aead, ctx) for ctx in contexts]  # all while the TLS session is open
        t0 = lap("nts_ke", t0)
        result.update(
            aead=aead,
            aead_name=aead_name(aead),
            compliant_exporter=echoed,
            exporter_context=contexts[0],
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

        def exchange(index, sent_cookie):
            c2s, s2c = keys[index]
            return ntp_exchange(
                family, sockaddr, sent_cookie, c2s, s2c, timeout, placeholders, deadline=deadline, aead=aead
            )

        try:
            resp, t1, t4 = exchange(0, cookie)
        except NTSError as exc:
            if not (exc.details.get("nak") and len(contexts) > 1):
                if exc.details.get("nak") and aead == AEAD_AES_128_GCM_SIV:
                    raise NTSError(
                        exc.stage, exc.message + _gcm_siv_nak_hint(echoed, contexts[0]), **exc.details
                    ) from None
                raise
            # An NTS NAK to AEAD 30 keys the server did not confirm: the other derivation, with the next cookie.
            result.update(exporter_retry=True, exporter_context=contexts[1])
            try:
                resp, t1, t4 = exchange(1, ke["cookies"][1])
            except NTSError as again:
                if again.details.get("nak"):
                    raise NTSError(
                        "authentication",
                        "server sent an NTS NAK (kiss code NTSN) to requests keyed with both AES-128-GCM-SIV key "
                        "derivations (%s; then %s)%s: it rejects the cookies for another reason or its "
                        "AES-128-GCM-SIV is broken; probe with aeads [15] to check AES-SIV-CMAC-256"
                        % (
                            _derivation(contexts[0]),
                            _derivation(contexts[1]),
                            "" if echoed else "; the server did not echo record 1024",
                        ),
                        nak=True,
                    ) from None
                raise NTSError(
                    again.stage,
                    "%s (second request, keyed with %s, after an NTS NAK to the first, keyed with %s)"
                    % (again.message, _derivation(contexts[1]), _derivation(contexts[0])),
                    **again.details,
                ) from None
            notes.append(
                "the server %s record 1024 and answered the request keyed with %s with an NTS NAK; the request "
                "keyed with %s succeeded: the server uses %s"
                % (
                    "echoed" if echoed else "did not echo",
                    _derivation(contexts[0]),
                    _derivation(contexts[1]),
                    "the pre-4.6.1 chrony key derivation"
                    if contexts[1] == AEAD_AES_SIV_CMAC_256
                    else "the RFC 8915 key derivation" + ("" if echoed else " without announcing it"),
                )
            )
        else:
            if aead == AEAD_AES_128_GCM_SIV and not echoed and contexts[0] == AEAD_AES_SIV_CMAC_256:
                notes.append(
                    "the server did not echo record 1024: AES-128-GCM-SIV keys derived with exporter context id 15, "
                    "as chrony 4.4 to 4.6 do (and later chrony when not asked for the compliant context)"
                )
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
        result["aead_note"] = "; ".join(notes) or None
        timings["total"] = round(time.monotonic() - start, 6)
    return result


def _gcm_siv_nak_hint(echoed, ctx):
    """Why an NTS NAK to an AES-128-GCM-SIV request may have come, when no second derivation could be tried."""
    if echoed:
        return " (AES-128-GCM-SIV keys derived with %s, which the server confirmed with record 1024)" % _derivation(ctx)
    return (
        " (AES-128-GCM-SIV keys derived with %s because the server did not echo record 1024; a server that derives "
        "them the other way answers so, and the other derivation is tried only with a second server cookie)"
        % _derivation(ctx)
    )


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
        "aeads",
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
    aeads=dict(type="list", elements="int"),
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
    aeads = p.get("aeads")
    try:  # checked once here so that a bad list fails the task up front; each result repeats the note
        aead_note = choose_aeads(aeads)[1]
    except ValueError as exc:
        return out, str(exc), []
    except MissingDependencyError as exc:
        return out, "aeads: %s" % exc, []
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
            aeads=aeads,
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
    if aeads is not None and aead_note:  # asked for explicitly, so say once that it could not be offered
        warnings.append(aead_note)
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
