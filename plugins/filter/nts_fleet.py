# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters behind the playbooks (site, rollout, health, report): the logic that used to be Jinja programs in YAML.

``nts_target_errors``    groups, play hosts, wanted groups, limit, inventory sources -> why the run has no target
``nts_metrics_reading``  slurp result of the host check's metrics file, max age -> the reading: used or why not
``nts_health_lines``     {host: chrony_authdata result}, {host: reading} -> one summary line per host (health.yml)
``nts_report_records``   hosts, {host: authdata}, {host: serverstats}, {host: group_names}, {host: reading}
                         -> report records

One predicate, one meaning: every managed host runs the deploy proof's fresh check from a systemd timer and writes
its verdict as node_exporter textfile metrics (``nts_check``, ``nts_metrics.render``). health.yml and report.yml read
that file and convert it here into the record a live ``chrony_authdata`` call gives; only a host whose file is absent,
older than the bound, or unreadable gets the live check. Each line and report entry says which it was and how old.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import importlib
import math
import os
import time

from ansible.errors import AnsibleFilterError


def _health():
    # Imported on first use: Ansible loads every filter file of the collection in each worker process, from source,
    # and most plays never call the filters below that need the predicate and the metrics code.
    return importlib.import_module("ansible_collections.nts.chrony.plugins.module_utils.nts_health")


def _metrics():
    return importlib.import_module("ansible_collections.nts.chrony.plugins.module_utils.nts_metrics")


FUTURE_SLACK = 10.0
"""Seconds a reading may be dated after the controller's clock (the host's clock writes the check's time) before it
is refused: further ahead, host and controller clocks disagree and its age means nothing, so the live check runs."""

CAUSE_NOT_FRESH = (
    "no valid authenticated reply during the host check (last authenticated sample {age}; the check's journal "
    "line, chrony-nts-check.service, names the cause)"
)
CHRONYD_DOWN = (
    "chronyd did not answer the host check (not running, or its command socket is not accessible): see "
    "chrony-nts-check.service's journal"
)


def _inventory_text(sources):
    out = []
    for source in sources or []:
        source = str(source)
        missing = "," not in source and not os.path.exists(source)
        out.append(source + (" (no such file)" if missing else ""))
    return ", ".join(out) or "(none)"


def nts_target_errors(groups, play_hosts, wanted, limit="", inventory_sources=(), required="", need_localhost=False):
    """Sentences saying why a run has nothing to act on (an empty list when it has).

    ``groups`` is Ansible's ``groups``; ``wanted`` the groups the playbook acts on; ``required`` one of them that must
    not be empty in the inventory (``chrony_nts_clients`` for site.yml); ``play_hosts`` what --limit left
    (``ansible_play_hosts_all`` of a play on ``all:localhost``); ``need_localhost`` for playbooks that write their
    record or report on the controller.
    """
    if not isinstance(groups, dict):
        raise AnsibleFilterError("nts_target_errors: groups must be Ansible's groups mapping")
    inventory = _inventory_text(inventory_sources)
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    members = [h for g in wanted for h in groups.get(g, [])]
    errors = []
    hint = (
        ". Name the inventory with -i (the lab NAME's is .lab/NAME/inventory/hosts.yml, the default lab's "
        "inventories/lab/hosts.yml)"
    )
    if required and not groups.get(required):
        errors.append("group %s is empty in the inventory %s%s" % (required, inventory, hint))
    elif not members:
        errors.append("groups %s are empty in the inventory %s%s" % (" and ".join(wanted), inventory, hint))
    elif not [h for h in play_hosts if h in members]:
        errors.append(
            "--limit '%s' leaves no host of %s in the inventory %s" % (limit or "", " or ".join(wanted), inventory)
        )
    if need_localhost and "localhost" not in play_hosts:
        errors.append("--limit left out localhost, where the record is written: add it, e.g. --limit '%s:localhost'"
                      % (limit or "HOSTS"))  # fmt: skip
    return errors


# ---------------------------------------------------------------------------------------------------------------
# the host check's metrics -> the record of a live chrony_authdata call


class MetricsError(ValueError):
    """The metrics file is not what the host check writes (truncated, foreign, an incompatible version)."""


def _count(name, value):
    if value is None:
        return None
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise MetricsError("%s must be a non-negative integer, got %r" % (name, value))
    return int(value)


def _age(name, value):
    """Whole seconds; ``+Inf`` (never) is None."""
    if value is None or value == math.inf:
        return None
    if math.isnan(value) or value < 0:
        raise MetricsError("%s must be a non-negative number of seconds or +Inf, got %r" % (name, value))
    return int(value)


def _flag(name, value):
    if value not in (0.0, 1.0):
        raise MetricsError("%s must be 0 or 1, got %r" % (name, value))
    return value == 1.0


def _finite(name, value):
    if value is None:
        return None
    if not math.isfinite(value):
        raise MetricsError("%s must be a finite number, got %r" % (name, value))
    return value


def _when(seconds):
    return "never" if seconds is None else "%d s before the check" % seconds


def _metric_source(name, m, aead):
    """One source entry in the shape of ``SourceHealth.to_dict()`` from its series (``m``: metric suffix -> value).

    The metrics carry the verdict (authenticated now) and chronyd's counters, not the cause: the cause is derived
    from the counters with the predicate's own words (nts_health) where they tell it, else it says the check got no
    valid authenticated reply. The check exports NTS sources and the names it requires (which the role configures as
    NTS), so a source with authdata series is mode NTS. chronyd's exact state is not in the metrics: ``*`` selected,
    ``+`` combined, ``-`` neither (not combined, falseticker, too variable or unusable).
    """
    here = "source %r: " % name
    healthy = _flag(here + "chrony_nts_source_authenticated_now", m["authenticated_now"])
    has_auth = "key_exchanges_total" in m
    has_source = "selected" in m
    key_id = _count(here + "key_exchanges_total", m.get("key_exchanges_total"))
    attempts = _count(here + "key_exchange_attempts", m.get("key_exchange_attempts"))
    cookies = _count(here + "cookies", m.get("cookies"))
    nak = m.get("nak")
    naks = None if nak is None else int(_flag(here + "nak", nak))
    reach = _count(here + "reach", m.get("reach"))
    if reach is not None and reach > 255:
        raise MetricsError("%sreach must be 0-255, got %r" % (here, reach))
    selected = _flag(here + "selected", m["selected"]) if has_source else None
    combined = _flag(here + "combined", m["combined"]) if "combined" in m else selected
    state = None if selected is None else ("*" if selected else "+" if combined else "-")
    last_rx = _age(here + "authenticated_sample_age_seconds", m.get("authenticated_sample_age_seconds"))
    problems = []
    if not healthy and not (has_auth and has_source):
        problems.append(_health().CAUSE_MISSING)
    elif not healthy:
        if key_id == 0 and cookies == 0:
            problems.append(_health().CAUSE_KE_NEVER if attempts else _health().CAUSE_KE_NOT_TRIED)
        elif cookies == 0 and attempts:
            problems.append(_health().CAUSE_KE_FAILING.format(attempts=attempts))
        if naks:
            problems.append(_health().CAUSE_NAK)
        if cookies == 0 and key_id and not attempts:
            problems.append(_health().CAUSE_NO_COOKIES)
        if reach == 0:
            problems.append(_health().CAUSE_UNREACHABLE)
        if not problems:
            problems.append(CAUSE_NOT_FRESH.format(age=_when(last_rx)))
    return {
        "name": name,
        "address": None,
        "mode": "NTS" if has_auth else None,
        "key_id": key_id,
        "aead": aead,
        "last_key_exchange": _age(here + "key_exchange_age_seconds", m.get("key_exchange_age_seconds")),
        "attempts": attempts,
        "naks": naks,
        "cookies": cookies,
        "reach": reach,
        "reach_octal": None if reach is None else format(reach, "o"),
        "state": state,
        "selected": selected,
        "combined": combined,
        "stratum": None,
        "offset": _finite(here + "offset_seconds", m.get("offset_seconds")),
        "last_rx": last_rx,
        "authenticated": True if healthy else None,  # the metrics say authenticated now, not the last reply's flag
        "healthy": healthy,
        "cause": problems[0] if problems else None,
        "problems": problems,
    }


def metrics_result(text, require_synchronised=True):
    """The host check's exposition text (``nts_metrics.render``) as ``(result, serverstats, checked_at)``.

    ``result`` has the shape of a ``chrony_authdata`` result (``verified``, ``sources``, ``healthy_sources``,
    ``unhealthy_sources``, ``reasons``, ``tracking``, ``msg`` when not verified). The metrics carry no tracking:
    ``tracking`` is empty but for ``synchronised`` true when the check ``require_synchronised`` (the role's
    ``chrony_nts_verify_require_synchronised``, default true) and its verdict passed, which it cannot otherwise;
    when chronyd did not answer the check it is a failed result (``failed``, ``msg``), as a live call is.
    ``serverstats``: the NTS server counters (``nts_ke_accepted``, ``nts_ke_dropped``, ``authenticated_ntp``) when
    the check exported them, else None. ``checked_at``: Unix time of the check's readings (the host's clock).
    Raises :class:`MetricsError` when the text is not a complete reading of the check.
    """
    if not isinstance(text, str):
        raise MetricsError("not text")
    try:
        values = _metrics().parse(text)
    except (ValueError, IndexError) as exc:
        raise MetricsError("not Prometheus exposition text (%s)" % exc) from None
    host, per_source, aeads = {}, {}, {}
    for (name, labels), value in values.items():
        metric = _metrics().BY_NAME.get(name)
        if metric is None:
            continue  # a newer check's series: not needed for the record
        if tuple(k for k, _v in labels) != metric.labels:
            raise MetricsError("%s has labels %r, the check writes %r" % (name, labels, metric.labels))
        if not labels:
            host[name] = value
            continue
        source = labels[0][1]
        if not source:
            raise MetricsError("%s has an empty source label" % name)
        if name == "chrony_nts_source_aead_info":
            aeads[source] = _count("source %r: aead label" % source, _number_label(labels[1][1]))
            continue
        per_source.setdefault(source, {})[name[len("chrony_nts_source_") :]] = value
    for required in ("chrony_nts_verified", "chrony_nts_chronyd_running", "chrony_nts_last_check_timestamp_seconds"):
        if required not in host:
            raise MetricsError("no %s: not a complete reading of the host check" % required)
    checked_at = _finite("chrony_nts_last_check_timestamp_seconds", host["chrony_nts_last_check_timestamp_seconds"])
    verified = _flag("chrony_nts_verified", host["chrony_nts_verified"])
    running = _flag("chrony_nts_chronyd_running", host["chrony_nts_chronyd_running"])
    sources = []
    for name, m in per_source.items():
        if "authenticated_now" not in m:
            raise MetricsError("source %r has series but no chrony_nts_source_authenticated_now" % name)
        sources.append(_metric_source(name, m, aeads.get(name)))
    stats = {key: _count(metric, host[metric]) for metric, key in _metrics().SERVERSTATS_METRICS if metric in host}
    healthy = [s["name"] for s in sources if s["healthy"]]
    result = {
        "changed": False,
        "verified": verified,
        "sources": sources,
        "healthy_sources": healthy,
        "unhealthy_sources": [{"name": s["name"], "cause": s["cause"]} for s in sources if not s["healthy"]],
        "reasons": [],
        "tracking": {"synchronised": True} if verified and running and require_synchronised else {},
        "check_duration": _finite("chrony_nts_check_duration_seconds", host.get("chrony_nts_check_duration_seconds")),
    }
    if not running:
        result.update(verified=False, failed=True, reasons=[CHRONYD_DOWN], msg=CHRONYD_DOWN)
    elif not verified:
        if not sources:
            why = "no NTS source"
        elif len(healthy) == len(sources):
            why = "every source authenticated now, but the clock is not synchronised or there are fewer sources " \
                  "than the check requires"  # fmt: skip
        else:
            why = "%d of %d source(s) authenticated now" % (len(healthy), len(sources))
        result["reasons"] = ["not verified by the host check: %s" % why]
        details = "; ".join("%s: %s" % (s["name"], s["cause"]) for s in sources if not s["healthy"])
        result["msg"] = "NTS not verified by the host check: %s%s" % (
            why,
            (". Unhealthy sources: " + details) if details else "",
        )
    return result, (stats or None), checked_at


def _number_label(text):
    try:
        return float(text)
    except ValueError:
        raise MetricsError("aead label %r is not a number" % text) from None


def nts_metrics_reading(slurped, max_age=180, now=None, require_synchronised=True):
    """Judge the host check's metrics file as read by ``ansible.builtin.slurp`` (registered, ``failed_when: false``).

    Returns ``use`` (true: the file is present, complete and at most ``max_age`` seconds old by the controller's
    clock ``now``, default the current time), ``why`` (when not used: absent, stale, unparsable, not read),
    ``unreachable`` and ``msg`` (the host did not answer the slurp), ``path``, ``age`` and ``checked_at`` (when the
    file was readable), ``result`` (the ``chrony_authdata``-shaped record of :func:`metrics_result`; with
    ``require_synchronised``, whether the host's check requires a synchronised clock) and ``serverstats``.
    """
    bad = AnsibleFilterError("nts_metrics_reading: max_age must be a number of seconds >= 0, got %r" % (max_age,))
    if isinstance(max_age, bool):
        raise bad
    try:
        max_age = float(max_age)
    except (TypeError, ValueError):
        raise bad from None
    if not max_age >= 0 or math.isinf(max_age):
        raise bad
    now = time.time() if now is None else float(now)
    slurped = slurped if isinstance(slurped, dict) else {}
    reading = {
        "use": False,
        "why": None,
        "unreachable": False,
        "msg": None,
        "path": slurped.get("source"),
        "age": None,
        "checked_at": None,
        "result": None,
        "serverstats": None,
    }
    if slurped.get("unreachable"):
        reading.update(unreachable=True, msg=str(slurped.get("msg") or "unreachable"), why="host unreachable")
        return reading
    if not slurped or slurped.get("skipped"):
        reading["why"] = "metrics not read"
        return reading
    if "content" not in slurped:
        reading["why"] = "metrics not readable: %s" % (slurped.get("msg") or "no content")
        return reading
    try:
        text = base64.b64decode(str(slurped["content"]), validate=True).decode("utf-8")
        result, stats, checked_at = metrics_result(text, bool(require_synchronised))
    except (binascii.Error, UnicodeDecodeError, MetricsError) as exc:
        reading["why"] = "metrics unparsable: %s" % exc
        return reading
    age = now - checked_at
    reading.update(checked_at=checked_at, age=max(0.0, age))
    if age < -FUTURE_SLACK:
        reading["why"] = "metrics dated %d s after the controller's clock (host and controller clocks disagree)" % (
            -age
        )
    elif max_age == 0:
        reading["why"] = "metrics not used (max reading age 0)"
    elif age > max_age:
        reading["why"] = "metrics %d s old, more than %s s" % (age, _seconds(max_age))
    else:
        reading.update(use=True, result=result, serverstats=stats)
    return reading


def _seconds(value):
    return "%d" % value if float(value).is_integer() else "%g" % value


def _live_has_data(live):
    return bool(live) and not live.get("skipped") and not live.get("unreachable")


def _pick(reading, live):
    """(the chrony_authdata-shaped result, the reading's description or None, unreachable message or None)."""
    reading = reading if isinstance(reading, dict) else {}
    live = live if isinstance(live, dict) else {}
    if reading.get("use"):
        info = {
            "source": "metrics",
            "age": round(float(reading.get("age") or 0)),
            "checked_at": reading.get("checked_at"),
            "why_live": None,
        }
        return reading.get("result") or {}, info, None
    if reading.get("unreachable") and not _live_has_data(live):
        return {}, None, reading.get("msg") or "unreachable"
    if not _live_has_data(live):
        return live, None, None
    return live, {"source": "live", "age": 0, "checked_at": None, "why_live": reading.get("why")}, None


def reading_text(info):
    """``reading 23 s old (metrics)``, ``live`` or ``live (WHY THE METRICS WERE NOT USED)``; '' without a reading."""
    if not info:
        return ""
    if info["source"] == "metrics":
        return "reading %d s old (metrics)" % info["age"]
    return "live (%s)" % info["why_live"] if info.get("why_live") else "live"


def nts_health_lines(results, readings=None):
    """``HOST  OK|FAILING  n/m NTS sources healthy  READING  name[* mode=NTS nak=0 cook=8 reach=377 auth=yes] ...``
    per host; ``UNKNOWN`` with the reason when chronyd gave no report.

    ``results``: {host: chrony_authdata result (or what stood in for it: skipped, unreachable, {})}; ``readings``:
    {host: :func:`nts_metrics_reading`}. A host whose reading is used shows the metrics (READING ``reading 23 s old
    (metrics)``), else its live result (``live``, with why the metrics were not used when they were read). Without
    ``readings`` every result is a live one.
    """
    lines = []
    hosts = list(results or {})
    hosts += [h for h in (readings or {}) if h not in hosts]
    for host in hosts:
        result, info, unreachable = _pick((readings or {}).get(host), (results or {}).get(host))
        result = result or {}
        reading = reading_text(info)
        if unreachable:
            result = {"msg": "unreachable: " + unreachable}
        if "sources" not in result or (result.get("failed") and not result["sources"]):
            why = "  ".join(p for p in (reading, result.get("msg") or "no answer") if p)
            lines.append("%-12s UNKNOWN  %s" % (host, why))
            continue
        parts = [
            "%s[%s mode=%s nak=%s cook=%s reach=%s auth=%s]"
            % (
                s["name"],
                s["state"],
                s["mode"],
                s["naks"],
                s["cookies"],
                s["reach_octal"],
                # live: the last reply was authenticated; metrics: only known when authenticated now
                "yes" if s["authenticated"] else "no",
            )
            for s in result["sources"]
        ]
        lines.append(
            "%-12s %-8s %d/%d NTS sources healthy  %s"
            % (
                host,
                "OK" if result.get("verified") else "FAILING",
                len(result.get("healthy_sources", [])),
                len(result["sources"]),
                "  ".join(p for p in (reading, " ".join(parts)) if p),
            )
        )
    return lines


def nts_report_records(
    hosts,
    authdata,
    serverstats,
    group_names,
    report_groups=("chrony_nts_servers", "chrony_nts_clients"),
    readings=None,
):
    """One record per host for nts_report_build: its groups, the chrony_authdata result (or the error that stood in
    for it: unreachable, no chronyd) and, for NTS servers, the serverstats counters, and the ``reading`` (``source``
    metrics or live, ``age`` in seconds, 0 live, ``checked_at``, ``why_live``; null when nothing was read).

    ``readings``: {host: :func:`nts_metrics_reading`}. A host whose reading is used gets the result and the server
    counters converted from its metrics (the live chrony_serverstats counters when the metrics have none); the others
    get their live results. Without ``readings`` every result is a live one."""
    records = []
    for host in hosts:
        live = (authdata or {}).get(host) or {}
        s = (serverstats or {}).get(host) or {}
        reading = (readings or {}).get(host)
        a, info, unreachable = _pick(reading, live)
        a = a or {}
        stats = s.get("stats") if ("stats" in s and not s.get("failed")) else None
        if info and info["source"] == "metrics" and (reading or {}).get("serverstats"):
            stats = reading["serverstats"]
        if unreachable:
            error = "unreachable: " + str(unreachable)
        elif a.get("unreachable"):
            error = "unreachable: " + str(a.get("msg", ""))
        elif a.get("failed"):
            error = a.get("msg", "chrony_authdata failed")
        else:
            error = None
        records.append(
            {
                "host": host,
                "groups": [g for g in report_groups if g in ((group_names or {}).get(host) or [])],
                "error": error,
                "authdata": a if ("sources" in a and not a.get("failed")) else None,
                "serverstats": stats,
                "reading": info,
            }
        )
    return records


class FilterModule:
    """Playbook filters: targets, metrics readings, health lines, report records."""

    def filters(self):
        return {
            "nts_target_errors": nts_target_errors,
            "nts_metrics_reading": nts_metrics_reading,
            "nts_health_lines": nts_health_lines,
            "nts_report_records": nts_report_records,
        }
