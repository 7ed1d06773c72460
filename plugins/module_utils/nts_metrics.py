# -*- coding: utf-8 -*-
"""Prometheus text exposition of the host-side NTS health check (node_exporter's textfile collector).

Pure functions, standard library only, no Ansible imports: :func:`render` turns the dict returned by
``chrony_status.wait_for_nts`` (plus optional ``chronyc -c serverstats`` counters, the NTS server certificate's
notAfter and the mtime of ``ntsdumpdir/ntskeys``) into the exposition text; ``nts_check`` does the reading and the
atomic write. Every metric is declared once in :data:`METRICS`, and ``monitoring/METRICS.md`` documents the same names,
types, labels and help texts (``tests/unit/test_nts_metrics_docs.py`` keeps the two in step).

Cardinality: the only labels are ``source`` (the source's name as configured, ``chronyc -N``) and, on
``chrony_nts_source_aead_info``, ``aead`` (a small integer). No addresses, no free text: the causes the check finds
go to its log line, not into labels. A name shared by several sources (a ``pool``) is one series, reported by a
healthy source of that name when it has one (the health predicate's own rule: one healthy source suffices for a name).
"""

from __future__ import annotations

import math
from collections import namedtuple
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

Metric = namedtuple("Metric", "name type labels help")

METRICS = (
    # --- per source --------------------------------------------------------------------------------------------
    Metric(
        "chrony_nts_source_authenticated_now",
        "gauge",
        ("source",),
        "1 when the source passes the deploy proof's fresh health predicate in this check (NTS, KeyID > 0, no NAK, "
        "cookies, and a valid authenticated reply received during the check), else 0.",
    ),
    Metric(
        "chrony_nts_source_key_exchanges_total",
        "counter",
        ("source",),
        "Successful NTS key exchanges with the source (chronyc authdata KeyID).",
    ),
    Metric(
        "chrony_nts_source_key_exchange_attempts",
        "gauge",
        ("source",),
        "NTS key exchange attempts since the last successful one (chronyc authdata Atmp); above 1 it is failing.",
    ),
    Metric(
        "chrony_nts_source_key_exchange_age_seconds",
        "gauge",
        ("source",),
        "Seconds since the last successful NTS key exchange with the source, at the time of the check; +Inf if never.",
    ),
    Metric(
        "chrony_nts_source_nak",
        "gauge",
        ("source",),
        "1 when the source answered chronyd's last request with an NTS NAK (cookies rejected), else 0.",
    ),
    Metric(
        "chrony_nts_source_cookies",
        "gauge",
        ("source",),
        "NTS cookies chronyd holds for the source (8 after a key exchange; with 0 it cannot send a request).",
    ),
    Metric(
        "chrony_nts_source_aead_info",
        "gauge",
        ("source", "aead"),
        "Always 1; label aead is the AEAD algorithm id in use with the source (15 AES-SIV-CMAC-256, 30 "
        "AES-128-GCM-SIV, 0 none).",
    ),
    Metric(
        "chrony_nts_source_reach",
        "gauge",
        ("source",),
        "Reachability register of the source as an integer, 0-255 (chronyc shows it in octal: 377 = last 8 polls "
        "answered).",
    ),
    Metric(
        "chrony_nts_source_selected",
        "gauge",
        ("source",),
        "1 when chronyd synchronises to the source (state *), else 0.",
    ),
    Metric(
        "chrony_nts_source_combined",
        "gauge",
        ("source",),
        "1 when the source is used for synchronisation, selected or combined (state * or +), else 0.",
    ),
    Metric(
        "chrony_nts_source_offset_seconds",
        "gauge",
        ("source",),
        "Adjusted offset of the source's last sample in seconds (positive: the local clock is ahead).",
    ),
    Metric(
        "chrony_nts_source_authenticated_sample_age_seconds",
        "gauge",
        ("source",),
        "Seconds since the source's last authenticated sample, at the time of the check; +Inf if never.",
    ),
    # --- per host ------------------------------------------------------------------------------------------------
    Metric(
        "chrony_nts_verified",
        "gauge",
        (),
        "1 when the host passes the deploy proof's predicate in this check (every required source authenticated now, "
        "at least min-sources, clock synchronised if required), else 0.",
    ),
    Metric(
        "chrony_nts_healthy_sources",
        "gauge",
        (),
        "Sources that are authenticated now (pass the fresh health predicate in this check).",
    ),
    Metric(
        "chrony_nts_sources",
        "gauge",
        (),
        "Sources the check reports: chronyd's NTS sources plus required names that are not NTS or not configured.",
    ),
    Metric(
        "chrony_nts_chronyd_running",
        "gauge",
        (),
        "1 when chronyd answered chronyc on its command socket during the check, else 0.",
    ),
    Metric(
        "chrony_nts_last_check_timestamp_seconds",
        "gauge",
        (),
        "Unix time at which the check took its readings (its end).",
    ),
    Metric(
        "chrony_nts_check_duration_seconds",
        "gauge",
        (),
        "Seconds the check took, bounded by its timeout (a dead source makes it wait for the whole timeout).",
    ),
    # --- per NTS server (tier) host ------------------------------------------------------------------------------
    Metric(
        "chrony_nts_server_ke_accepted_total",
        "counter",
        (),
        "NTS-KE connections accepted by this chronyd (chronyc serverstats).",
    ),
    Metric(
        "chrony_nts_server_ke_dropped_total",
        "counter",
        (),
        "NTS-KE connections dropped by this chronyd: rate limit or connection limit (chronyc serverstats).",
    ),
    Metric(
        "chrony_nts_server_authenticated_packets_total",
        "counter",
        (),
        "Authenticated NTP requests (NTS) this chronyd served (chronyc serverstats).",
    ),
    Metric(
        "chrony_nts_server_certificate_not_after_timestamp_seconds",
        "gauge",
        (),
        "notAfter of the NTS server certificate as Unix time (the earliest when several are checked).",
    ),
    Metric(
        "chrony_nts_server_ntskeys_age_seconds",
        "gauge",
        (),
        "Seconds since chronyd last wrote its NTS cookie keys (ntsdumpdir/ntskeys: at each ntsrotate and at stop).",
    ),
)
"""Every metric the check can write: name, Prometheus type, label names, HELP text."""

BY_NAME = {m.name: m for m in METRICS}

SERVERSTATS_METRICS = (
    ("chrony_nts_server_ke_accepted_total", "nts_ke_accepted"),
    ("chrony_nts_server_ke_dropped_total", "nts_ke_dropped"),
    ("chrony_nts_server_authenticated_packets_total", "authenticated_ntp"),
)
"""Metric name -> key of ``chrony_status.parse_serverstats``."""

Labels = Tuple[Tuple[str, str], ...]
Sample = Tuple[str, Labels, float]


def format_value(value: float) -> str:
    """Exposition-format number: integers without a decimal point, ``+Inf``/``-Inf``/``NaN``, floats with repr."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def escape_label_value(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _age(seconds: Optional[int]) -> float:
    return math.inf if seconds is None else seconds


def _flag(condition: bool) -> int:
    return 1 if condition else 0


def report_sources(sources: Iterable[Mapping], required: Sequence[str] = ()) -> List[Mapping]:
    """The per-source entries to export, one per name, in chronyd's order.

    An entry is exported when its mode is NTS or its name is in ``required`` (a required name that is not NTS or not
    configured is reported as not authenticated; unauthenticated sources nobody asked for, such as a distribution
    ``pool`` kept beside ``authselectmode require``, are left out). For a name shared by several sources the first
    healthy one is kept, else the first one.
    """
    chosen: Dict[str, Mapping] = {}
    for entry in sources:
        name = entry.get("name")
        if not name or (entry.get("mode") != "NTS" and name not in required):
            continue
        if name not in chosen or (entry.get("healthy") and not chosen[name].get("healthy")):
            chosen[name] = entry
    return list(chosen.values())


def source_samples(entry: Mapping) -> List[Sample]:
    """Samples of one source entry (``SourceHealth.to_dict()``); fields chronyd did not report are left out."""
    src: Labels = (("source", entry["name"]),)
    out: List[Sample] = [("chrony_nts_source_authenticated_now", src, _flag(bool(entry.get("healthy"))))]
    if entry.get("mode") is not None:  # authdata row present
        out += [
            ("chrony_nts_source_key_exchanges_total", src, entry["key_id"]),
            ("chrony_nts_source_key_exchange_attempts", src, entry["attempts"]),
            ("chrony_nts_source_key_exchange_age_seconds", src, _age(entry["last_key_exchange"])),
            ("chrony_nts_source_nak", src, _flag(entry["naks"] > 0)),
            ("chrony_nts_source_cookies", src, entry["cookies"]),
            ("chrony_nts_source_aead_info", (*src, ("aead", str(entry["aead"]))), 1),
        ]
    if entry.get("state") is not None:  # sources row present
        # Every sample chronyd accepts from an NTS source passed authentication; other modes have none.
        sample_age = _age(entry.get("last_rx")) if entry.get("mode") == "NTS" else math.inf
        out += [
            ("chrony_nts_source_reach", src, entry["reach"]),
            ("chrony_nts_source_selected", src, _flag(entry["state"] == "*")),
            ("chrony_nts_source_combined", src, _flag(entry["state"] in ("*", "+"))),
            ("chrony_nts_source_offset_seconds", src, entry["offset"]),
            ("chrony_nts_source_authenticated_sample_age_seconds", src, sample_age),
        ]
    return out


def samples(
    result: Mapping,
    check_started: float,
    check_duration: float,
    chronyd_running: bool,
    serverstats: Optional[Mapping[str, int]] = None,
    cert_not_after: Optional[float] = None,
    ntskeys_mtime: Optional[float] = None,
    required: Sequence[str] = (),
    now: Optional[float] = None,
) -> List[Sample]:
    """Every sample of one check, unordered. See :func:`render`."""
    checked_at = check_started + check_duration
    now = checked_at if now is None else now
    exported = report_sources(result.get("sources") or (), required)
    out: List[Sample] = []
    for entry in exported:
        out += source_samples(entry)
    out += [
        ("chrony_nts_verified", (), _flag(bool(result.get("verified")))),
        ("chrony_nts_healthy_sources", (), sum(1 for e in exported if e.get("healthy"))),
        ("chrony_nts_sources", (), len(exported)),
        ("chrony_nts_chronyd_running", (), _flag(chronyd_running)),
        ("chrony_nts_last_check_timestamp_seconds", (), round(checked_at, 3)),
        ("chrony_nts_check_duration_seconds", (), round(check_duration, 3)),
    ]
    if serverstats is not None:
        out += [(name, (), serverstats[key]) for name, key in SERVERSTATS_METRICS if key in serverstats]
    if cert_not_after is not None:
        out.append(("chrony_nts_server_certificate_not_after_timestamp_seconds", (), cert_not_after))
    if ntskeys_mtime is not None:
        out.append(("chrony_nts_server_ntskeys_age_seconds", (), round(max(0.0, now - ntskeys_mtime), 3)))
    return out


def render(
    result: Mapping,
    check_started: float,
    check_duration: float,
    chronyd_running: bool,
    serverstats: Optional[Mapping[str, int]] = None,
    cert_not_after: Optional[float] = None,
    ntskeys_mtime: Optional[float] = None,
    required: Sequence[str] = (),
    now: Optional[float] = None,
) -> str:
    """The exposition text of one check.

    ``result``: the dict returned by ``wait_for_nts`` (``verified``, ``sources`` as ``SourceHealth.to_dict()``).
    ``check_started``: Unix time the check started; ``check_duration``: its seconds (the readings are from
    ``check_started + check_duration``). ``chronyd_running``: chronyd answered chronyc. ``serverstats``: the dict of
    ``parse_serverstats`` (tier hosts). ``cert_not_after``: Unix time. ``ntskeys_mtime``: Unix time, its age is taken
    at ``now`` (default: the end of the check). ``required``: names the verdict required (always exported).

    Families appear in :data:`METRICS` order, each with its HELP and TYPE lines, only when they have samples.
    """
    by_family: Dict[str, List[Tuple[Labels, float]]] = {}
    for name, labels, value in samples(
        result,
        check_started,
        check_duration,
        chronyd_running,
        serverstats,
        cert_not_after,
        ntskeys_mtime,
        required,
        now,
    ):
        if name not in BY_NAME:
            raise ValueError("metric %s is not declared in METRICS" % name)
        by_family.setdefault(name, []).append((labels, value))
    lines: List[str] = []
    for metric in METRICS:
        rows = by_family.get(metric.name)
        if not rows:
            continue
        lines.append("# HELP %s %s" % (metric.name, metric.help.replace("\\", "\\\\").replace("\n", "\\n")))
        lines.append("# TYPE %s %s" % (metric.name, metric.type))
        for labels, value in rows:
            if tuple(k for k, _value in labels) != metric.labels:
                raise ValueError("metric %s: labels %r, declared %r" % (metric.name, labels, metric.labels))
            text = ",".join('%s="%s"' % (k, escape_label_value(v)) for k, v in labels)
            lines.append("%s%s %s" % (metric.name, "{%s}" % text if text else "", format_value(value)))
    return "\n".join(lines) + "\n"


def parse(text: str) -> Dict[Tuple[str, Labels], float]:
    """Read back exposition text written by :func:`render`: ``{(name, labels): value}`` (for tests and tools)."""
    values: Dict[Tuple[str, Labels], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _sep, value = line.rpartition(" ")
        if "{" in head:
            name, _sep, rest = head.partition("{")
            labels = []
            for part in _split_labels(rest[:-1]):
                key, _sep, quoted = part.partition("=")
                labels.append((key, _unescape(quoted[1:-1])))
            key_labels: Labels = tuple(labels)
        else:
            name, key_labels = head, ()
        values[(name, key_labels)] = float(value)
    return values


def _unescape(text: str) -> str:
    out, escaped = [], False
    for ch in text:
        if escaped:
            out.append("\n" if ch == "n" else ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out.append(ch)
    return "".join(out)


def _split_labels(text: str) -> List[str]:
    parts, current, quoted, escaped = [], "", False, False
    for ch in text:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            current += ch
            escaped = True
        elif ch == '"':
            current += ch
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current:
        parts.append(current)
    return parts
