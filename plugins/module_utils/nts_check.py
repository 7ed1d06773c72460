# -*- coding: utf-8 -*-
"""Host-side NTS health check for a systemd timer: the deploy proof's fresh predicate, as node_exporter metrics.

Standard library only (Python >= 3.9), no Ansible imports. Run on a managed host as root, or as the chrony user
(chronyd's Unix command socket is open to both; ``authdata``, ``ntpdata``, ``serverstats`` and ``burst`` are refused
over UDP)::

    python3 -E -s nts_check.py [--socket /run/chrony/chronyd.sock] [--timeout 20] [--source NAME ...]
        [--serverstats] [--server-cert /etc/chrony/nts-server/server.crt] [--ntskeys /var/lib/chrony/ntskeys]
        [--output /var/lib/prometheus/node-exporter/chrony_nts.prom]

with ``chrony_status.py`` and ``nts_metrics.py`` in the same directory. The verdict is the one of the deploy proof
(``chrony_status.start_fresh_check`` then ``wait_for_nts`` with ``fresh=True`` and a burst): a source counts only on a
valid authenticated reply received during this check, so a dead server is red within ``--timeout`` even while chronyd
still lists it selected. Without ``--source`` every NTS source chronyd has at the start is required (what the role
configured); pass the role's source names to judge exactly those.

The metrics file is replaced atomically (a temporary file in the same directory, then a rename; mode 0644), also when
the host is unhealthy or chronyd does not answer. One line goes to stdout for the journal. Exit status: 0 verified,
2 not verified (metrics written), 3 usage error or the metrics file could not be written.
"""

from __future__ import annotations

import argparse
import base64
import calendar
import os
import re
import subprocess
import sys
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.nts.chrony.plugins.module_utils.atomic_write import write_atomic
from ansible_collections.nts.chrony.plugins.module_utils.chronyc import (
    ChronyParseError,
    parse_serverstats,
    parse_status_output,
)
from ansible_collections.nts.chrony.plugins.module_utils.nts_health import (
    burst_command,
    join_sources,
    start_fresh_check,
    status_command,
    wait_for_nts,
)
from ansible_collections.nts.chrony.plugins.module_utils.nts_metrics import render

DEFAULT_OUTPUT = "/var/lib/prometheus/node-exporter/chrony_nts.prom"
DEFAULT_TIMEOUT = 20.0
EXIT_OK, EXIT_UNHEALTHY, EXIT_UNKNOWN = 0, 2, 3

Runner = Callable[[Sequence[str]], Tuple[int, str, str]]


# ---------------------------------------------------------------------------------------------------------------
# reading


# How a host runs the check: these files of the collection, at their package path under one directory, started with
# ``python3 -E -s -m MODULE`` from that directory (no pip, no sys.path edits: the package path is the import path).
HOST_FILES = ("atomic_write.py", "chronyc.py", "nts_health.py", "nts_metrics.py", "nts_check.py")
PACKAGE_DIR = "ansible_collections/nts/chrony/plugins/module_utils"
MODULE = "ansible_collections.nts.chrony.plugins.module_utils.nts_check"


def subprocess_runner(deadline: float, clock: Callable[[], float] = time.monotonic, floor: float = 1.0) -> Runner:
    """``run(argv) -> (rc, stdout, stderr)`` for chrony_status; each call ends by ``deadline`` (at least ``floor``)."""
    env = dict(os.environ, LC_ALL="C")

    def run(argv: Sequence[str]) -> Tuple[int, str, str]:
        limit = max(floor, deadline - clock())
        try:
            proc = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                timeout=limit,
                check=False,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError as exc:
            return 127, "", "%s: %s" % (argv[0], exc.strerror)
        except subprocess.TimeoutExpired:
            return 124, "", "%s timed out after %.1f s" % (" ".join(argv), limit)
        return proc.returncode, proc.stdout, proc.stderr

    return run


_ERROR_CODE = re.compile(r"^(5\d\d) ", re.M)


class Recorder:
    """Wraps a runner: whether chronyd answered at all, and the first status output (the names at the start)."""

    def __init__(self, run: Runner) -> None:
        self.run = run
        self.answered = False
        self.first_status: Optional[str] = None

    def __call__(self, argv: Sequence[str]) -> Tuple[int, str, str]:
        rc, out, err = self.run(argv)
        # rc 0, or an error chronyd itself sent (such as 501 Not authorised): chronyd is running.
        # 506 Cannot talk to daemon is chronyc's own: no answer.
        if rc == 0 or any(code != "506" for code in _ERROR_CODE.findall(out)):
            self.answered = True
        if self.first_status is None and "-m" in argv:
            self.first_status = out if rc == 0 else ""
        return rc, out, err


def nts_source_names(status_output: Optional[str]) -> List[str]:
    """Names of the NTS sources in a ``status_command`` output (configured names, each once, chronyd's order)."""
    if not status_output:
        return []
    try:
        joined = join_sources(parse_status_output(status_output))
    except (ChronyParseError, ValueError):
        return []
    names: List[str] = []
    for health in joined:
        if health.auth is not None and health.auth.mode == "NTS" and health.name not in names:
            names.append(health.name)
    return names


def read_serverstats(run: Runner, chronyc: str, socket: Optional[str]) -> Tuple[Optional[Dict[str, int]], str]:
    argv = [chronyc, *(["-h", socket] if socket else []), "-c", "serverstats"]
    rc, out, err = run(argv)
    if rc != 0:
        return None, "serverstats: %s" % ((out + err).strip() or "chronyc exited with rc %d" % rc)
    try:
        return parse_serverstats(out), ""
    except ChronyParseError as exc:
        return None, "serverstats: %s" % exc


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)


def _der_item(data: bytes, pos: int, end: int) -> Tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER item at ``pos``."""
    if pos + 2 > end:
        raise ValueError("truncated DER item at offset %d" % pos)
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise ValueError("bad DER length at offset %d" % (pos - 1))
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise ValueError("DER item at offset %d runs past its container" % pos)
    return tag, pos, pos + length


def _asn1_time(tag: int, raw: bytes) -> float:
    text = raw.decode("ascii")
    if tag == 0x17 and re.match(r"^\d{12}Z$", text):  # UTCTime YYMMDDHHMMSSZ (RFC 5280: YY >= 50 is 19YY)
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    elif not (tag == 0x18 and re.match(r"^\d{14}Z$", text)):  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError("unsupported certificate time %r" % text)
    fields = (int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]), int(text[12:14]))
    return float(calendar.timegm(fields))


def certificate_not_after(data: bytes) -> float:
    """notAfter (Unix time) of the first certificate in PEM or DER ``data`` (a server certificate file may carry its
    chain after it). A small DER walk: Certificate -> TBSCertificate -> [version] serial signature issuer validity."""
    match = _PEM_CERT.search(data)
    der = base64.b64decode(b"".join(match.group(1).split())) if match else data
    tag, start, end = _der_item(der, 0, len(der))
    if tag != 0x30:
        raise ValueError("not an X.509 certificate (no outer SEQUENCE)")
    tag, pos, tbs_end = _der_item(der, start, end)
    if tag != 0x30:
        raise ValueError("not an X.509 certificate (no TBSCertificate SEQUENCE)")
    tag, _start, item_end = _der_item(der, pos, tbs_end)
    if tag == 0xA0:  # [0] EXPLICIT version
        pos = item_end
    for expected in (0x02, 0x30, 0x30):  # serialNumber, signature, issuer
        tag, _start, item_end = _der_item(der, pos, tbs_end)
        if tag != expected:
            raise ValueError("not an X.509 certificate (unexpected tag 0x%02x in TBSCertificate)" % tag)
        pos = item_end
    tag, pos, validity_end = _der_item(der, pos, tbs_end)
    if tag != 0x30:
        raise ValueError("not an X.509 certificate (no Validity SEQUENCE)")
    _tag, _start, pos = _der_item(der, pos, validity_end)  # notBefore
    tag, start, end = _der_item(der, pos, validity_end)
    return _asn1_time(tag, der[start:end])


def read_certificates(paths: Sequence[str]) -> Tuple[Optional[float], List[str]]:
    """The earliest notAfter of the certificate files, and a problem line per file that could not be read."""
    found: List[float] = []
    problems: List[str] = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                found.append(certificate_not_after(handle.read()))
        except (OSError, ValueError) as exc:
            problems.append("server certificate %s: %s" % (path, exc))
    return (min(found) if found else None), problems


# ---------------------------------------------------------------------------------------------------------------
# writing


def write_metrics(path: str, text: str, mode: int = 0o644) -> None:
    """Replace the metrics file atomically (atomic_write: a dot-file beside it that the textfile collector skips)."""
    write_atomic(path, text.encode("utf-8"), mode, suffix=".tmp")


# ---------------------------------------------------------------------------------------------------------------
# the check


def run_check(
    chronyc: str = "chronyc",
    socket: Optional[str] = None,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.25,
    sources: Sequence[str] = (),
    min_sources: int = 1,
    require_synchronised: bool = True,
    require_selected: bool = False,
    serverstats: bool = False,
    server_certs: Sequence[str] = (),
    ntskeys: Optional[str] = None,
    output: Optional[str] = DEFAULT_OUTPUT,
    run: Optional[Runner] = None,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Run the fresh check and write the metrics (unless ``output`` is None).

    Returns ``wait_for_nts``'s dict plus ``required`` (the names judged), ``chronyd_running``, ``check_started``
    (Unix time), ``check_duration``, ``serverstats``, ``cert_not_after``, ``ntskeys_mtime``, ``problems`` (what could
    not be read besides chronyd's sources), ``metrics`` (the exposition text) and ``written_at`` (Unix time of the
    rename, when written).
    """
    started_wall, started = wall(), clock()
    deadline = started + timeout
    recorder = Recorder(run or subprocess_runner(deadline, clock))
    target = "socket %s" % socket if socket else "the default command socket"

    baseline = start_fresh_check(recorder, chronyc, socket)
    required = list(sources) if sources else nts_source_names(recorder.first_status)
    result = wait_for_nts(
        recorder,
        status_command(chronyc, socket),
        target=target,
        min_sources=min_sources,
        required=required,
        timeout=max(0.0, deadline - clock()),
        interval=interval,
        require_selected=require_selected,
        require_synchronised=require_synchronised,
        clock=clock,
        sleep=sleep,
        fresh=True,
        burst=burst_command(chronyc, socket),
        baseline=baseline,
    )
    problems: List[str] = []
    stats = None
    if serverstats:
        stats, problem = read_serverstats(recorder, chronyc, socket)
        if problem:
            problems.append(problem)
    cert_not_after, cert_problems = read_certificates(server_certs)
    problems += cert_problems
    ntskeys_mtime = None
    if ntskeys:
        try:
            ntskeys_mtime = os.stat(ntskeys).st_mtime
        except OSError as exc:
            problems.append("ntskeys %s: %s" % (ntskeys, exc.strerror))
    duration = clock() - started
    text = render(
        result,
        check_started=started_wall,
        check_duration=duration,
        chronyd_running=recorder.answered,
        serverstats=stats,
        cert_not_after=cert_not_after,
        ntskeys_mtime=ntskeys_mtime,
        required=required,
    )
    result.update(
        required=required,
        chronyd_running=recorder.answered,
        check_started=started_wall,
        check_duration=duration,
        serverstats=stats,
        cert_not_after=cert_not_after,
        ntskeys_mtime=ntskeys_mtime,
        problems=problems,
        metrics=text,
    )
    if output:
        write_metrics(output, text)
        result["written_at"] = wall()
    return result


def summary(result: Mapping) -> str:
    """One line for the journal."""
    healthy = len(result.get("healthy_sources") or [])
    judged = len(result.get("required") or []) or len(result.get("sources") or [])
    head = "OK" if result.get("verified") else "CRITICAL"
    line = "chrony-nts check %s: %d/%d NTS sources authenticated now (%.2f s)" % (
        head,
        healthy,
        judged,
        result.get("check_duration", 0.0),
    )
    if not result.get("verified") and result.get("msg"):
        line += ": " + result["msg"]
    for problem in result.get("problems") or ():
        line += "; " + problem
    return line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors are UNKNOWN (3), not CRITICAL (2, argparse's default)
        self.print_usage(sys.stderr)
        self.exit(EXIT_UNKNOWN, "%s: error: %s\n" % (self.prog, message))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="nts_check",
        description="Fresh NTS health check of the local chronyd, written as node_exporter textfile metrics.",
    )
    p.add_argument("--chronyc", default="chronyc", help="chronyc program (default: chronyc on PATH)")
    p.add_argument("--socket", help="chronyd's Unix command socket (chronyc -h; default: chronyc's own default)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds the check may take (default 20)")
    p.add_argument("--interval", type=float, default=0.25, help="seconds between polls (default 0.25)")
    p.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME",
        help="a source that must be authenticated now, as configured (repeat; default: every NTS source chronyd has)",
    )
    p.add_argument("--min-sources", type=int, default=1, help="sources that must be authenticated now (default 1)")
    p.add_argument(
        "--require-synchronised",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the clock must be synchronised (default: yes, as the deploy proof)",
    )
    p.add_argument("--require-selected", action="store_true", help="sources must be selected or combined")
    p.add_argument("--serverstats", action="store_true", help="NTS server host: export chronyc serverstats counters")
    p.add_argument(
        "--server-cert", action="append", default=[], metavar="PATH", help="NTS server certificate (PEM; repeat)"
    )
    p.add_argument("--ntskeys", metavar="PATH", help="NTS server cookie key file, ntsdumpdir/ntskeys")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help="metrics file (default %(default)s)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.timeout > 0 or not args.interval > 0 or args.min_sources < 0:
        print("nts_check: --timeout and --interval must be > 0, --min-sources >= 0", file=sys.stderr)  # pylint: disable=ansible-bad-function
        return EXIT_UNKNOWN
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        print("nts_check: the directory of --output %s does not exist" % args.output, file=sys.stderr)  # pylint: disable=ansible-bad-function
        return EXIT_UNKNOWN
    try:
        result = run_check(
            chronyc=args.chronyc,
            socket=args.socket,
            timeout=args.timeout,
            interval=args.interval,
            sources=[name for name in args.source if name],
            min_sources=args.min_sources,
            require_synchronised=args.require_synchronised,
            require_selected=args.require_selected,
            serverstats=args.serverstats,
            server_certs=args.server_cert,
            ntskeys=args.ntskeys,
            output=args.output,
        )
    except OSError as exc:
        print("nts_check: cannot write %s: %s" % (args.output, exc), file=sys.stderr)  # pylint: disable=ansible-bad-function
        return EXIT_UNKNOWN
    print(summary(result), flush=True)  # pylint: disable=ansible-bad-function
    return EXIT_OK if result["verified"] else EXIT_UNHEALTHY


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))  # pylint: disable=ansible-bad-function
