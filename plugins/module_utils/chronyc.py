# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parse ``chronyc -c`` (CSV) reports (the parsers; the health predicate is in nts_health).

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

import re
from dataclasses import asdict, dataclass
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
