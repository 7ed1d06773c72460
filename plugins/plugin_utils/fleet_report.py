# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet NTS health report and rollout summary: data model and renderers (JSON, HTML with an inline SVG, Markdown).

Standard library only, Python >= 3.9, no Ansible imports: the ``nts_report`` filter plugin calls it from the
playbooks, tests and the benchmark call it directly.

Input of :func:`build_report`: one record per host, as ``playbooks/report.yml`` collects them::

    {"host": "client1",                 # inventory name (required)
     "groups": ["chrony_nts_clients"],  # inventory groups of interest (optional)
     "error": None,                     # why nothing could be read (unreachable, chronyd down ...), or None
     "authdata": {...},                 # the chrony_authdata module's result (sources, tracking, verified, reasons)
     "serverstats": {...},              # the chrony_serverstats module's ``stats`` for NTS servers (optional)
     "reading": {"source": "metrics",   # where authdata came from: "metrics" (the host check's file) or "live"
                 "age": 23,             # seconds since the reading was taken (0 for a live check)
                 "checked_at": 1.8e9,   # Unix time of the host check (metrics), or None
                 "why_live": None}}     # why the metrics were not used (live), or None; the whole field optional

``nts.chrony.nts_report_records`` makes them, converting the host check's metrics (``nts_metrics_reading``) into the
``authdata`` a live ``chrony_authdata`` call gives: no tracking there, so such a host's offset is the selected
source's last sample (``offset_basis``).

Every bad input raises :class:`ReportError` naming the record, the field and the value.
"""

from __future__ import annotations

import html
import json
import math
import time
from typing import Any, Dict, Optional, Sequence

SCHEMA = "chrony-nts-report/1"
ROLLOUT_SCHEMA = "chrony-nts-rollout/1"
STATUSES = ("healthy", "unhealthy", "unknown")
COLOURS = {"healthy": "#2e7d32", "unhealthy": "#c62828", "unknown": "#9e9e9e"}
SOURCE_KEYS = (
    "name",
    "address",
    "mode",
    "state",
    "healthy",
    "cause",
    "key_id",
    "attempts",
    "naks",
    "cookies",
    "reach",
    "reach_octal",
    "offset",
    "last_key_exchange",
    "last_rx",
    "authenticated",
    "stratum",
)
SERVER_KEYS = ("nts_ke_accepted", "nts_ke_dropped", "authenticated_ntp", "ntp_rx", "ntp_dropped")
READING_SOURCES = ("metrics", "live")


class ReportError(ValueError):
    """A record does not have the expected shape; the message names the record, the field and the value."""


# ---------------------------------------------------------------------------------------------------------- helpers
def _where(index: int, record: Any) -> str:
    host = record.get("host") if isinstance(record, dict) else None
    return "records[%d]%s" % (index, " (host %r)" % host if isinstance(host, str) and host else "")


def _number(where: str, name: str, value: Any, allow_none: bool = True) -> Optional[float]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ReportError("%s: field %r must be a finite number%s, got %r" % (where, name, " or null", value))
    return value


def _int(where: str, name: str, value: Any, allow_none: bool = True) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReportError("%s: field %r must be a non-negative integer%s, got %r" % (where, name, " or null", value))
    return value


def format_offset(seconds: Optional[float]) -> str:
    """Human offset with a unit chosen for its size: ``+12.3 µs``, ``-1.50 ms``, ``n/a`` for None."""
    if seconds is None:
        return "n/a"
    magnitude = abs(seconds)
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if magnitude >= scale:
            return "%+.3g %s" % (seconds / scale, unit)
    return "%+.3g ns" % (seconds / 1e-9) if magnitude > 0 else "0 s"


def format_age(seconds: Optional[int]) -> str:
    """``42 s``, ``3 min``, ``5 h``, ``2 d`` ago; ``never`` for None."""
    if seconds is None:
        return "never"
    for limit, unit in ((120, "s"), (7200, "min"), (172800, "h")):
        if seconds < limit:
            divisor = {"s": 1, "min": 60, "h": 3600}[unit]
            return "%d %s ago" % (seconds // divisor, unit)
    return "%d d ago" % (seconds // 86400)


def format_timestamp(seconds: Optional[float]) -> str:
    """``2027-01-15T08:00:00Z`` (UTC) for a Unix time; ``n/a`` for None."""
    if seconds is None:
        return "n/a"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def format_reading(reading: Optional[Dict[str, Any]], long: bool = False) -> str:
    """Where a host's state was read and how old it is: ``metrics, 23 s old`` / ``live check``; with ``long`` the
    check's time and why the metrics were not used. ``n/a`` (long: ``nothing read``) when nothing was read."""
    if not reading:
        return "nothing read" if long else "n/a"
    if reading["source"] == "metrics":
        text = "metrics, %d s old" % reading["age"]
        if long:
            text = "the host check's metrics file, %d s old (checked %s)" % (
                reading["age"],
                format_timestamp(reading["checked_at"]),
            )
        return text
    if long and reading.get("why_live"):
        return "live check (%s)" % reading["why_live"]
    return "live check"


# ---------------------------------------------------------------------------------------------------------- the model
def _reading(where: str, raw: Any) -> Optional[Dict[str, Any]]:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ReportError("%s: field 'reading' must be a mapping or null, got %r" % (where, raw))
    source = raw.get("source")
    if source not in READING_SOURCES:
        choices = ", ".join(READING_SOURCES)
        raise ReportError("%s: field 'reading.source' must be one of %s, got %r" % (where, choices, source))
    age = _number(where, "reading.age", raw.get("age"), allow_none=False)
    if age < 0:  # type: ignore[operator]
        raise ReportError("%s: field 'reading.age' must be >= 0 seconds, got %r" % (where, age))
    if source == "live" and age != 0:
        raise ReportError("%s: field 'reading.age' of a live check must be 0, got %r" % (where, age))
    why = raw.get("why_live")
    if why is not None and not isinstance(why, str):
        raise ReportError("%s: field 'reading.why_live' must be a string or null, got %r" % (where, why))
    return {
        "source": source,
        "age": age,
        "checked_at": _number(where, "reading.checked_at", raw.get("checked_at")),
        "why_live": why if source == "live" else None,
    }


def _source(where: str, index: int, raw: Any) -> Dict[str, Any]:
    here = "%s: authdata.sources[%d]" % (where, index)
    if not isinstance(raw, dict):
        raise ReportError("%s must be a mapping (a chrony_authdata source), got %r" % (here, raw))
    if not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ReportError("%s: field 'name' must be a non-empty string, got %r" % (here, raw.get("name")))
    if not isinstance(raw.get("healthy"), bool):
        raise ReportError("%s: field 'healthy' must be true or false, got %r" % (here, raw.get("healthy")))
    out = {key: raw.get(key) for key in SOURCE_KEYS}
    for key in ("key_id", "attempts", "naks", "cookies", "reach", "last_key_exchange", "last_rx", "stratum"):
        _int(here, key, out[key])
    _number(here, "offset", out["offset"])
    if out["healthy"]:
        out["cause"] = None
    problems = raw.get("problems") or ([raw["cause"]] if raw.get("cause") else [])
    if not isinstance(problems, list) or not all(isinstance(p, str) for p in problems):
        raise ReportError("%s: field 'problems' must be a list of strings, got %r" % (here, problems))
    out["problems"] = list(problems)
    return out


def _host(index: int, record: Any) -> Dict[str, Any]:
    where = _where(index, record)
    if not isinstance(record, dict):
        raise ReportError("%s must be a mapping, got %r" % (where, record))
    host = record.get("host")
    if not isinstance(host, str) or not host:
        raise ReportError("%s: field 'host' must be a non-empty string, got %r" % (where, host))
    groups = record.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ReportError("%s: field 'groups' must be a list of strings, got %r" % (where, groups))
    error = record.get("error")
    if error is not None and not isinstance(error, str):
        raise ReportError("%s: field 'error' must be a string or null, got %r" % (where, error))
    auth = record.get("authdata")
    if auth is not None and not isinstance(auth, dict):
        raise ReportError("%s: field 'authdata' must be a chrony_authdata result (mapping), got %r" % (where, auth))
    out: Dict[str, Any] = {
        "name": host,
        "groups": list(groups),
        "status": "unknown",
        "verified": None,
        "offset": None,
        "rms_offset": None,
        "stratum": None,
        "synchronised": None,
        "leap_status": None,
        "reference": None,
        "chrony_version": None,
        "sources": [],
        "failures": [],
        "server": None,
        "offset_basis": None,
        "reading": _reading(where, record.get("reading")),
    }
    if auth is not None and "sources" in auth:
        sources = auth.get("sources")
        if not isinstance(sources, list):
            raise ReportError("%s: field 'authdata.sources' must be a list, got %r" % (where, sources))
        out["sources"] = [_source(where, i, s) for i, s in enumerate(sources)]
        verified = auth.get("verified")
        if not isinstance(verified, bool):
            raise ReportError("%s: field 'authdata.verified' must be true or false, got %r" % (where, verified))
        out["verified"] = verified
        tracking = auth.get("tracking") or {}
        if not isinstance(tracking, dict):
            raise ReportError("%s: field 'authdata.tracking' must be a mapping, got %r" % (where, tracking))
        out["offset"] = _number(where, "authdata.tracking.last_offset", tracking.get("last_offset"))
        out["rms_offset"] = _number(where, "authdata.tracking.rms_offset", tracking.get("rms_offset"))
        out["stratum"] = _int(where, "authdata.tracking.stratum", tracking.get("stratum"))
        out["synchronised"] = tracking.get("synchronised")
        out["leap_status"] = tracking.get("leap_status")
        out["reference"] = tracking.get("reference_name") or None
        if out["offset"] is not None:
            out["offset_basis"] = "tracking"
        else:  # read from the metrics: no tracking, the selected source's last sample stands in
            chosen = [s["offset"] for s in out["sources"] if s["state"] == "*" and s["offset"] is not None]
            if chosen:
                out["offset"], out["offset_basis"] = chosen[0], "selected source"
        version = auth.get("chrony_version") or {}
        out["chrony_version"] = version.get("version") if isinstance(version, dict) else None
        reasons = auth.get("reasons") or []
        if not isinstance(reasons, list):
            raise ReportError("%s: field 'authdata.reasons' must be a list, got %r" % (where, reasons))
        out["failures"] = [str(r) for r in reasons]
        out["failures"] += ["%s: %s" % (s["name"], s["cause"]) for s in out["sources"] if not s["healthy"]]
        out["status"] = "healthy" if verified and not error else "unhealthy"
    elif auth is not None and auth.get("msg"):
        out["failures"] = [str(auth["msg"])]
        out["status"] = "unhealthy"
    if error:
        out["failures"].insert(0, error)
        if out["status"] == "healthy":
            out["status"] = "unhealthy"
    if out["status"] == "unknown" and not out["failures"]:
        out["failures"] = ["no data collected"]
    stats = record.get("serverstats")
    if stats is not None:
        if not isinstance(stats, dict):
            raise ReportError("%s: field 'serverstats' must be a mapping of counters, got %r" % (where, stats))
        out["server"] = {key: _int(where, "serverstats.%s" % key, stats.get(key)) for key in SERVER_KEYS}
    return out


def build_report(records: Sequence[Any], generated_at: str, title: str = "chrony NTS fleet health") -> Dict[str, Any]:
    """The report as plain data (what ``report.json`` holds): a summary and one entry per host, sorted by name."""
    if not isinstance(records, (list, tuple)):
        raise ReportError("records must be a list of host records, got %r" % (records,))
    if not isinstance(generated_at, str) or not generated_at:
        raise ReportError("generated_at must be a non-empty timestamp string, got %r" % (generated_at,))
    hosts = [_host(i, r) for i, r in enumerate(records)]
    names = [h["name"] for h in hosts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ReportError("records: host(s) listed more than once: %s" % ", ".join(duplicates))
    hosts.sort(key=lambda h: h["name"])
    sources = [s for h in hosts for s in h["sources"]]
    offsets = [abs(h["offset"]) for h in hosts if h["offset"] is not None]
    summary = {status: sum(1 for h in hosts if h["status"] == status) for status in STATUSES}
    summary.update(
        hosts=len(hosts),
        nts_sources=len(sources),
        healthy_sources=sum(1 for s in sources if s["healthy"]),
        naks=sum(s["naks"] or 0 for s in sources),
        max_abs_offset=max(offsets) if offsets else None,
        nts_ke_served=sum((h["server"] or {}).get("nts_ke_accepted") or 0 for h in hosts),
        readings={
            "metrics": sum(1 for h in hosts if (h["reading"] or {}).get("source") == "metrics"),
            "live": sum(1 for h in hosts if (h["reading"] or {}).get("source") == "live"),
            "none": sum(1 for h in hosts if not h["reading"]),
        },
        max_reading_age=max(
            [h["reading"]["age"] for h in hosts if (h["reading"] or {}).get("source") == "metrics"], default=None
        ),
    )
    return {"schema": SCHEMA, "title": title, "generated_at": generated_at, "summary": summary, "hosts": hosts}


def readings_text(summary: Dict[str, Any]) -> str:
    """``3 read from the host check's metrics (oldest 45 s), 1 live check, 1 not read``."""
    r = summary.get("readings") or {}
    parts = []
    if r.get("metrics"):
        parts.append("%d read from the host check's metrics (oldest %d s)" % (r["metrics"], summary["max_reading_age"]))
    if r.get("live"):
        parts.append("%d live check%s" % (r["live"], "" if r["live"] == 1 else "s"))
    if r.get("none"):
        parts.append("%d not read" % r["none"])
    return ", ".join(parts) or "no host"


def render_json(report: Dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------------------- the picture
def render_svg(report: Dict[str, Any]) -> str:
    """Horizontal bars of each host's last clock offset (chronyd tracking), centred on zero, coloured by status.

    The scale is symmetric and linear up to the largest absolute offset (at least 1 µs); hosts without an offset
    get a grey ``n/a`` marker, so every host has a row.
    """
    e = html.escape
    hosts = report["hosts"]
    row, top, label_w, plot_w, value_w = 22, 44, 170, 420, 110
    width = label_w + plot_w + value_w
    height = top + row * max(len(hosts), 1) + 34
    scale = max([abs(h["offset"]) for h in hosts if h["offset"] is not None] + [1e-6])
    centre = label_w + plot_w / 2.0
    half = plot_w / 2.0 - 4
    out = [
        '<svg xmlns="http://www.w3.org/2000/svg" role="img" width="%d" height="%d" viewBox="0 0 %d %d" '
        'font-family="sans-serif" font-size="12">' % (width, height, width, height),
        "<title>Clock offset per host (last update, chronyd tracking; read from the host check's metrics: the "
        "selected source's last sample); green healthy, red unhealthy, grey unknown</title>",
        '<text x="%d" y="16" font-weight="bold">Clock offset per host</text>' % 0,
        '<text x="%d" y="32" fill="#555">scale ±%s</text>' % (0, e(format_offset(scale).lstrip("+"))),
    ]
    for frac in (-1.0, -0.5, 0.0, 0.5, 1.0):
        x = centre + frac * half
        out.append(
            '<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-dasharray="%s"/>'
            % (x, top - 6, x, top + row * max(len(hosts), 1), "#333" if frac == 0 else "#ccc", "" if frac == 0 else "3")
        )
        tick = "0" if frac == 0 else format_offset(frac * scale)
        out.append(
            '<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>'
            % (x, top + row * max(len(hosts), 1) + 16, e(tick))
        )
    for i, h in enumerate(hosts):
        y = top + i * row
        colour = COLOURS[h["status"]]
        out.append(
            '<g class="host %s" data-host="%s"><text x="%d" y="%d" text-anchor="end">%s</text>'
            % (h["status"], e(h["name"], quote=True), label_w - 8, y + 14, e(h["name"]))
        )
        if h["offset"] is None:
            out.append(
                '<rect x="%.1f" y="%d" width="8" height="14" fill="%s"/>' % (centre - 4, y + 3, COLOURS["unknown"])
            )
        else:
            length = max(abs(h["offset"]) / scale * half, 1.0)
            x = centre if h["offset"] >= 0 else centre - length
            out.append(
                '<rect x="%.1f" y="%d" width="%.1f" height="14" fill="%s"><title>%s %s (%s)</title></rect>'
                % (x, y + 3, length, colour, e(h["name"]), e(format_offset(h["offset"])), h["status"])
            )
        out.append(
            '<text x="%d" y="%d" fill="%s">%s</text></g>'
            % (label_w + plot_w + 6, y + 14, colour, e(format_offset(h["offset"])))
        )
    out.append("</svg>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.4em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.healthy { color: #2e7d32; } .unhealthy { color: #c62828; } .unknown { color: #757575; }
.badge { font-weight: bold; text-transform: uppercase; }
ul.failures { margin: 0.2em 0 1em; color: #c62828; }
h2 { margin-top: 1.4em; border-bottom: 1px solid #ddd; }
"""


def _cell(value: Any) -> str:
    return "&ndash;" if value is None else html.escape(str(value))


def _offset_note(host: Dict[str, Any]) -> str:
    if host.get("offset_basis") == "selected source":
        return " Offset: the selected source's last sample (the metrics carry no tracking)."
    return ""


def render_html(report: Dict[str, Any]) -> str:
    """One self-contained page: inline CSS and SVG, no scripts, no external assets."""
    e = html.escape
    s = report["summary"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>%s</title>" % e(report["title"]),
        "<style>%s</style></head><body>" % _CSS,
        "<h1>%s</h1>" % e(report["title"]),
        "<p>Generated %s. <span class='healthy'>%d healthy</span>, <span class='unhealthy'>%d unhealthy</span>, "
        "<span class='unknown'>%d unknown</span> of %d hosts; %d of %d NTS sources healthy; %d NAKs; "
        "largest offset %s. Readings: %s.</p>"
        % (
            e(report["generated_at"]),
            s["healthy"],
            s["unhealthy"],
            s["unknown"],
            s["hosts"],
            s["healthy_sources"],
            s["nts_sources"],
            s["naks"],
            e(format_offset(s["max_abs_offset"])),
            e(readings_text(s)),
        ),
        render_svg(report),
        "<h2>Hosts</h2>",
        "<table><tr><th>Host</th><th>Status</th><th>Reading</th><th>Offset</th><th>Stratum</th><th>Reference</th>"
        "<th>Healthy NTS sources</th><th>NTS-KE served</th><th>chrony</th></tr>",
    ]
    for h in report["hosts"]:
        healthy = sum(1 for x in h["sources"] if x["healthy"])
        parts.append(
            "<tr><td><a href='#host-%s'>%s</a></td><td class='badge %s'>%s</td><td class='reading'>%s</td>"
            "<td>%s</td><td>%s</td><td>%s</td><td>%d/%d</td><td>%s</td><td>%s</td></tr>"
            % (
                e(h["name"], quote=True),
                e(h["name"]),
                h["status"],
                h["status"],
                e(format_reading(h["reading"])),
                e(format_offset(h["offset"])),
                _cell(h["stratum"]),
                _cell(h["reference"]),
                healthy,
                len(h["sources"]),
                _cell((h["server"] or {}).get("nts_ke_accepted")),
                _cell(h["chrony_version"]),
            )
        )
    parts.append("</table>")
    for h in report["hosts"]:
        parts.append(
            "<h2 id='host-%s'>%s <span class='badge %s'>%s</span></h2>"
            % (e(h["name"], quote=True), e(h["name"]), h["status"], h["status"])
        )
        reading = format_reading(h["reading"], long=True)
        parts.append("<p class='reading'>Reading: %s.%s</p>" % (e(reading), e(_offset_note(h))))
        if h["failures"]:
            parts.append("<ul class='failures'>%s</ul>" % "".join("<li>%s</li>" % e(f) for f in h["failures"]))
        if h["server"]:
            parts.append(
                "<p>NTS server: %s NTS-KE connections accepted, %s dropped, %s authenticated NTP requests served "
                "(since chronyd started).</p>"
                % tuple(_cell(h["server"][k]) for k in ("nts_ke_accepted", "nts_ke_dropped", "authenticated_ntp"))
            )
        if not h["sources"]:
            continue
        parts.append(
            "<table><tr><th>Source</th><th>Address</th><th>State</th><th>Mode</th><th>Cookies</th><th>NAKs</th>"
            "<th>Reach</th><th>Offset</th><th>Last key exchange</th><th>KE attempts</th><th>Authenticated</th>"
            "<th>Problem</th></tr>"
        )
        for src in h["sources"]:
            parts.append(
                "<tr class='%s'><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>"
                "<td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>"
                % (
                    "healthy" if src["healthy"] else "unhealthy",
                    e(src["name"]),
                    _cell(src["address"]),
                    _cell(src["state"]),
                    _cell(src["mode"]),
                    _cell(src["cookies"]),
                    _cell(src["naks"]),
                    _cell(src["reach_octal"]),
                    e(format_offset(src["offset"])),
                    e(format_age(src["last_key_exchange"])),
                    _cell(src["attempts"]),
                    _cell(src["authenticated"]),
                    _cell(src["cause"]),
                )
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------------------- Markdown
def _md(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Dict[str, Any], svg_file: Optional[str] = "offsets.svg") -> str:
    """The same content as the HTML page in Markdown; the picture is referenced as ``svg_file`` (None: omitted)."""
    s = report["summary"]
    lines = [
        "# %s" % report["title"],
        "",
        "Generated %s: **%d healthy**, **%d unhealthy**, %d unknown of %d hosts; %d of %d NTS sources healthy; "
        "%d NAKs; largest offset %s. Readings: %s."
        % (
            report["generated_at"],
            s["healthy"],
            s["unhealthy"],
            s["unknown"],
            s["hosts"],
            s["healthy_sources"],
            s["nts_sources"],
            s["naks"],
            format_offset(s["max_abs_offset"]),
            readings_text(s),
        ),
        "",
    ]
    if svg_file:
        lines += ["![Clock offset per host](%s)" % svg_file, ""]
    lines += [
        "| Host | Status | Reading | Offset | Stratum | Healthy NTS sources | NTS-KE served |",
        "|---|---|---|---|---|---|---|",
    ]
    for h in report["hosts"]:
        lines.append(
            "| %s | %s | %s | %s | %s | %d/%d | %s |"
            % (
                _md(h["name"]),
                h["status"].upper(),
                _md(format_reading(h["reading"])),
                format_offset(h["offset"]),
                _md(h["stratum"]),
                sum(1 for x in h["sources"] if x["healthy"]),
                len(h["sources"]),
                _md((h["server"] or {}).get("nts_ke_accepted")),
            )
        )
    for h in report["hosts"]:
        lines += ["", "## %s (%s)" % (h["name"], h["status"])]
        lines += ["", "Reading: %s.%s" % (_md(format_reading(h["reading"], long=True)), _md(_offset_note(h)))]
        if h["failures"]:
            lines += [""] + ["- %s" % _md(f) for f in h["failures"]]
        if h["sources"]:
            lines += [
                "",
                "| Source | State | Cookies | NAKs | Reach | Offset | Last key exchange | Problem |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for src in h["sources"]:
                lines.append(
                    "| %s | %s | %s | %s | %s | %s | %s | %s |"
                    % (
                        _md(src["name"]),
                        _md(src["state"]),
                        _md(src["cookies"]),
                        _md(src["naks"]),
                        _md(src["reach_octal"]),
                        format_offset(src["offset"]),
                        format_age(src["last_key_exchange"]),
                        _md(src["cause"]),
                    )
                )
    return "\n".join(lines) + "\n"
