"""The fleet report and rollout summary renderer (plugins/module_utils/nts_report.py) and its filter plugin.

Host records are built from chronyc output captured from a real chronyd 4.3 (tests/fixtures/chronyc, see capture.py),
run through the same parser and health evaluation the chrony_authdata module uses, so the report is fed exactly what
the module returns.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.lib.collection import cs, nr

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chronyc"
SVG_NS = "{http://www.w3.org/2000/svg}"


def authdata_result(case: str, min_sources: int = 1) -> dict:
    """What the chrony_authdata module returns for the captured chronyc output ``case``."""
    report = cs.parse_status_output((FIXTURES / case / "status.csv").read_text())
    verdict = cs.evaluate(report, min_sources=min_sources)
    return {
        "changed": False,
        "verified": verdict.ok,
        "sources": [h.to_dict() for h in verdict.sources],
        "reasons": list(verdict.reasons),
        "tracking": cs.tracking_to_dict(report.tracking),
        "chrony_version": {"version": "4.3"},
    }


def serverstats() -> dict:
    return cs.parse_serverstats((FIXTURES / "server" / "serverstats.csv").read_text())


def fleet() -> list:
    return [
        {"host": "client2", "groups": ["chrony_nts_clients"], "authdata": authdata_result("ke_failed")},
        {"host": "client1", "groups": ["chrony_nts_clients"], "authdata": authdata_result("healthy")},
        {"host": "tier1", "groups": ["chrony_nts_servers"], "authdata": authdata_result("healthy"),
         "serverstats": serverstats()},
        {"host": "client3", "groups": ["chrony_nts_clients"], "error": "unreachable: ssh timed out"},
        {"host": "client4", "groups": ["chrony_nts_clients"], "authdata": authdata_result("nak")},
    ]  # fmt: skip


@pytest.fixture
def report() -> dict:
    return nr.build_report(fleet(), "2026-11-27T12:00:00+00:00")


# ------------------------------------------------------------------------------------------------------------ model
def test_statuses_and_summary(report):
    status = {h["name"]: h["status"] for h in report["hosts"]}
    assert status == {
        "client1": "healthy",
        "client2": "unhealthy",
        "client3": "unknown",
        "client4": "unhealthy",
        "tier1": "healthy",
    }
    assert [h["name"] for h in report["hosts"]] == sorted(status)
    s = report["summary"]
    assert (s["hosts"], s["healthy"], s["unhealthy"], s["unknown"]) == (5, 2, 2, 1)
    assert s["nts_sources"] == sum(len(h["sources"]) for h in report["hosts"])
    assert s["naks"] >= 1  # the nak capture
    assert s["nts_ke_served"] == serverstats()["nts_ke_accepted"] == 2
    assert report["schema"] == "chrony-nts-report/1"


def test_per_host_fields_come_from_the_capture(report):
    hosts = {h["name"]: h for h in report["hosts"]}
    good = hosts["client1"]
    (src,) = good["sources"]
    raw = cs.parse_authdata((FIXTURES / "healthy" / "authdata.csv").read_text())[0]
    assert (src["cookies"], src["naks"], src["last_key_exchange"]) == (raw.cookies, raw.naks, raw.last_key_exchange)
    assert src["healthy"] is True and src["cause"] is None and src["reach"] > 0
    tracking = cs.parse_tracking((FIXTURES / "healthy" / "tracking.csv").read_text())
    assert good["offset"] == tracking.last_offset and good["stratum"] == tracking.stratum
    assert good["failures"] == [] and good["server"] is None
    bad = hosts["client2"]
    assert bad["failures"] and any(cs.CAUSE_KE_NEVER in f for f in bad["failures"])
    assert hosts["client3"]["failures"] == ["unreachable: ssh timed out"] and hosts["client3"]["sources"] == []
    assert hosts["tier1"]["server"]["nts_ke_accepted"] == 2
    assert any("NAK" in f for f in hosts["client4"]["failures"])


def test_json_round_trips(report):
    assert json.loads(nr.render_json(report)) == report


def test_error_on_a_verified_host_makes_it_unhealthy():
    rec = {"host": "x", "authdata": authdata_result("healthy"), "error": "serverstats: 501 Not authorised"}
    (host,) = nr.build_report([rec], "t")["hosts"]
    assert host["status"] == "unhealthy" and host["failures"][0] == "serverstats: 501 Not authorised"


def test_module_failure_message_is_kept():
    (host,) = nr.build_report([{"host": "x", "authdata": {"failed": True, "msg": "chronyc not found"}}], "t")["hosts"]
    assert host["status"] == "unhealthy" and host["failures"] == ["chronyc not found"]
    (host,) = nr.build_report([{"host": "y"}], "t")["hosts"]
    assert host["status"] == "unknown" and host["failures"] == ["no data collected"]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ("nope", "records must be a list"),
        ([["x"]], r"records\[0\] must be a mapping"),
        ([{"host": ""}], r"records\[0\]: field 'host' must be a non-empty string, got ''"),
        ([{"host": "a", "groups": "g"}], r"records\[0\] \(host 'a'\): field 'groups' must be a list of strings"),
        ([{"host": "a", "error": 3}], r"field 'error' must be a string or null, got 3"),
        ([{"host": "a", "authdata": {"sources": {}, "verified": True}}], "field 'authdata.sources' must be a list"),
        ([{"host": "a", "authdata": {"sources": [], "verified": "yes"}}], "'authdata.verified' must be true or false"),
        ([{"host": "a", "authdata": {"sources": [{"name": "s", "healthy": True, "cookies": -1}], "verified": True}}],
         r"authdata.sources\[0\]: field 'cookies' must be a non-negative integer or null, got -1"),
        ([{"host": "a", "authdata": {"sources": [{"name": "s", "healthy": 1}], "verified": True}}],
         r"field 'healthy' must be true or false, got 1"),
        ([{"host": "a", "authdata": {"sources": [], "verified": True, "tracking": {"last_offset": "x"}}}],
         r"field 'authdata.tracking.last_offset' must be a finite number or null, got 'x'"),
        ([{"host": "a", "serverstats": {"nts_ke_accepted": "2"}}], r"field 'serverstats.nts_ke_accepted'"),
        ([{"host": "a"}, {"host": "a"}], "host\\(s\\) listed more than once: a"),
    ],
)  # fmt: skip
def test_bad_records_name_the_field_and_value(records, message):
    with pytest.raises(nr.ReportError, match=message):
        nr.build_report(records, "t")


def test_generated_at_is_required():
    with pytest.raises(nr.ReportError, match="generated_at must be a non-empty timestamp string, got ''"):
        nr.build_report([], "")


# ------------------------------------------------------------------------------------------------------------ picture
def test_svg_has_one_bar_per_host_coloured_by_status(report):
    root = ET.fromstring(nr.render_svg(report))  # noqa: S314 - our own output
    assert root.tag == SVG_NS + "svg"
    groups = root.findall(SVG_NS + "g")
    assert [g.get("data-host") for g in groups] == [h["name"] for h in report["hosts"]]
    for g, h in zip(groups, report["hosts"]):
        (rect,) = g.findall(SVG_NS + "rect")
        expected = nr.COLOURS["unknown"] if h["offset"] is None else nr.COLOURS[h["status"]]
        assert rect.get("fill") == expected, h["name"]
        assert g.get("class") == "host " + h["status"]


def test_svg_bars_point_the_way_of_the_offset():
    recs = []
    for name, offset in (("ahead", 2e-3), ("behind", -1e-3)):
        auth = authdata_result("healthy")
        auth["tracking"] = dict(auth["tracking"], last_offset=offset)
        recs.append({"host": name, "authdata": auth})
    root = ET.fromstring(nr.render_svg(nr.build_report(recs, "t")))  # noqa: S314
    bars = {g.get("data-host"): g.find(SVG_NS + "rect") for g in root.findall(SVG_NS + "g")}
    centre = 170 + 420 / 2
    ahead, behind = bars["ahead"], bars["behind"]
    assert float(ahead.get("x")) == centre and float(ahead.get("width")) == pytest.approx(206)
    assert float(behind.get("x")) + float(behind.get("width")) == pytest.approx(centre)
    assert float(behind.get("width")) == pytest.approx(103)
    assert "scale ±2 ms" in ET.tostring(root, encoding="unicode")


# ------------------------------------------------------------------------------------------------------------ pages
def test_html_is_self_contained_and_lists_every_host(report):
    page = nr.render_html(report)
    assert page.startswith("<!DOCTYPE html>")
    for h in report["hosts"]:
        assert f"id='host-{h['name']}'" in page
    assert "<svg" in page and "<script" not in page.lower()
    assert not re.search(r"(src|href)=['\"](https?:)?//", page)
    # the only URL is the SVG namespace, which is an identifier, not something fetched
    assert re.findall(r"https?://[^\s\"'<>]+", page) == ["http://www.w3.org/2000/svg"]


def test_html_escapes_everything_from_hosts():
    auth = authdata_result("ke_failed")
    auth["sources"][0]["name"] = "<img src=x onerror=alert(1)>"
    page = nr.render_html(nr.build_report([{"host": "h&<b>", "authdata": auth}], "<now>"))
    assert "<img" not in page and "<b>" not in page and "&lt;img src=x" in page and "h&amp;&lt;b&gt;" in page


def test_markdown_tables_and_picture(report):
    md = nr.render_markdown(report)
    assert md.startswith("# chrony NTS fleet health\n")
    assert "![Clock offset per host](offsets.svg)" in md
    for h in report["hosts"]:
        assert f"\n## {h['name']} ({h['status']})\n" in md
    assert "| Source | State | Cookies | NAKs | Reach | Offset | Last key exchange | Problem |" in md
    assert "offsets.svg" not in nr.render_markdown(report, svg_file=None)
    rec = {"host": "a|b", "error": "x|y"}
    assert "a\\|b" in nr.render_markdown(nr.build_report([rec], "t"))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "n/a"), (0.0, "0 s"), (1.5, "+1.5 s"), (-0.0025, "-2.5 ms"), (3.2e-6, "+3.2 µs"), (-4e-8, "-40 ns")],
)
def test_format_offset(seconds, text):
    assert nr.format_offset(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), [(None, "never"), (5, "5 s ago"), (600, "10 min ago"),
                                               (7300, "2 h ago"), (3 * 86400, "3 d ago")])  # fmt: skip
def test_format_age(seconds, text):
    assert nr.format_age(seconds) == text


# ------------------------------------------------------------------------------------------------------------ rollout
def rollout_record():
    hosts = ["tier1", "client1", "client2", "client3", "client4", "client5"]
    batches = [
        {"play": "servers", "index": 1, "hosts": ["tier1"], "started": 10.0, "ended": 30.5, "stopped": False},
        {"play": "clients", "index": 1, "hosts": ["client1"], "started": 31.0, "ended": 40.0, "stopped": False},
        {"play": "clients", "index": 2, "hosts": ["client2", "client3"], "started": 41.0, "ended": 101.25,
         "stopped": True, "failed": ["client3"]},
    ]  # fmt: skip
    results = [
        {"host": "tier1", "status": "ok", "changed": True},
        {"host": "client1", "status": "ok", "changed": False},
        {"host": "client2", "status": "ok", "changed": True},
        {"host": "client3", "status": "failed", "changed": False, "rolled_back": True, "config_before": "ab",
         "config_after": "ab", "reason": "chrony_nts failed at 'Verify': nts1: certificate issuer unknown"},
    ]  # fmt: skip
    return hosts, batches, results


def test_rollout_summary_stopped():
    hosts, batches, results = rollout_record()
    s = nr.build_rollout_summary("run1", hosts, batches, results)
    assert s["outcome"] == "stopped"
    assert (s["changed"], s["unchanged"], s["untouched"]) == (["client2", "tier1"], ["client1"], ["client4", "client5"])
    (failed,) = s["failed"]
    assert failed["host"] == "client3" and failed["rolled_back"] is True and "issuer unknown" in failed["reason"]
    assert [b["wall_time"] for b in s["batches"]] == [20.5, 9.0, 60.25]
    assert [b["failed"] for b in s["batches"]] == [[], [], ["client3"]]
    md = nr.render_rollout_markdown(s)
    assert "STOPPED" in md and "untouched (later batches, rollout stopped): client4, client5" in md
    assert "| clients | 2 | client2, client3 | client3 | 60.2 s |" in md


def test_rollout_host_lost_in_a_batch_counts_as_failed_not_untouched():
    hosts, batches, results = rollout_record()
    results = [r for r in results if r["host"] != "client3"]
    s = nr.build_rollout_summary("run1", hosts, batches, results)
    assert [f["host"] for f in s["failed"]] == ["client3"] and "no result recorded" in s["failed"][0]["reason"]
    assert "client3" not in s["untouched"]


def test_rollout_unreachable_host_is_failed_and_said_untouched():
    hosts, batches, results = rollout_record()
    results = [r for r in results if r["host"] != "client3"]
    lost = {"host": "client3", "status": "failed", "changed": False, "rolled_back": False}
    results.append({**lost, "config_before": None, "config_after": None, "reason": "unreachable: No route to host"})
    md = nr.render_rollout_markdown(nr.build_rollout_summary("run1", hosts, batches, results))
    assert "## client3 failed\n\nunreachable: No route to host\n\nNothing was done to this host" in md
    assert "Rolled back: no" not in md


def test_rollout_complete_and_unfinished_batch():
    s = nr.build_rollout_summary("r", ["a"], [{"hosts": ["a"], "started": 1.0, "ended": None}], [])
    assert s["outcome"] == "complete" and s["untouched"] == ["a"] and s["batches"][0]["wall_time"] is None
    assert "unfinished" in nr.render_rollout_markdown(s)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", [], [], []), "run_id must be a non-empty string"),
        (("r", [], [], [{"host": "a", "status": "done"}]), r"results\[0\] \(host 'a'\): field 'status' must be"),
        (("r", [], [], ["a"]), r"results\[0\] must be a mapping with a 'host' string, got 'a'"),
        (("r", [], [{"hosts": "a"}], []), r"batches\[0\] must be a mapping with a 'hosts' list"),
        (("r", [], [{"hosts": [], "started": None}], []), r"batches\[0\]: field 'started' must be a finite number"),
    ],
)
def test_rollout_bad_input(args, message):
    with pytest.raises(nr.ReportError, match=message):
        nr.build_rollout_summary(*args)


# ------------------------------------------------------------------------------------------------------------ filter
def test_filter_plugin_wraps_errors_and_renders():
    from ansible.errors import AnsibleFilterError
    from ansible_collections.nts.chrony.plugins.filter import nts_report as mod

    filters = mod.FilterModule().filters()
    rep = filters["nts_report_build"](fleet(), "t")
    assert rep["summary"]["hosts"] == 5 and "<svg" in filters["nts_report_html"](rep)
    assert json.loads(filters["nts_report_json"](rep)) == rep
    with pytest.raises(AnsibleFilterError, match="records must be a list"):
        filters["nts_report_build"]("x", "t")
