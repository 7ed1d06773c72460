# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The probe's network steps, all bounded by ONE deadline per server probe: DNS (in a thread), non-blocking TCP
connect, the NTS-KE exchange over TLS and the UDP NTP exchange; socket and OpenSSL errors become plain reasons.
No Ansible imports.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import os
import select
import socket
import threading
import time

try:
    from OpenSSL import SSL

    _PYOPENSSL_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only on hosts without the library
    SSL = None
    _PYOPENSSL_ERROR = exc

from ansible_collections.nts.chrony.plugins.module_utils.nts_ke import (
    AEAD_AES_SIV_CMAC_256,
    AEAD_NONCE_LENGTH,
    UID_LENGTH,
    KEMessageReader,
    NTSError,
)
from ansible_collections.nts.chrony.plugins.module_utils.nts_ntp import build_ntp_request, parse_ntp_response

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


def ntp_exchange(
    family, sockaddr, cookie, c2s, s2c, timeout, placeholders=0, deadline=None, aead=AEAD_AES_SIV_CMAC_256
):
    """Send one NTS NTPv4 request sealed with ``aead`` over UDP and return (parsed response, T1 ns, T4 ns)."""
    deadline = _deadline(timeout, deadline)
    uid = os.urandom(UID_LENGTH)
    transmit = os.urandom(8)
    nonce = os.urandom(AEAD_NONCE_LENGTH[aead])
    packet = build_ntp_request(cookie, c2s, uid, transmit, nonce, placeholders, aead)
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
            return parse_ntp_response(data, s2c, uid, transmit, aead), t1, t4
    finally:
        _close_quietly(sock)
