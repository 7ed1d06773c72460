# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout summary (canary and batches): model and Markdown. Controller-only, standard library only."""

from __future__ import annotations

from typing import Any, Dict, Sequence

from ansible_collections.nts.chrony.plugins.plugin_utils.fleet_report import ROLLOUT_SCHEMA, ReportError, _md, _number


# ---------------------------------------------------------------------------------------------------------- rollout
def build_rollout_summary(
    run_id: str, hosts: Sequence[str], batches: Sequence[Any], results: Sequence[Any]
) -> Dict[str, Any]:
    """Summarise a rollout from what it recorded on the controller.

    ``hosts``: every host the rollout targets, in order. ``batches``: ``{"play", "index", "hosts", "started",
    "ended", "failed", "stopped"}`` per batch (``ended`` is null when the batch never finished). ``results``:
    ``{"host", "play", "status" ("ok"|"failed"), "changed", "installed", "config_before", "config_after",
    "rolled_back", "reason"}`` per host that ran. Hosts with no result were never touched.
    """
    if not isinstance(run_id, str) or not run_id:
        raise ReportError("run_id must be a non-empty string, got %r" % (run_id,))
    by_host: Dict[str, Dict[str, Any]] = {}
    for i, res in enumerate(results):
        if not isinstance(res, dict) or not isinstance(res.get("host"), str):
            raise ReportError("results[%d] must be a mapping with a 'host' string, got %r" % (i, res))
        if res.get("status") not in ("ok", "failed"):
            raise ReportError(
                "results[%d] (host %r): field 'status' must be 'ok' or 'failed', got %r"
                % (i, res["host"], res.get("status"))
            )
        by_host[res["host"]] = res
    out_batches = []
    lost: Dict[str, Dict[str, Any]] = {}
    for i, b in enumerate(batches):
        if not isinstance(b, dict) or not isinstance(b.get("hosts"), list):
            raise ReportError("batches[%d] must be a mapping with a 'hosts' list, got %r" % (i, b))
        started = _number("batches[%d]" % i, "started", b.get("started"), allow_none=False)
        ended = _number("batches[%d]" % i, "ended", b.get("ended"))
        for h in b["hosts"]:
            # in a batch that ran, but no result: the host was lost (unreachable, or the run was interrupted)
            if h not in by_host and (ended is not None or h in (b.get("failed") or [])):
                lost[h] = {
                    "host": h,
                    "play": b.get("play"),
                    "status": "failed",
                    "reason": "no result recorded: the host became unreachable or the run was interrupted",
                }
        failed = [h for h in b["hosts"] if by_host.get(h, lost.get(h, {})).get("status") == "failed"]
        out_batches.append(
            {
                "play": b.get("play"),
                "index": b.get("index", i + 1),
                "hosts": list(b["hosts"]),
                "failed": failed,
                "wall_time": round(ended - started, 3) if ended is not None else None,
                "stopped_rollout": bool(b.get("stopped")),
            }
        )
    by_host.update(lost)
    changed = sorted(h for h, r in by_host.items() if r["status"] == "ok" and r.get("changed"))
    unchanged = sorted(h for h, r in by_host.items() if r["status"] == "ok" and not r.get("changed"))
    failed = sorted(h for h, r in by_host.items() if r["status"] == "failed")
    untouched = [h for h in hosts if h not in by_host]
    stopped = any(b["stopped_rollout"] for b in out_batches)
    return {
        "schema": ROLLOUT_SCHEMA,
        "run_id": run_id,
        "outcome": "stopped" if stopped else ("failed" if failed else "complete"),
        "changed": changed,
        "unchanged": unchanged,
        "failed": [
            {
                "host": h,
                "reason": by_host[h].get("reason"),
                "rolled_back": by_host[h].get("rolled_back"),
                "config_before": by_host[h].get("config_before"),
                "config_after": by_host[h].get("config_after"),
            }
            for h in failed
        ],
        "untouched": untouched,
        "batches": out_batches,
        "hosts": [by_host[h] for h in hosts if h in by_host],
    }


def render_rollout_markdown(summary: Dict[str, Any]) -> str:
    lines = [
        "# chrony NTS rollout %s: %s" % (summary["run_id"], summary["outcome"].upper()),
        "",
        "- changed: %s" % (", ".join(summary["changed"]) or "none"),
        "- unchanged (already compliant): %s" % (", ".join(summary["unchanged"]) or "none"),
        "- failed: %s" % (", ".join(f["host"] for f in summary["failed"]) or "none"),
        "- untouched (later batches, rollout stopped): %s" % (", ".join(summary["untouched"]) or "none"),
        "",
        "| Play | Batch | Hosts | Failed | Wall time |",
        "|---|---|---|---|---|",
    ]
    for b in summary["batches"]:
        lines.append(
            "| %s | %s | %s | %s | %s |"
            % (
                _md(b["play"]),
                b["index"],
                _md(", ".join(b["hosts"])),
                _md(", ".join(b["failed"]) or "none"),
                "%.1f s" % b["wall_time"] if b["wall_time"] is not None else "unfinished",
            )
        )
    for f in summary["failed"]:
        lines += ["", "## %s failed" % f["host"], "", _md(f["reason"] or "no reason recorded")]
        lines.append("")
        if (f["reason"] or "").startswith("unreachable"):
            lines.append("Nothing was done to this host: it did not answer.")
            continue
        lines.append(
            "Rolled back: %s; chrony.conf sha256 before %s, after %s."
            % ("yes" if f["rolled_back"] else "no", f["config_before"] or "absent", f["config_after"] or "absent")
        )
    return "\n".join(lines) + "\n"
