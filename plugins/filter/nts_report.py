# -*- coding: utf-8 -*-
"""Filters for the fleet report and the rollout summary; the work is done in plugins/module_utils/nts_report.py.

``nts_report_build``        records, generated_at, title=... -> the report (plain data, what report.json holds)
``nts_report_json``         report -> JSON text
``nts_report_html``         report -> a self-contained HTML page (inline CSS and SVG)
``nts_report_markdown``     report, svg_file='offsets.svg' -> Markdown
``nts_report_svg``          report -> the SVG picture of offsets per host
``nts_rollout_summary``     run_id, hosts, batches, results -> the rollout summary (plain data)
``nts_rollout_markdown``    summary -> Markdown
"""

from __future__ import annotations

import importlib.util
import os
import sys

from ansible.errors import AnsibleFilterError


def _load_module_utils():
    """Import nts_report as ``ansible.module_utils.nts_report`` if that resolves, else from ../module_utils by path
    (on the controller ``ansible.module_utils.<name>`` does not resolve from the configured module_utils path)."""
    try:
        from ansible.module_utils import nts_report as mod  # type: ignore[attr-defined]

        return mod
    except ImportError:
        pass
    path = os.path.normpath(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "module_utils", "nts_report.py")
    )
    name = "_chrony_nts_module_utils_nts_report"
    cached = sys.modules.get(name)
    if cached is not None and getattr(cached, "__file__", None) == path:
        return cached
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError("cannot load nts_report module_utils from %s" % path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


_nr = _load_module_utils()


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
    except _nr.ReportError as exc:
        raise AnsibleFilterError(str(exc)) from None


def nts_report_build(records, generated_at, title="chrony NTS fleet health"):
    return _call(_nr.build_report, records, generated_at, title)


def nts_report_json(report):
    return _call(_nr.render_json, report)


def nts_report_html(report):
    return _call(_nr.render_html, report)


def nts_report_markdown(report, svg_file="offsets.svg"):
    return _call(_nr.render_markdown, report, svg_file)


def nts_report_svg(report):
    return _call(_nr.render_svg, report)


def nts_rollout_summary(run_id, hosts, batches, results):
    return _call(_nr.build_rollout_summary, run_id, hosts, batches, results)


def nts_rollout_markdown(summary):
    return _call(_nr.render_rollout_markdown, summary)


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
