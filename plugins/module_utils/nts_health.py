# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The NTS health predicate, one meaning everywhere (deploy proof, health, report, metrics): a source is healthy when it
is authenticated NOW, through the current trust settings. Fresh replies (ntpdata counters that moved during the
check), the poll loop with bursts, the causes. Standard library only, no Ansible imports; parsing is in chronyc.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ansible_collections.nts.chrony.plugins.module_utils.chronyc import (
    SOURCE_STATES,
    STATUS_COMMANDS,
    AuthData,
    ChronycError,
    ChronyParseError,
    NtpData,
    Source,
    SourceTableChanged,
    StatusReport,
    Tracking,
    check_error_lines,
    parse_status_output,
)

# ---------------------------------------------------------------------------------------------------------------
# health


CAUSE_NOT_NTS = "not using NTS (mode {mode})"
CAUSE_KE_NEVER = (
    "NTS key exchange never succeeded (TCP 4460 blocked, server down, or certificate rejected: see chronyd's log)"
)
CAUSE_KE_NOT_TRIED = "NTS key exchange not attempted yet"
CAUSE_NAK = "NTS NAK received (server rejected cookies)"
CAUSE_NO_COOKIES = "no cookies (the server's replies are lost or it rejected the cookies; a new key exchange is due)"
CAUSE_KE_FAILING = (
    "NTS key exchange failing: {attempts} attempt(s) since the last success and no cookies left (TCP 4460 blocked, "
    "server down, or certificate rejected: see chronyd's log)"
)
CAUSE_UNREACHABLE = "unreachable: no reply on UDP (port 123 blocked or server down)"
CAUSE_NOT_AUTHENTICATED = "no authenticated sample yet"
CAUSE_NO_REPLY = (
    "unreachable: no reply on UDP port {port} during this check ({sent} request(s) sent, none answered: server down "
    "or UDP blocked); last reply {age}"
)
CAUSE_NO_REQUEST = "no NTP request sent during this check (chronyd is waiting: no cookies, or a key exchange due)"
CAUSE_REJECTED_REPLIES = (
    "{received} reply(ies) during this check, none valid and authenticated (NTS NAK, wrong keys or a forged reply)"
)
CAUSE_STALE_KE = (
    "its last NTS key exchange ({age}) predates this change, so the new trust settings (CA, certset, name or ports) "
    "were not used: cookies saved before the change answered"
)
CAUSE_NOT_SELECTED = "not selected for synchronisation (state {state!r}: {meaning})"
CAUSE_MISSING = "not configured in the running chronyd (absent from chronyc sources, or its name is not resolved)"


@dataclass
class SourceHealth:
    name: str
    source: Optional[Source] = None
    auth: Optional[AuthData] = None
    ntp: Optional[NtpData] = None
    problems: List[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def cause(self) -> Optional[str]:
        return self.problems[0] if self.problems else None

    def to_dict(self) -> dict:
        s, a, n = self.source, self.auth, self.ntp
        return {
            "name": self.name,
            "address": n.remote_address if n else None,
            "mode": a.mode if a else None,
            "key_id": a.key_id if a else None,
            "aead": a.aead if a else None,
            "key_length": a.key_length if a else None,
            "last_key_exchange": a.last_key_exchange if a else None,
            "attempts": a.attempts if a else None,
            "naks": a.naks if a else None,
            "cookies": a.cookies if a else None,
            "cookie_length": a.cookie_length if a else None,
            "reach": s.reach if s else None,
            "reach_octal": s.reach_octal if s else None,
            "state": s.state if s else None,
            "stratum": s.stratum if s else None,
            "offset": s.adjusted_offset if s else None,
            "last_rx": s.last_rx if s else None,
            "authenticated": n.authenticated if n else None,
            "total_tx": n.total_tx if n else None,
            "total_rx": n.total_rx if n else None,
            "total_valid_rx": n.total_valid_rx if n else None,
            "healthy": self.healthy,
            "cause": self.cause,
            "problems": list(self.problems),
        }


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def join_sources(report: StatusReport) -> List[SourceHealth]:
    """Pair each NTP source (``^``/``=``) with its authdata and ntpdata rows.

    authdata and ntpdata walk the same source table as ``sources`` (skipping reference clocks), so rows pair by
    position; with ``-N`` authdata names must equal sources names, and where a name is an IP literal the ntpdata
    remote address must equal it. A mismatch (the source table changed between the commands) raises
    :class:`SourceTableChanged`.
    """
    ntp_sources = [s for s in report.sources if s.mode in "^="]
    if len(report.authdata) != len(ntp_sources):
        raise SourceTableChanged(
            f"sources lists {len(ntp_sources)} NTP sources but authdata {len(report.authdata)}: "
            "the source table changed between commands"
        )
    ntp_rows: List[Optional[NtpData]] = list(report.ntpdata)
    if len(ntp_rows) != len(ntp_sources):
        # older chronyc may list unresolved sources in `sources` but skip them in ntpdata: match by address.
        by_addr = {n.remote_address: n for n in report.ntpdata}
        ntp_rows = [by_addr.get(s.name) for s in ntp_sources]
    joined = []
    for i, (src, auth, ntp) in enumerate(zip(ntp_sources, report.authdata, ntp_rows)):
        if auth.name != src.name:
            raise SourceTableChanged(
                f"source {i + 1}: sources name {src.name!r} differs from authdata name {auth.name!r}: "
                "the source table changed between commands"
            )
        if ntp is not None and _is_ip(src.name) and ntp.remote_address != src.name:
            raise SourceTableChanged(
                f"source {i + 1}: sources name {src.name!r} differs from ntpdata address {ntp.remote_address!r}"
            )
        joined.append(SourceHealth(src.name, src, auth, ntp))
    return joined


Counters = Tuple[int, int, int]
"""(total_tx, total_rx, total_valid_rx) of one source, from ``ntpdata``."""


def source_key(health: "SourceHealth") -> str:
    """Key of a source across polls: configured name plus the address it resolved to (pools share a name)."""
    return "%s|%s" % (health.name, health.ntp.remote_address if health.ntp else "")


def counters(health: "SourceHealth") -> Optional[Counters]:
    n = health.ntp
    return None if n is None else (n.total_tx, n.total_rx, n.total_valid_rx)


def _age(seconds: Optional[int]) -> str:
    return "never" if seconds is None else "%d s ago" % seconds


def _fresh_problem(health: SourceHealth, baseline: Dict[str, Counters]) -> Optional[str]:
    """Why the source has no authenticated reply received during this check, or None when it has one.

    ``total_valid_rx`` counts replies that passed chronyd's packet tests, authentication included (an NTS NAK or a
    reply that fails authentication is not valid), so it moving since the baseline is an authenticated reply received
    now. A counter below its baseline means chronyd restarted meanwhile: everything it counts is then new.
    """
    now = counters(health)
    if now is None:
        return CAUSE_NOT_AUTHENTICATED
    base = baseline.get(source_key(health), (0, 0, 0))
    if now[2] < base[2] or now[1] < base[1] or now[0] < base[0]:
        base = (0, 0, 0)
    sent, received, valid = (now[0] - base[0], now[1] - base[1], now[2] - base[2])
    if valid > 0:
        return None
    if received > 0:
        return CAUSE_REJECTED_REPLIES.format(received=received)
    if sent > 0:
        port = health.ntp.remote_port if health.ntp and health.ntp.remote_port else 123
        last_rx = health.source.last_rx if health.source else None
        return CAUSE_NO_REPLY.format(port=port, sent=sent, age=_age(last_rx))
    return CAUSE_NO_REQUEST


def diagnose(
    health: SourceHealth,
    require_selected: bool = False,
    baseline: Optional[Dict[str, Counters]] = None,
    ke_max_age: Optional[int] = None,
) -> SourceHealth:
    """Fill ``health.problems`` (most fundamental first). Healthy = NTS, KeyID > 0, no NAK, cookies > 0, reachable,
    last response authenticated (and selected/combined if ``require_selected``).

    ``baseline`` (the counters of :func:`counters` at the start of the check, keyed by :func:`source_key`; an empty
    dict when chronyd started during the check) makes the verdict fresh: the source must also have received a valid,
    authenticated reply since then. Reach and cookies are history: chronyd keeps a dead source selected for up to
    eight lost polls and reloads cookies from ``ntsdumpdir`` at start, so without ``baseline`` the verdict is only
    as good as that history.

    ``ke_max_age`` (seconds) requires the source's last NTS key exchange to be at most that old: for a source whose
    trust settings just changed, so that cookies saved before the change cannot prove it.
    """
    a, s, n = health.auth, health.source, health.ntp
    problems: List[str] = []
    if a is None or s is None:
        problems.append(CAUSE_MISSING)
    else:
        if a.mode != "NTS":
            problems.append(CAUSE_NOT_NTS.format(mode=a.mode))
        else:
            if a.key_id == 0 and a.cookies == 0:
                problems.append(CAUSE_KE_NEVER if a.attempts > 0 else CAUSE_KE_NOT_TRIED)
            elif a.cookies == 0 and a.attempts > 0:
                problems.append(CAUSE_KE_FAILING.format(attempts=a.attempts))
            if a.naks > 0:
                problems.append(CAUSE_NAK)
            if a.cookies == 0 and a.key_id > 0 and a.attempts == 0:
                problems.append(CAUSE_NO_COOKIES)
            if ke_max_age is not None and a.key_id > 0:
                if a.last_key_exchange is None or a.last_key_exchange > ke_max_age:
                    problems.append(CAUSE_STALE_KE.format(age=_age(a.last_key_exchange)))
        if baseline is not None:
            stale = _fresh_problem(health, baseline)
            if stale:
                problems.append(stale)
        elif s.reach == 0:
            problems.append(CAUSE_UNREACHABLE)
        if n is None or not n.authenticated:
            if CAUSE_NOT_AUTHENTICATED not in problems:
                problems.append(CAUSE_NOT_AUTHENTICATED)
        if require_selected and s.state not in "*+":
            problems.append(CAUSE_NOT_SELECTED.format(state=s.state, meaning=SOURCE_STATES.get(s.state, "?")))
    health.problems = problems
    return health


@dataclass
class Verdict:
    ok: bool
    sources: List[SourceHealth]
    reasons: List[str]

    @property
    def healthy_names(self) -> List[str]:
        return [h.name for h in self.sources if h.healthy]

    @property
    def unhealthy(self) -> List[SourceHealth]:
        return [h for h in self.sources if not h.healthy]


def evaluate(
    report: StatusReport,
    min_sources: int = 1,
    required: Sequence[str] = (),
    require_selected: bool = False,
    require_synchronised: bool = False,
    baseline: Optional[Dict[str, Counters]] = None,
    ke_max_age: Optional[Dict[str, int]] = None,
) -> Verdict:
    """Judge a status report: at least ``min_sources`` healthy NTS sources, every name in ``required`` healthy
    (for names shared by several sources, e.g. a pool, one healthy source suffices), and optionally the system
    clock synchronised (tracking leap status not 'Not synchronised'). ``baseline`` and ``ke_max_age`` (per name)
    are passed to :func:`diagnose`."""
    if min_sources < 0:
        raise ValueError(f"min_sources must be >= 0, got {min_sources}")
    ke_max_age = ke_max_age or {}
    sources = [diagnose(h, require_selected, baseline, ke_max_age.get(h.name)) for h in join_sources(report)]
    present = {h.name for h in sources}
    for name in required:
        if name not in present:
            sources.append(SourceHealth(name, problems=[CAUSE_MISSING]))
    reasons: List[str] = []
    healthy = [h for h in sources if h.healthy]
    if len(healthy) < min_sources:
        reasons.append(f"{len(healthy)} healthy NTS source(s), at least {min_sources} required")
    healthy_names = {h.name for h in healthy}
    for name in required:
        if name not in healthy_names:
            reasons.append(f"required source {name} is not healthy")
    if require_synchronised and not report.tracking.synchronised:
        reasons.append(f"system clock not synchronised (tracking leap status {report.tracking.leap_status!r})")
    return Verdict(not reasons, sources, reasons)


def tracking_to_dict(tracking: Tracking) -> dict:
    d = asdict(tracking)
    d["synchronised"] = tracking.synchronised
    return d


NOT_RUNNING_HINT = (
    "chronyd is not running, or its Unix command socket is not accessible: authdata and ntpdata need root or the "
    "chrony user, run the task with become: true"
)
NOT_AUTHORISED_HINT = (
    "chronyc reached chronyd over UDP, where authdata and ntpdata are refused: run the task with become: true so "
    "chronyc can use the Unix command socket (or set socket= to chronyd's bindcmdaddress path)"
)


def status_command(chronyc: str, socket: Optional[str] = None) -> List[str]:
    """The one chronyc call that reads every report the health predicate needs."""
    return [chronyc, *(["-h", socket] if socket else []), "-c", "-N", "-m", *STATUS_COMMANDS]


def burst_command(chronyc: str, socket: Optional[str] = None, good: int = 1, total: int = 4) -> List[str]:
    """``chronyc burst GOOD/TOTAL``: every source sends a request at once (0.2 s, or 2 s after its previous one),
    until GOOD valid replies or TOTAL requests, 2 s apart. It costs one packet per healthy source."""
    return [chronyc, *(["-h", socket] if socket else []), "burst", "%d/%d" % (good, total)]


def start_fresh_check(run, chronyc: str, socket: Optional[str] = None) -> Optional[Dict[str, List[int]]]:
    """Begin a fresh check early: read every source's reply counters (the baseline) and ask for samples now.

    Returns ``{source key: [tx, rx, valid]}`` for :func:`wait_for_nts` (``baseline=``), or None when chronyd does not
    answer (not installed, not running): the check then starts from its own first poll.
    """
    try:
        rc, out, _err = run(status_command(chronyc, socket))
        if rc != 0:
            return None
        check_error_lines(out)
        joined = join_sources(parse_status_output(out))
    except (ChronycError, ChronyParseError):
        return None
    run(burst_command(chronyc, socket))
    return {source_key(h): list(counters(h) or (0, 0, 0)) for h in joined}


def wait_for_nts(
    run,
    cmd: Sequence[str],
    target: str = "the default command socket",
    min_sources: int = 1,
    required: Sequence[str] = (),
    timeout: float = 60.0,
    interval: float = 0.25,
    require_selected: bool = False,
    require_synchronised: bool = False,
    clock=None,
    sleep=None,
    fresh: bool = True,
    started: Optional[float] = None,
    burst: Optional[Sequence[str]] = None,
    burst_every: float = 2.0,
    fresh_ke: Sequence[str] = (),
    baseline: Optional[Dict[str, Sequence[int]]] = None,
    wait_all: bool = False,
    ke_since: Optional[float] = None,
) -> dict:
    """Poll chronyd (``run(argv) -> (rc, stdout, stderr)``) until the health predicate holds or ``timeout`` passes.

    Fresh (the default): a source counts only on a valid, authenticated reply received during this check. When
    chronyd was (re)started for this check, ``started`` is the ``clock()`` value just before the start and everything
    chronyd counts is new; otherwise the first poll is the baseline and ``burst`` (argv, see :func:`burst_command`)
    asks every source for a sample at once, again every ``burst_every`` seconds while the predicate does not hold
    (chronyd keeps 2 s between a source's burst requests and ignores a burst asked for while one runs).
    A dead server therefore makes the check fail within ``timeout`` whatever its history. The names in ``fresh_ke``
    must also have made an NTS key exchange after ``started`` (their trust settings changed), or after ``ke_since``
    when given (sources renewed in a running chronyd, whose other sources did not restart). ``baseline`` (from
    :func:`start_fresh_check`, run earlier in the same deployment) replaces the first poll's counters: replies that
    arrived since then count, so the burst sent then has usually been answered by the first poll.
    ``wait_all``: once the predicate holds, go on polling (within ``timeout``) until every source is healthy, so a
    report shows each source's own state rather than the first ones that answered.

    Returns a dict: ``verified`` (bool), ``elapsed``, ``polls``, ``bursts``, ``fresh``, ``sources`` (per-source
    dicts), ``healthy_sources``, ``unhealthy_sources`` (name and cause), ``reasons``, ``tracking`` (when chronyd
    answered) and, when not verified, ``msg`` (why, naming each unhealthy source) and ``fatal`` (True when chronyd
    could not be judged at all: no answer, 501, unparsable output).
    """
    clock = clock or time.monotonic
    sleep = sleep or time.sleep
    start = clock()
    deadline = start + timeout
    result: dict = {
        "verified": False,
        "elapsed": 0.0,
        "polls": 0,
        "bursts": 0,
        "fresh": fresh,
        "sources": [],
        "healthy_sources": [],
        "unhealthy_sources": [],
        "reasons": [],
    }
    verdict = None
    last_error = None
    early = baseline
    baseline = None
    next_burst = None
    if fresh and started is not None:
        baseline = {}
    elif fresh and early is not None:
        baseline = {key: tuple(values) for key, values in early.items()}  # type: ignore[misc]
        next_burst = start + 0.5  # the early burst gets half a second to land before another is asked for
    if ke_since is None:
        ke_since = start if started is None else started
    while True:
        result["polls"] += 1
        try:
            rc, out, err = run(list(cmd))
            check_error_lines(out)
            if rc != 0:
                detail = (err or out).strip() or "no output"
                raise ChronycError(None, f"chronyc exited with rc {rc}: {detail}", out + err)
            report = parse_status_output(out)
            if fresh and baseline is None:
                baseline = {source_key(h): counters(h) or (0, 0, 0) for h in join_sources(report)}
                next_burst = clock()
            # authdata's Last is whole seconds: one second of slack on the age since the start.
            ke_age = int(clock() - ke_since) + 1
            verdict = evaluate(
                report,
                min_sources=min_sources,
                required=required,
                require_selected=require_selected,
                require_synchronised=require_synchronised,
                baseline=baseline if fresh else None,
                ke_max_age={name: ke_age for name in fresh_ke},
            )
            last_error = None
            result["tracking"] = tracking_to_dict(report.tracking)
        except ChronycError as exc:
            if exc.code == 501:
                result.update(
                    elapsed=round(clock() - start, 3),
                    fatal=True,
                    msg=f"chronyc via {target}: 501 Not authorised: {NOT_AUTHORISED_HINT}",
                )
                return result
            # 506 and friends: chronyd may still be starting after a restart; retry until the deadline.
            last_error = f"chronyc could not talk to chronyd via {target} ({exc}): {NOT_RUNNING_HINT}"
        except SourceTableChanged as exc:
            # a source was added/removed between the reports of one call (e.g. a pool refilling): poll again
            last_error = f"inconsistent chronyc output: {exc}"
        except ChronyParseError as exc:
            result.update(
                elapsed=round(clock() - start, 3), fatal=True, msg=f"cannot parse chronyc output via {target}: {exc}"
            )
            return result
        now = clock()
        if verdict is not None and last_error is None and verdict.ok:
            if not wait_all or not verdict.unhealthy:
                break
        if now >= deadline:
            break
        if burst and next_burst is not None and now >= next_burst:
            # Ask for samples now instead of waiting for the next poll (up to 2^maxpoll s); its answer is ignored:
            # the counters say whether replies came.
            run(list(burst))
            result["bursts"] += 1
            next_burst = now + burst_every
        sleep(min(interval, max(0.0, deadline - now)))

    result["elapsed"] = round(clock() - start, 3)
    if verdict is not None:
        result["sources"] = [h.to_dict() for h in verdict.sources]
        result["healthy_sources"] = verdict.healthy_names
        result["unhealthy_sources"] = [{"name": h.name, "cause": h.cause} for h in verdict.unhealthy]
        result["reasons"] = list(verdict.reasons)
    if last_error is not None:
        result["reasons"] = [last_error]
        result["fatal"] = True
        result["msg"] = f"NTS verification failed after {result['elapsed']} s: {last_error}"
        return result
    if verdict.ok:
        result["verified"] = True
        return result
    details = "; ".join(f"{h.name}: {h.cause}" for h in verdict.unhealthy) or "no NTP sources configured"
    result["msg"] = (
        f"NTS verification failed after {result['elapsed']} s ({result['polls']} polls): "
        f"{'; '.join(verdict.reasons)}. Unhealthy sources: {details}"
    )
    return result
