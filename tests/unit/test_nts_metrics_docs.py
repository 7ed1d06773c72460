"""monitoring/METRICS.md is the one reference of the check's metrics: it must list exactly the metrics the renderer
(plugins/module_utils/nts_metrics.py) declares and writes, with the same types, labels and help texts; the alert rules
and the Grafana dashboard may only query metrics listed there."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from ansible_collections.nts.chrony.plugins.module_utils import nts_metrics as nm

from tests.lib.collection import cs as cs

REPO = Path(__file__).resolve().parents[2]

MONITORING = REPO / "monitoring"
DOC = MONITORING / "METRICS.md"
RULES = MONITORING / "prometheus" / "chrony-nts-alerts.yml"
DASHBOARD = MONITORING / "grafana" / "chrony-nts.json"
FIX = REPO / "tests" / "fixtures" / "chronyc"

ROW = re.compile(r"^\| `(chrony_nts_[a-z0-9_]+)` \| (\w+) \| (.+?) \| (.+) \|$")


def documented() -> dict[str, nm.Metric]:
    rows: dict[str, nm.Metric] = {}
    for line in DOC.read_text().splitlines():
        m = ROW.match(line)
        if not m:
            assert not line.startswith("| `chrony_nts_"), "malformed METRICS.md row: %r" % line
            continue
        name, kind, labels, text = m.groups()
        assert name not in rows, "%s documented twice" % name
        label_names = () if labels == "-" else tuple(part.strip().strip("`") for part in labels.split(","))
        rows[name] = nm.Metric(name, kind, label_names, text)
    return rows


def test_doc_lists_the_renderer_metrics_with_the_same_type_labels_and_help():
    doc = documented()
    code = {m.name: m for m in nm.METRICS}
    assert sorted(doc) == sorted(code), "only in METRICS.md: %s; only in nts_metrics.METRICS: %s" % (
        sorted(set(doc) - set(code)),
        sorted(set(code) - set(doc)),
    )
    for name, metric in code.items():
        assert doc[name] == metric, name


def test_rendered_output_has_exactly_the_documented_metrics_and_types():
    """A check with every kind of value (a healthy source, a missing required name, tier values): its TYPE lines are
    the documented names and types, and its samples carry the documented labels only."""
    status = (FIX / "healthy" / "status.csv").read_text()
    result = cs.wait_for_nts(
        lambda argv: (0, "200 OK\n" if "burst" in argv else status, ""),
        cs.status_command("chronyc"),
        required=["absent.example"],
        timeout=0.1,
        started=0.0,
        sleep=lambda s: None,
    )
    text = nm.render(
        result,
        1_800_000_000.0,
        0.3,
        True,
        serverstats=cs.parse_serverstats((FIX / "server" / "serverstats.csv").read_text()),
        cert_not_after=1_900_000_000.0,
        ntskeys_mtime=1_799_000_000.0,
        required=["absent.example"],
    )
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    doc = documented()
    assert types == {name: m.type for name, m in doc.items()}
    for name, labels in re.findall(r"^(chrony_nts_\w+)(?:\{(.*)\})? ", text, re.M):
        assert tuple(re.findall(r'(\w+)="', labels)) == doc[name].labels, name


# --- queries ----------------------------------------------------------------------------------------------------------

PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (function names, keywords, label names and values excluded)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\$\{?\w+\}?", "x", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        word, call = m.group(1), m.group(2)
        if call or word in PROMQL_WORDS or word.lower() in ("inf", "nan"):
            continue
        names.add(word)
    return names


@pytest.mark.parametrize(
    "expr, names",
    [
        ("chrony_nts_verified == 0", {"chrony_nts_verified"}),
        (
            'rate(chrony_nts_server_ke_accepted_total{instance=~"$instance"}[$__rate_interval])',
            {"chrony_nts_server_ke_accepted_total"},
        ),
        ("a == 0 unless ignoring(source) (b == 1)", {"a", "b"}),
        ("sum by (instance) (x) / 86400 + 1e3", {"x"}),
        ('absent(up{job="node"})', {"up"}),
    ],
)
def test_metric_names_extractor(expr, names):
    assert metric_names(expr) == names


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [(rule.get("alert") or rule.get("record"), rule["expr"]) for g in doc["groups"] for rule in g["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    found.append((where, value))
                else:
                    walk(value, node.get("title") or where)
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(dash.get("panels", []), "panels")
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":  # a PromQL variable (a datasource variable's query is a plugin type)
            query = var.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            found += [("variable " + var["name"], q) for q in (query, var.get("definition")) if q]
    return found


def query_names(expr: str) -> set[str]:
    m = re.match(r"^label_values\((\w+)\s*,\s*\w+\)$", expr.strip())
    return {m.group(1)} if m else metric_names(expr)


def test_alert_rules_query_only_documented_metrics():
    doc = documented()
    exprs = rule_exprs()
    assert exprs
    for alert, expr in exprs:
        names = metric_names(expr)
        assert names and names <= set(doc), "%s queries undocumented metrics %s" % (alert, names - set(doc))


def test_dashboard_is_valid_and_queries_only_documented_metrics():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and isinstance(dash["panels"], list)
    doc = documented()
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    used: set[str] = set()
    for where, expr in exprs:
        names = query_names(expr)
        assert names and names <= set(doc), "%s: %r queries undocumented metrics %s" % (where, expr, names - set(doc))
        used |= names
    # every metric is on the dashboard
    assert used == set(doc), "not on the dashboard: %s" % sorted(set(doc) - used)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert [t["refId"] for t in panel["targets"]] == [chr(65 + i) for i in range(len(panel["targets"]))]
