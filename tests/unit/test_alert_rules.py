"""The Prometheus alert rules of the NTS check (monitoring/prometheus/chrony-nts-alerts.yml): `promtool check rules`,
`promtool test rules` (firing, resolving, no alert on a healthy fleet: monitoring/prometheus/tests/*.yml), the shape
every rule must have, and `promtool check metrics` on what the renderer writes.

promtool comes from Debian's `prometheus` package, which `make setup` (lab/setup.sh) installs: a missing promtool
fails these tests, it does not skip them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_collections.nts.chrony.plugins.module_utils import nts_metrics as nm

from tests.lib.collection import cs as cs

REPO = Path(__file__).resolve().parents[2]


PROMETHEUS = REPO / "monitoring" / "prometheus"
RULES = PROMETHEUS / "chrony-nts-alerts.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
FIX = REPO / "tests" / "fixtures" / "chronyc"


def promtool() -> str:
    path = os.environ.get("PROMTOOL") or shutil.which("promtool") or "/usr/bin/promtool"
    if not os.access(path, os.X_OK):
        pytest.fail(
            "promtool not found (PATH, /usr/bin/promtool or $PROMTOOL): it comes with Debian's 'prometheus' package, "
            "which `make setup` (lab/setup.sh) installs; or `apt-get install --no-install-recommends prometheus`"
        )
    return path


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [promtool(), *args], input=stdin, capture_output=True, text=True, timeout=120, check=False, cwd=REPO
    )


def rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_check_rules():
    proc = run_promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: %d rules found" % len(rules()) in proc.stdout


def test_promtool_rule_unit_tests():
    assert RULE_TESTS, "no promtool rule tests in monitoring/prometheus/tests"
    proc = run_promtool("test", "rules", *map(str, RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout and "FAILED" not in proc.stdout


def test_every_alert_is_unit_tested_firing_and_quiet():
    """Each alert appears in the promtool tests at least once with an expected alert and once with none."""
    fired, quiet = set(), set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in rules()}
    assert names - fired == set(), "never tested firing"
    assert names - quiet == set(), "never tested quiet"


def test_every_rule_has_for_severity_and_annotations_naming_the_host():
    names = []
    for rule in rules():
        name = rule.get("alert")
        assert name and re.match(r"^ChronyNts[A-Z]\w+$", name), rule
        names.append(name)
        assert re.match(r"^\d+[smh]$", str(rule.get("for", ""))), "%s: no for: duration" % name
        assert rule.get("labels", {}).get("severity") in ("warning", "critical"), name
        notes = rule.get("annotations", {})
        assert notes.get("summary") and notes.get("description"), name
        expr = rule["expr"]
        if "absent(" not in expr:  # absent() has no instance: there is no host to name
            assert "{{ $labels.instance }}" in notes["summary"], name
        if "chrony_nts_source_" in expr and "unless" not in expr:
            assert "{{ $labels.source }}" in notes["summary"], name
    assert len(names) == len(set(names))


def test_documented_thresholds_are_the_ones_in_the_expressions():
    by_name = {r["alert"]: r for r in rules()}
    head = RULES.read_text().split("groups:")[0]
    assert "3 x 60 = 180 s" in head and "14 days" in head and "3 days" in head and "0.1 s" in head
    assert "> 3 * 60" in by_name["ChronyNtsCheckStale"]["expr"]
    assert "< 14 * 86400" in by_name["ChronyNtsServerCertificateExpiring"]["expr"]
    assert "< 3 * 86400" in by_name["ChronyNtsServerCertificateExpiringCritical"]["expr"]
    assert "> 0.1" in by_name["ChronyNtsOffsetTooLarge"]["expr"]
    assert "absent(chrony_nts_last_check_timestamp_seconds)" in by_name["ChronyNtsCheckAbsent"]["expr"]


def test_promtool_check_metrics_on_rendered_output():
    """The renderer's output from captured chronyc output passes promtool's metric lint (the loopback integration
    test does the same on a real chronyd's)."""
    status = (FIX / "healthy" / "status.csv").read_text()
    result = cs.wait_for_nts(
        lambda argv: (0, "200 OK\n" if "burst" in argv else status, ""),
        cs.status_command("chronyc"),
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
    )
    proc = run_promtool("check", "metrics", stdin=text)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr


def test_promtool_check_metrics_catches_a_bad_counter():
    """The lint really runs: a counter without _total is reported."""
    proc = run_promtool("check", "metrics", stdin="# HELP x_bytes X.\n# TYPE x_bytes counter\nx_bytes 1\n")
    assert proc.returncode != 0 and "_total" in proc.stdout + proc.stderr


def test_every_alert_is_listed_in_the_metrics_reference():
    doc = (REPO / "monitoring" / "METRICS.md").read_text()
    listed = set(re.findall(r"^  \| (ChronyNts\w+) \| (?:warning|critical) \|", doc, re.M))
    assert listed == {r["alert"] for r in rules()}
    for rule in rules():
        assert "| %s | %s |" % (rule["alert"], rule["labels"]["severity"]) in doc
