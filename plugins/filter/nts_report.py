# -*- coding: utf-8 -*-
"""Filters for the fleet report and the rollout summary; the work is done in plugin_utils/fleet_report.py and
rollout_summary.py.

``nts_report_build``        records, generated_at, title=... -> the report (plain data, what report.json holds)
``nts_report_json``         report -> JSON text
``nts_report_html``         report -> a self-contained HTML page (inline CSS and SVG)
``nts_report_markdown``     report, svg_file='offsets.svg' -> Markdown
``nts_report_svg``          report -> the SVG picture of offsets per host
``nts_rollout_summary``     run_id, hosts, batches, results -> the rollout summary (plain data)
``nts_rollout_markdown``    summary -> Markdown
"""

from __future__ import annotations

import importlib

from ansible.errors import AnsibleFilterError

_PLUGIN_UTILS = "ansible_collections.nts.chrony.plugins.plugin_utils."


def _report():
    # Imported on first use: Ansible loads every filter file of the collection in each worker process, from source.
    return importlib.import_module(_PLUGIN_UTILS + "fleet_report")


def _rollout():
    return importlib.import_module(_PLUGIN_UTILS + "rollout_summary")


def _plain(value):
    """Copy Ansible's (possibly lazy or tagged) containers and scalars into plain Python data."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


def _call(func, *args, **kwargs):
    try:
        return func(*[_plain(a) for a in args], **{k: _plain(v) for k, v in kwargs.items()})
    except _report().ReportError as exc:
        raise AnsibleFilterError(str(exc)) from None


def nts_report_build(records, generated_at, title="chrony NTS fleet health"):
    return _call(_report().build_report, records, generated_at, title)


def nts_report_json(report):
    return _call(_report().render_json, report)


def nts_report_html(report):
    return _call(_report().render_html, report)


def nts_report_markdown(report, svg_file="offsets.svg"):
    return _call(_report().render_markdown, report, svg_file)


def nts_report_svg(report):
    return _call(_report().render_svg, report)


def nts_rollout_summary(run_id, hosts, batches, results):
    return _call(_rollout().build_rollout_summary, run_id, hosts, batches, results)


def nts_rollout_markdown(summary):
    return _call(_rollout().render_rollout_markdown, summary)


class FilterModule:
    """Fleet report filters."""

    def filters(self):
        return {
            "nts_report_build": nts_report_build,
            "nts_report_json": nts_report_json,
            "nts_report_html": nts_report_html,
            "nts_report_markdown": nts_report_markdown,
            "nts_report_svg": nts_report_svg,
            "nts_rollout_summary": nts_rollout_summary,
            "nts_rollout_markdown": nts_rollout_markdown,
        }
