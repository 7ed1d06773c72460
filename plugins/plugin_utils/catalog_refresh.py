# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Re-probe every server of the catalog within a bounded time and write a dated health report.

Each server gets the native probe of :mod:`nts_prober` (NTS-KE over TLS 1.3, certificate chain and name checked,
one authenticated NTP exchange). ``timeout`` is one deadline for the whole probe of one server and ``concurrency``
probes run at once, so the run takes at most ``ceil(servers / concurrency)`` waves of one timeout each: that bound
is computed before the first packet (:func:`time_bound`), printed, and recorded in the report beside the measured
time. A server whose certificate fails on its dates (expired, not yet valid) is probed once more with the date
check off, only to read its notAfter: that second pass is bounded the same way and added to the bound when it runs.

The report (:func:`build_report`) has, per server: status (OK / WARNING / CRITICAL, as ``nts-probe`` judges it),
the certificate's notAfter and days left, the negotiated AEAD, the cookies, the stratum (and the catalog's, when
they differ), and for a failure its stage and reason; and a summary: counts, failures by stage, certificates
expiring within ``warn_days``, servers whose stratum differs from the catalog, providers left with no working
server. :func:`write_report` writes it as ``catalog-health-YYYYMMDDTHHMMSSZ.json`` and ``.md``.

No Ansible imports; the command line is ``bin/nts-catalog refresh`` (:mod:`catalog_cli`).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import math
import os
import time
from typing import Any

from ansible_collections.nts.chrony.plugins.module_utils import nts_prober
from ansible_collections.nts.chrony.plugins.plugin_utils.probe_cli import EXIT_CRITICAL, EXIT_OK, EXIT_WARNING, classify

REPORT_FORMAT = 1
STATUS_NAMES = {EXIT_OK: "OK", EXIT_WARNING: "WARNING", EXIT_CRITICAL: "CRITICAL"}
AEAD_NAMES = {
    15: "AEAD_AES_SIV_CMAC_256",
    16: "AEAD_AES_SIV_CMAC_384",
    17: "AEAD_AES_SIV_CMAC_512",
    30: "AEAD_AES_128_GCM_SIV",
    31: "AEAD_AES_256_GCM_SIV",
}
# Scheduling slack added to the bound: thread start-up, DNS threads abandoned at their deadline, report writing.
SLACK_SECONDS = 1.0
_DATE_FAILURES = ("expired", "not yet valid")


def time_bound(servers: int, concurrency: int, timeout: float) -> dict:
    """The promise made before probing: waves of ``concurrency`` probes, each at most ``timeout`` seconds."""
    workers = max(1, min(concurrency, servers))
    waves = math.ceil(servers / workers) if servers else 0
    return {
        "servers": servers,
        "concurrency": concurrency,
        "workers": workers,
        "timeout": timeout,
        "waves": waves,
        "bound_seconds": round(waves * timeout, 3),
        "slack_seconds": SLACK_SECONDS,
    }


def describe_bound(bound: dict) -> str:
    return "%d server(s), %d at a time, %g s per server: %d wave(s), at most %g s (+%g s slack)" % (
        bound["servers"],
        bound["workers"],
        bound["timeout"],
        bound["waves"],
        bound["bound_seconds"],
        bound["slack_seconds"],
    )


def probe_specs(catalog: dict, addresses: dict[str, str] | None = None) -> list[dict]:
    """probe_many specs for the catalog's servers; ``addresses`` maps a host to the IP to connect to."""
    addresses = {k.lower(): v for k, v in (addresses or {}).items()}
    specs = []
    for entry in catalog["servers"]:
        spec = {"host": entry["host"], "port": entry["ntsport"]}
        if entry["host"] in addresses:
            spec["address"] = addresses[entry["host"]]
        specs.append(spec)
    return specs


def _date_failure(result: dict) -> bool:
    return result["stage"] == "certificate" and any(word in (result["error"] or "") for word in _DATE_FAILURES)


def run_probes(
    catalog: dict,
    timeout: float,
    concurrency: int,
    ca_file: str | None = None,
    addresses: dict[str, str] | None = None,
    recheck_dates: bool = True,
    announce=None,
) -> tuple[list[dict], dict]:
    """Probe every catalog server; return (results in catalog order, timing record with bound and elapsed).

    ``announce(text)`` (e.g. print) is told the bound before the first probe and the extra bound of the date pass.
    """
    specs = probe_specs(catalog, addresses)
    bound = time_bound(len(specs), concurrency, timeout)
    if announce:
        announce("Probing %s" % describe_bound(bound))
    start = time.monotonic()
    results = nts_prober.probe_many(specs, concurrency=concurrency, timeout=timeout, ca_file=ca_file)
    timing: dict[str, Any] = dict(bound)
    timing["probe_seconds"] = round(time.monotonic() - start, 3)
    redo = [i for i, r in enumerate(results) if _date_failure(r)]
    timing["date_recheck"] = None
    timing["total_bound_seconds"] = bound["bound_seconds"]
    if recheck_dates and redo:
        extra = time_bound(len(redo), concurrency, timeout)
        if announce:
            announce(
                "Reading the dates of %d certificate(s) that failed on them (date check off): %s"
                % (len(redo), describe_bound(extra))
            )
        t0 = time.monotonic()
        again = nts_prober.probe_many(
            [specs[i] for i in redo], concurrency=concurrency, timeout=timeout, ca_file=ca_file, no_cert_time_check=True
        )
        for i, r in zip(redo, again):
            if r.get("cert_not_after"):
                for key in ("cert_subject", "cert_issuer", "cert_not_before", "cert_not_after", "cert_days_left"):
                    results[i][key] = r[key]
        timing["date_recheck"] = dict(extra, seconds=round(time.monotonic() - t0, 3))
        timing["total_bound_seconds"] = round(bound["bound_seconds"] + extra["bound_seconds"], 3)
    timing["elapsed_seconds"] = round(time.monotonic() - start, 3)
    timing["within_bound"] = timing["elapsed_seconds"] <= timing["total_bound_seconds"] + SLACK_SECONDS
    return results, timing


def _server_record(entry: dict, result: dict, status: int, reason: str) -> dict:
    return {
        "host": entry["host"],
        "ntsport": entry["ntsport"],
        "provider": entry["provider"],
        "operator": entry["operator"],
        "region": entry["region"],
        "usage": entry["usage"],
        "status": STATUS_NAMES[status],
        "reason": reason,
        "ok": result["ok"],
        "stage": result["stage"],
        "error": result["error"],
        "nak": result["nak"],
        "address": result["address"],
        "aead": result["aead"],
        "aead_name": AEAD_NAMES.get(result["aead"]) if result["aead"] is not None else None,
        "cookies": result["cookies"],
        "cookie_length": result["cookie_length"],
        "ntp_server": result["ntp_server"],
        "ntp_port": result["ntp_port"],
        "stratum": result["stratum"],
        "catalog_stratum": entry["stratum"],
        "stratum_differs": result["stratum"] is not None and result["stratum"] != entry["stratum"],
        "synchronised": result["synchronised"],
        "offset_seconds": result["offset"],
        "delay_seconds": result["delay"],
        "cert_subject": result["cert_subject"],
        "cert_issuer": result["cert_issuer"],
        "cert_not_before": result["cert_not_before"],
        "cert_not_after": result["cert_not_after"],
        "cert_days_left": result["cert_days_left"],
        "probe_seconds": result["timings"].get("total"),
    }


def build_report(
    catalog: dict,
    catalog_path: str,
    results: list[dict],
    timing: dict,
    warn_days: int,
    generated: datetime.datetime,
    settings: dict | None = None,
) -> dict:
    """The health report (a JSON-ready dict); ``exit_code`` is the worst server status (0, 1 or 2)."""
    servers = []
    worst = EXIT_OK
    for entry, result in zip(catalog["servers"], results):
        status, reason = classify(result, warn_days)
        worst = max(worst, status)
        servers.append(_server_record(entry, result, status, reason))
    by_stage: dict[str, int] = {}
    for s in servers:
        if not s["ok"]:
            by_stage[s["stage"] or "unknown"] = by_stage.get(s["stage"] or "unknown", 0) + 1
    providers: dict[str, bool] = {}
    for s in servers:
        providers[s["provider"]] = providers.get(s["provider"], False) or s["ok"]
    expiring = [s for s in servers if s["cert_days_left"] is not None and 0 <= s["cert_days_left"] < warn_days]
    expired = [s for s in servers if s["cert_days_left"] is not None and s["cert_days_left"] < 0]
    summary = {
        "servers": len(servers),
        "ok": sum(1 for s in servers if s["ok"]),
        "failed": sum(1 for s in servers if not s["ok"]),
        "status_ok": sum(1 for s in servers if s["status"] == "OK"),
        "status_warning": sum(1 for s in servers if s["status"] == "WARNING"),
        "status_critical": sum(1 for s in servers if s["status"] == "CRITICAL"),
        "failed_by_stage": dict(sorted(by_stage.items())),
        "warn_days": warn_days,
        "expiring_within_warn_days": [s["host"] for s in sorted(expiring, key=lambda s: s["cert_days_left"])],
        "expired": [s["host"] for s in expired],
        "stratum_differs": [s["host"] for s in servers if s["stratum_differs"]],
        "unsynchronised": [s["host"] for s in servers if s["ok"] and s["synchronised"] is False],
        "providers": len(providers),
        "providers_without_ok_server": sorted(p for p, ok in providers.items() if not ok),
    }
    return {
        "kind": "nts-catalog-health",
        "format": REPORT_FORMAT,
        "generated": generated.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "catalog": catalog_path,
        "catalog_updated": catalog["updated"],
        "settings": dict(settings or {}, warn_days=warn_days),
        "timing": timing,
        "status": STATUS_NAMES[worst],
        "exit_code": worst,
        "summary": summary,
        "servers": servers,
    }


# --------------------------------------------------------------------------------------------------------------
# output


def _md(text: Any) -> str:
    return "-" if text is None or text == "" else str(text).replace("|", "\\|").replace("\n", " ")


def _day(ts: str | None) -> str:
    return ts[:10] if ts else "-"


def report_markdown(report: dict) -> str:
    s, t = report["summary"], report["timing"]
    out: list[str] = []
    w = out.append
    w("# NTS catalog health, %s" % report["generated"])
    w("")
    w(
        "Catalog `%s` (updated %s): **%s** (exit %d)."
        % (report["catalog"], report["catalog_updated"], report["status"], report["exit_code"])
    )
    w("")
    w("| servers | OK | WARNING | CRITICAL | probe failed | providers | providers with no working server |")
    w("|---:|---:|---:|---:|---:|---:|---|")
    w(
        "| %d | %d | %d | %d | %d | %d | %s |"
        % (
            s["servers"],
            s["status_ok"],
            s["status_warning"],
            s["status_critical"],
            s["failed"],
            s["providers"],
            _md(", ".join(s["providers_without_ok_server"])),
        )
    )
    w("")
    bound = "Time bound: %s" % describe_bound(t)
    if t.get("date_recheck"):
        bound += "; then %d certificate(s) that failed on their dates probed again to read them: %d wave(s), %g s" % (
            t["date_recheck"]["servers"],
            t["date_recheck"]["waves"],
            t["date_recheck"]["bound_seconds"],
        )
    bound += ". Total bound %g s; took %.1f s%s." % (
        t["total_bound_seconds"],
        t["elapsed_seconds"],
        "" if t["within_bound"] else " (OVER the bound)",
    )
    w(bound)
    failures = [x for x in report["servers"] if not x["ok"]]
    w("")
    w("## Failures (%d)" % len(failures))
    if failures:
        stages = ", ".join("%s %d" % kv for kv in s["failed_by_stage"].items())
        w("")
        w("By stage: %s." % stages)
        w("")
        w("| server | provider | stage | reason | cert notAfter | days left |")
        w("|---|---|---|---|---|---:|")
        for x in failures:
            w(
                "| %s:%d | %s | %s | %s | %s | %s |"
                % (
                    x["host"],
                    x["ntsport"],
                    x["provider"],
                    _md(x["stage"]),
                    _md(x["error"]),
                    _day(x["cert_not_after"]),
                    _md(x["cert_days_left"]),
                )
            )
    soon = [x for x in report["servers"] if x["host"] in set(s["expiring_within_warn_days"]) | set(s["expired"])]
    w("")
    w("## Certificates expired or expiring within %d days (%d)" % (s["warn_days"], len(soon)))
    if soon:
        w("")
        w("| server | provider | notAfter | days left | issuer |")
        w("|---|---|---|---:|---|")
        for x in sorted(soon, key=lambda x: x["cert_days_left"]):
            w(
                "| %s | %s | %s | %d | %s |"
                % (x["host"], x["provider"], x["cert_not_after"], x["cert_days_left"], _md(x["cert_issuer"]))
            )
    differs = [x for x in report["servers"] if x["stratum_differs"]]
    if differs:
        w("")
        w("## Stratum differs from the catalog (%d)" % len(differs))
        w("")
        w("| server | catalog | measured |")
        w("|---|---:|---:|")
        for x in differs:
            w("| %s | %d | %d |" % (x["host"], x["catalog_stratum"], x["stratum"]))
    w("")
    w("## All servers")
    w("")
    w("| status | server | provider | AEAD | cookies | stratum | cert notAfter | days left | detail |")
    w("|---|---|---|---|---|---:|---|---:|---|")
    for x in report["servers"]:
        w(
            "| %s | %s:%d | %s | %s | %s | %s | %s | %s | %s |"
            % (
                x["status"],
                x["host"],
                x["ntsport"],
                x["provider"],
                _md(x["aead_name"] or x["aead"]),
                "-" if x["cookies"] is None else "%dx%d" % (x["cookies"], x["cookie_length"]),
                _md(x["stratum"]),
                _day(x["cert_not_after"]),
                _md(x["cert_days_left"]),
                _md(x["reason"]),
            )
        )
    return "\n".join(out) + "\n"


def report_table(report: dict) -> str:
    """The console table: one line per server, worst first."""
    order = {"CRITICAL": 0, "WARNING": 1, "OK": 2}
    rows = [("STATUS", "SERVER", "PROVIDER", "AEAD", "COOKIES", "STRAT", "CERT_NOT_AFTER", "DAYS", "DETAIL")]
    for x in sorted(report["servers"], key=lambda x: (order[x["status"]], x["host"])):
        rows.append(
            (
                x["status"],
                "%s:%d" % (x["host"], x["ntsport"]),
                x["provider"],
                "-" if x["aead"] is None else str(x["aead"]),
                "-" if x["cookies"] is None else "%dx%d" % (x["cookies"], x["cookie_length"]),
                "-" if x["stratum"] is None else str(x["stratum"]),
                _day(x["cert_not_after"]),
                "-" if x["cert_days_left"] is None else str(x["cert_days_left"]),
                x["reason"],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "".join("  ".join(c.ljust(wd) for c, wd in zip(r, widths)) + "  " + r[-1] + "\n" for r in rows)


def report_summary(report: dict) -> str:
    s, t = report["summary"], report["timing"]
    lines = [
        "%s: %d server(s): %d OK, %d WARNING, %d CRITICAL (%d probe(s) failed%s)"
        % (
            report["status"],
            s["servers"],
            s["status_ok"],
            s["status_warning"],
            s["status_critical"],
            s["failed"],
            (": " + ", ".join("%s %d" % kv for kv in s["failed_by_stage"].items())) if s["failed"] else "",
        ),
        "certificates expiring within %d days: %s; expired: %s"
        % (s["warn_days"], ", ".join(s["expiring_within_warn_days"]) or "none", ", ".join(s["expired"]) or "none"),
        "took %.1f s, bound %g s (+%g s slack)%s"
        % (t["elapsed_seconds"], t["total_bound_seconds"], t["slack_seconds"], "" if t["within_bound"] else ": OVER"),
    ]
    if s["providers_without_ok_server"]:
        lines.append("providers with no working server: %s" % ", ".join(s["providers_without_ok_server"]))
    if s["stratum_differs"]:
        lines.append("stratum differs from the catalog: %s" % ", ".join(s["stratum_differs"]))
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: str) -> tuple[str, str]:
    """Write DIR/catalog-health-<UTC stamp>.json and .md (never over an earlier report); return both paths."""
    os.makedirs(out_dir, exist_ok=True)
    stamp = report["generated"].replace("-", "").replace(":", "")
    base = os.path.join(out_dir, "catalog-health-%s" % stamp)
    n = 1
    while os.path.exists(base + ".json") or os.path.exists(base + ".md"):
        n += 1
        base = os.path.join(out_dir, "catalog-health-%s-%d" % (stamp, n))
    json_path, md_path = base + ".json", base + ".md"
    with open(json_path, "x", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    with open(md_path, "x", encoding="utf-8") as handle:
        handle.write(report_markdown(report))
    return json_path, md_path


def parse_address_map(items: list[str], catalog: dict) -> dict[str, str]:
    """``HOST=IP`` items -> {host: ip}; ValueError for a malformed item, a bad IP or a host not in the catalog."""
    hosts = {e["host"] for e in catalog["servers"]}
    out: dict[str, str] = {}
    for item in items:
        host, sep, ip = item.partition("=")
        host = host.strip().lower()
        if not sep or not host or not ip.strip():
            raise ValueError("--address %r: expected HOST=IP" % item)
        try:
            ip = str(ipaddress.ip_address(ip.strip()))
        except ValueError:
            raise ValueError("--address %r: %r is not an IP address" % (item, ip.strip())) from None
        if host not in hosts:
            raise ValueError("--address %r: the catalog has no server %r" % (item, host))
        out[host] = ip
    return out
