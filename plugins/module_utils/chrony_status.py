# -*- coding: utf-8 -*-
"""Parse ``chronyc -c`` (CSV) reports and judge whether NTS sources are really working.

Standard library only, Python >= 3.9, no Ansible imports: used by the ``chrony_authdata`` module on managed hosts
and by tests on the controller.

CSV facts this relies on (chrony 4.0-4.8, checked against a real chronyd 4.3 here; see the fixtures in
``tests/fixtures/chronyc``):

* one line per source, no header; every field of the human format is one CSV field;
* intervals are unsigned 32-bit seconds where ``4294967295`` means "never" (printed ``-`` by humans) -> ``None``;
* offsets are seconds, the sources ``Reach`` register is octal;
* ``sources``, ``authdata`` and ``ntpdata`` (without arguments) walk the same source table in the same order;
  ``authdata`` and ``ntpdata`` skip reference clocks, and on 4.3+ all three skip sources whose name is not
  resolved yet (unless ``-a``). With ``-N`` sources/authdata print configured names, ntpdata always prints IPs;
* ``ntpdata`` has 33 fields on 4.0-4.2, 34 on 4.3-4.5 (+ total good RX), 38 on 4.6+ (+ kernel/HW timestamp counts);
* ``serverstats`` has 8 fields on 4.0-4.1, 11 on 4.2-4.3, 17 on 4.4+;
* errors are printed as ``NNN text`` (``506 Cannot talk to daemon``, ``501 Not authorised``).
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

NEVER = 4294967295  # %I interval printed by chronyc -c when the event never happened

AUTHDATA_FIELDS = (
    "name",
    "mode",
    "key_id",
    "aead",
    "key_length",
    "last_key_exchange",
    "attempts",
    "naks",
    "cookies",
    "cookie_length",
)
SOURCES_FIELDS = (
    "mode",
    "state",
    "name",
    "stratum",
    "poll",
    "reach",
    "last_rx",
    "adjusted_offset",
    "measured_offset",
    "error",
)
TRACKING_FIELDS = (
    "reference_id",
    "reference_name",
    "stratum",
    "reference_time",
    "system_time",
    "last_offset",
    "rms_offset",
    "frequency",
    "residual_frequency",
    "skew",
    "root_delay",
    "root_dispersion",
    "update_interval",
    "leap_status",
)
NTPDATA_FIELDS_33 = (
    "remote_address",
    "remote_refid",
    "remote_port",
    "local_address",
    "local_refid",
    "leap_status",
    "version",
    "mode",
    "stratum",
    "poll",
    "poll_interval",
    "precision",
    "precision_seconds",
    "root_delay",
    "root_dispersion",
    "reference_id",
    "reference_name",
    "reference_time",
    "offset",
    "peer_delay",
    "peer_dispersion",
    "response_time",
    "jitter_asymmetry",
    "tests_packet",
    "tests_peer",
    "tests_sample",
    "interleaved",
    "authenticated",
    "tx_timestamping",
    "rx_timestamping",
    "total_tx",
    "total_rx",
    "total_valid_rx",
)
NTPDATA_FIELDS_34 = (*NTPDATA_FIELDS_33, "total_good_rx")
NTPDATA_FIELDS_38 = (*NTPDATA_FIELDS_34, "total_kernel_tx", "total_kernel_rx", "total_hw_tx", "total_hw_rx")
NTPDATA_LAYOUTS = {33: NTPDATA_FIELDS_33, 34: NTPDATA_FIELDS_34, 38: NTPDATA_FIELDS_38}
NTPDATA_VERSIONS = {33: "chrony 4.0-4.2", 34: "chrony 4.3-4.5", 38: "chrony 4.6+"}
SERVERSTATS_FIELDS_8 = (
    "ntp_rx",
    "ntp_dropped",
    "cmd_rx",
    "cmd_dropped",
    "log_dropped",
    "nts_ke_accepted",
    "nts_ke_dropped",
    "authenticated_ntp",
)
SERVERSTATS_FIELDS_11 = (*SERVERSTATS_FIELDS_8, "interleaved_ntp", "timestamps_held", "timestamp_span")
SERVERSTATS_FIELDS_17 = (
    *SERVERSTATS_FIELDS_11,
    "daemon_rx_timestamps",
    "daemon_tx_timestamps",
    "kernel_rx_timestamps",
    "kernel_tx_timestamps",
    "hw_rx_timestamps",
    "hw_tx_timestamps",
)
SERVERSTATS_LAYOUTS = {8: SERVERSTATS_FIELDS_8, 11: SERVERSTATS_FIELDS_11, 17: SERVERSTATS_FIELDS_17}

SOURCE_MODES = {"^": "server", "=": "peer", "#": "refclock"}
SOURCE_STATES = {
    "*": "selected",
    "+": "combined",
    "-": "not combined",
    "x": "falseticker",
    "~": "too variable",
    "?": "unusable",
    " ": "unknown",
}
AUTH_MODES = ("NTS", "SK", "-", "?")
LEAP_STATUSES = ("Normal", "Insert second", "Delete second", "Not synchronised", "Invalid")
NTP_MODES = ("Symmetric active", "Symmetric passive", "Server", "Invalid")
TIMESTAMP_SOURCES = ("Daemon", "Kernel", "Hardware", "Invalid")

STATUS_COMMANDS = ("sources", "tracking", "authdata", "ntpdata")
"""Order of the reports requested in one ``chronyc -c -N -m`` call; ``tracking`` (14 fields) separates the two
10-field reports so the output can be split without ``-e`` (which chrony < 4.4 lacks)."""

_ERROR_LINE = re.compile(r"^(5\d\d) (.+)$")


class ChronyParseError(ValueError):
    """chronyc output does not have the expected shape; the message names the report, line, field and value."""


class SourceTableChanged(ChronyParseError):
    """The reports of one chronyc call disagree about the sources (a source was added or removed meanwhile)."""


class ChronycError(RuntimeError):
    """chronyc reported an error such as ``506 Cannot talk to daemon`` or ``501 Not authorised``."""

    def __init__(self, code: Optional[int], message: str, output: str = "") -> None:
        self.code = code
        self.message = message
        self.output = output
        super().__init__(f"{code} {message}" if code is not None else message)


# ---------------------------------------------------------------------------------------------------------------
# field converters


def _ctx(report: str, lineno: int, name: str, value: str) -> str:
    return f"{report} line {lineno}: field {name!r} has invalid value {value!r}"


def _uint(report: str, lineno: int, name: str, value: str, base: int = 10) -> int:
    if not value or not value.isdigit() or (base == 8 and not set(value) <= set("01234567")):
        kind = "an octal" if base == 8 else "an unsigned"
        raise ChronyParseError(_ctx(report, lineno, name, value) + f" (expected {kind} integer)")
    return int(value, base)


def _int(report: str, lineno: int, name: str, value: str) -> int:
    if not re.match(r"^[+-]?\d+$", value):
        raise ChronyParseError(_ctx(report, lineno, name, value) + " (expected an integer)")
    return int(value)


def _float(report: str, lineno: int, name: str, value: str) -> float:
    if not re.match(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$", value):
        raise ChronyParseError(_ctx(report, lineno, name, value) + " (expected a decimal number)")
    return float(value)


def _interval(report: str, lineno: int, name: str, value: str) -> Optional[int]:
    seconds = _uint(report, lineno, name, value)
    return None if seconds == NEVER else seconds


def _choice(report: str, lineno: int, name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ChronyParseError(_ctx(report, lineno, name, value) + f" (expected one of {', '.join(choices)})")
    return value


def _yesno(report: str, lineno: int, name: str, value: str) -> bool:
    return _choice(report, lineno, name, value, ("Yes", "No")) == "Yes"


def _hex32(report: str, lineno: int, name: str, value: str) -> str:
    if not re.match(r"^[0-9A-F]{8}$", value):
        raise ChronyParseError(_ctx(report, lineno, name, value) + " (expected 8 hex digits)")
    return value


def _bits(report: str, lineno: int, name: str, value: str, width: int) -> str:
    if len(value) != width or not set(value) <= {"0", "1"}:
        raise ChronyParseError(_ctx(report, lineno, name, value) + f" (expected {width} binary digits)")
    return value


def _nonempty(report: str, lineno: int, name: str, value: str) -> str:
    if not value:
        raise ChronyParseError(_ctx(report, lineno, name, value) + " (expected a non-empty name)")
    return value


def _split(report: str, lineno: int, line: str, counts: Sequence[int]) -> List[str]:
    fields = line.split(",")
    if len(fields) not in counts:
        expected = " or ".join(str(c) for c in counts)
        raise ChronyParseError(
            f"{report} line {lineno}: expected {expected} comma-separated fields, got {len(fields)}: {line!r}"
        )
    return fields


def _lines(text: str) -> List[Tuple[int, str]]:
    return [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def check_error_lines(text: str) -> None:
    """Raise :class:`ChronycError` if chronyc printed a ``5NN message`` line (it does so on stdout)."""
    for line in text.splitlines():
        m = _ERROR_LINE.match(line.strip())
        if m:
            raise ChronycError(int(m.group(1)), m.group(2), text)


# ---------------------------------------------------------------------------------------------------------------
# records


@dataclass
class AuthData:
    name: str
    mode: str
    key_id: int
    aead: int
    key_length: int
    last_key_exchange: Optional[int]
    attempts: int
    naks: int
    cookies: int
    cookie_length: int


@dataclass
class Source:
    mode: str
    state: str
    name: str
    stratum: int
    poll: int
    reach: int
    last_rx: Optional[int]
    adjusted_offset: float
    measured_offset: float
    error: float

    @property
    def reach_octal(self) -> str:
        return format(self.reach, "o")


@dataclass
class NtpData:
    remote_address: str
    remote_refid: str
    remote_port: int
    local_address: str
    local_refid: str
    leap_status: str
    version: int
    mode: str
    stratum: int
    poll: int
    poll_interval: float
    precision: int
    precision_seconds: float
    root_delay: float
    root_dispersion: float
    reference_id: str
    reference_name: str
    reference_time: float
    offset: float
    peer_delay: float
    peer_dispersion: float
    response_time: float
    jitter_asymmetry: float
    tests_packet: str
    tests_peer: str
    tests_sample: str
    interleaved: bool
    authenticated: bool
    tx_timestamping: str
    rx_timestamping: str
    total_tx: int
    total_rx: int
    total_valid_rx: int
    total_good_rx: Optional[int] = None
    total_kernel_tx: Optional[int] = None
    total_kernel_rx: Optional[int] = None
    total_hw_tx: Optional[int] = None
    total_hw_rx: Optional[int] = None


@dataclass
class Tracking:
    reference_id: str
    reference_name: str
    stratum: int
    reference_time: float
    system_time: float
    last_offset: float
    rms_offset: float
    frequency: float
    residual_frequency: float
    skew: float
    root_delay: float
    root_dispersion: float
    update_interval: float
    leap_status: str

    @property
    def synchronised(self) -> bool:
        return self.leap_status not in ("Not synchronised", "Invalid")


@dataclass
class ChronyVersion:
    program: str
    version: str
    version_tuple: Tuple[int, ...]
    features: Dict[str, bool]

    @property
    def nts(self) -> Optional[bool]:
        return self.features.get("NTS")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["version_tuple"] = list(self.version_tuple)
        d["nts"] = self.nts
        return d


# ---------------------------------------------------------------------------------------------------------------
# single-line parsers


def parse_authdata_line(line: str, lineno: int = 1) -> AuthData:
    r = "authdata"
    f = _split(r, lineno, line, (10,))
    return AuthData(
        name=_nonempty(r, lineno, "name", f[0]),
        mode=_choice(r, lineno, "mode", f[1], AUTH_MODES),
        key_id=_uint(r, lineno, "key_id", f[2]),
        aead=_uint(r, lineno, "aead", f[3]),
        key_length=_uint(r, lineno, "key_length", f[4]),
        last_key_exchange=_interval(r, lineno, "last_key_exchange", f[5]),
        attempts=_uint(r, lineno, "attempts", f[6]),
        naks=_uint(r, lineno, "naks", f[7]),
        cookies=_uint(r, lineno, "cookies", f[8]),
        cookie_length=_uint(r, lineno, "cookie_length", f[9]),
    )


def parse_sources_line(line: str, lineno: int = 1) -> Source:
    r = "sources"
    f = _split(r, lineno, line, (10,))
    return Source(
        mode=_choice(r, lineno, "mode", f[0], tuple(SOURCE_MODES)),
        state=_choice(r, lineno, "state", f[1], tuple(SOURCE_STATES)),
        name=_nonempty(r, lineno, "name", f[2]),
        stratum=_uint(r, lineno, "stratum", f[3]),
        poll=_int(r, lineno, "poll", f[4]),
        reach=_uint(r, lineno, "reach", f[5], base=8),
        last_rx=_interval(r, lineno, "last_rx", f[6]),
        adjusted_offset=_float(r, lineno, "adjusted_offset", f[7]),
        measured_offset=_float(r, lineno, "measured_offset", f[8]),
        error=_float(r, lineno, "error", f[9]),
    )


def parse_tracking_line(line: str, lineno: int = 1) -> Tracking:
    r = "tracking"
    f = _split(r, lineno, line, (14,))
    return Tracking(
        reference_id=_hex32(r, lineno, "reference_id", f[0]),
        reference_name=f[1],
        stratum=_uint(r, lineno, "stratum", f[2]),
        reference_time=_float(r, lineno, "reference_time", f[3]),
        system_time=_float(r, lineno, "system_time", f[4]),
        last_offset=_float(r, lineno, "last_offset", f[5]),
        rms_offset=_float(r, lineno, "rms_offset", f[6]),
        frequency=_float(r, lineno, "frequency", f[7]),
        residual_frequency=_float(r, lineno, "residual_frequency", f[8]),
        skew=_float(r, lineno, "skew", f[9]),
        root_delay=_float(r, lineno, "root_delay", f[10]),
        root_dispersion=_float(r, lineno, "root_dispersion", f[11]),
        update_interval=_float(r, lineno, "update_interval", f[12]),
        leap_status=_choice(r, lineno, "leap_status", f[13], LEAP_STATUSES),
    )


def parse_ntpdata_line(line: str, lineno: int = 1) -> NtpData:
    r = "ntpdata"
    fields = line.split(",")
    if len(fields) not in NTPDATA_LAYOUTS:
        known = ", ".join(f"{n} ({v})" for n, v in NTPDATA_VERSIONS.items())
        raise ChronyParseError(
            f"ntpdata line {lineno}: unsupported number of fields {len(fields)} (known layouts: {known}): {line!r}"
        )
    f = fields
    values = dict(
        remote_address=_nonempty(r, lineno, "remote_address", f[0]),
        remote_refid=_hex32(r, lineno, "remote_refid", f[1]),
        remote_port=_uint(r, lineno, "remote_port", f[2]),
        local_address=_nonempty(r, lineno, "local_address", f[3]),
        local_refid=_hex32(r, lineno, "local_refid", f[4]),
        leap_status=_choice(r, lineno, "leap_status", f[5], LEAP_STATUSES),
        version=_uint(r, lineno, "version", f[6]),
        mode=_choice(r, lineno, "mode", f[7], NTP_MODES),
        stratum=_uint(r, lineno, "stratum", f[8]),
        poll=_int(r, lineno, "poll", f[9]),
        poll_interval=_float(r, lineno, "poll_interval", f[10]),
        precision=_int(r, lineno, "precision", f[11]),
        precision_seconds=_float(r, lineno, "precision_seconds", f[12]),
        root_delay=_float(r, lineno, "root_delay", f[13]),
        root_dispersion=_float(r, lineno, "root_dispersion", f[14]),
        reference_id=_hex32(r, lineno, "reference_id", f[15]),
        reference_name=f[16],
        reference_time=_float(r, lineno, "reference_time", f[17]),
        offset=_float(r, lineno, "offset", f[18]),
        peer_delay=_float(r, lineno, "peer_delay", f[19]),
        peer_dispersion=_float(r, lineno, "peer_dispersion", f[20]),
        response_time=_float(r, lineno, "response_time", f[21]),
        jitter_asymmetry=_float(r, lineno, "jitter_asymmetry", f[22]),
        tests_packet=_bits(r, lineno, "tests_packet", f[23], 3),
        tests_peer=_bits(r, lineno, "tests_peer", f[24], 3),
        tests_sample=_bits(r, lineno, "tests_sample", f[25], 4),
        interleaved=_yesno(r, lineno, "interleaved", f[26]),
        authenticated=_yesno(r, lineno, "authenticated", f[27]),
        tx_timestamping=_choice(r, lineno, "tx_timestamping", f[28], TIMESTAMP_SOURCES),
        rx_timestamping=_choice(r, lineno, "rx_timestamping", f[29], TIMESTAMP_SOURCES),
    )
    layout = NTPDATA_LAYOUTS[len(fields)]
    for idx in range(30, len(fields)):
        values[layout[idx]] = _uint(r, lineno, layout[idx], f[idx])
    return NtpData(**values)


# ---------------------------------------------------------------------------------------------------------------
# whole-report parsers


def parse_authdata(text: str) -> List[AuthData]:
    check_error_lines(text)
    return [parse_authdata_line(line, n) for n, line in _lines(text)]


def parse_sources(text: str) -> List[Source]:
    check_error_lines(text)
    return [parse_sources_line(line, n) for n, line in _lines(text)]


def parse_ntpdata(text: str) -> List[NtpData]:
    check_error_lines(text)
    return [parse_ntpdata_line(line, n) for n, line in _lines(text)]


def parse_tracking(text: str) -> Tracking:
    check_error_lines(text)
    lines = _lines(text)
    if len(lines) != 1:
        raise ChronyParseError(f"tracking: expected exactly 1 line, got {len(lines)}")
    n, line = lines[0]
    return parse_tracking_line(line, n)


def parse_serverstats(text: str) -> Dict[str, int]:
    check_error_lines(text)
    lines = _lines(text)
    if len(lines) != 1:
        raise ChronyParseError(f"serverstats: expected exactly 1 line, got {len(lines)}")
    n, line = lines[0]
    fields = line.split(",")
    if len(fields) not in SERVERSTATS_LAYOUTS:
        raise ChronyParseError(
            f"serverstats line {n}: unsupported number of fields {len(fields)} "
            f"(known: 8 on chrony 4.0-4.1, 11 on 4.2-4.3, 17 on 4.4+): {line!r}"
        )
    layout = SERVERSTATS_LAYOUTS[len(fields)]
    return {name: _uint("serverstats", n, name, value) for name, value in zip(layout, fields)}


_VERSION_RE = re.compile(r"^(chronyd|chronyc) \(chrony\) version (\S+)(?: \(([^)]*)\))?\s*$")


def parse_version(text: str) -> ChronyVersion:
    """Parse ``chronyd --version`` / ``chronyc --version``, e.g.
    ``chronyd (chrony) version 4.3 (+CMDMON +NTP ... +NTS ... -DEBUG)``."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    m = _VERSION_RE.match(line)
    if not m:
        raise ChronyParseError(f"version: unrecognised output {text.strip()!r} (expected 'chronyd (chrony) version X')")
    program, version, flags = m.group(1), m.group(2), m.group(3) or ""
    num = re.match(r"^(\d+(?:\.\d+)*)", version)
    if not num:
        raise ChronyParseError(f"version: field 'version' has invalid value {version!r} (expected digits like 4.3)")
    features: Dict[str, bool] = {}
    for flag in flags.split():
        if len(flag) < 2 or flag[0] not in "+-":
            raise ChronyParseError(f"version: feature flag {flag!r} is not of the form +NAME or -NAME")
        features[flag[1:]] = flag[0] == "+"
    return ChronyVersion(program, version, tuple(int(p) for p in num.group(1).split(".")), features)


@dataclass
class StatusReport:
    """The four reports of one ``chronyc -c -N -m sources tracking authdata ntpdata`` call."""

    sources: List[Source]
    tracking: Tracking
    authdata: List[AuthData]
    ntpdata: List[NtpData]


def parse_status_output(text: str) -> StatusReport:
    """Split and parse the output of ``chronyc -c [-N] -m sources tracking authdata ntpdata``.

    chrony < 4.4 has no ``-e`` end-of-report marker, so the reports are told apart by shape: 10-field sources lines,
    then exactly one 14-field tracking line, then 10-field authdata lines, then ntpdata lines (33/34/38 fields).
    """
    check_error_lines(text)
    sources: List[Source] = []
    authdata: List[AuthData] = []
    ntpdata: List[NtpData] = []
    tracking: Optional[Tracking] = None
    for n, line in _lines(text):
        count = line.count(",") + 1
        if tracking is None:
            if count == 14:
                tracking = parse_tracking_line(line, n)
            else:
                sources.append(parse_sources_line(line, n))
        elif count == 10 and not ntpdata:
            authdata.append(parse_authdata_line(line, n))
        elif count in NTPDATA_LAYOUTS or count not in (10, 14):
            ntpdata.append(parse_ntpdata_line(line, n))
        else:
            raise ChronyParseError(
                f"status output line {n}: unexpected {count}-field line after the tracking line "
                f"(expected authdata then ntpdata lines, order {' '.join(STATUS_COMMANDS)}): {line!r}"
            )
    if tracking is None:
        raise ChronyParseError(
            "status output: no 14-field tracking line found; expected the output of "
            f"'chronyc -c -m {' '.join(STATUS_COMMANDS)}'"
        )
    return StatusReport(sources, tracking, authdata, ntpdata)


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
) -> dict:
    """Poll chronyd (``run(argv) -> (rc, stdout, stderr)``) until the health predicate holds or ``timeout`` passes.

    Fresh (the default): a source counts only on a valid, authenticated reply received during this check. When
    chronyd was (re)started for this check, ``started`` is the ``clock()`` value just before the start and everything
    chronyd counts is new; otherwise the first poll is the baseline and ``burst`` (argv, see :func:`burst_command`)
    asks every source for a sample at once, again every ``burst_every`` seconds while the predicate does not hold
    (chronyd keeps 2 s between a source's burst requests and ignores a burst asked for while one runs).
    A dead server therefore makes the check fail within ``timeout`` whatever its history. The names in ``fresh_ke``
    must also have made an NTS key exchange after ``started`` (their trust settings changed). ``baseline`` (from
    :func:`start_fresh_check`, run earlier in the same deployment) replaces the first poll's counters: replies that
    arrived since then count, so the burst sent then has usually been answered by the first poll.

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
