"""health.yml and report.yml read the host check's metrics file when it is fresh (plugins/filter/nts_fleet.py:
nts_metrics_reading, nts_health_lines, nts_report_records) and the report shows where each host's state came from and
how old it is (plugins/plugin_utils/fleet_report.py).

The metrics are real renderer output: chronyc output captured from a real chronyd 4.3 (tests/fixtures/chronyc) run
through the deploy proof's own predicate (wait_for_nts, fresh, as the host check runs it) and written by
nts_metrics.render, as on a host; the live records beside them are what chrony_authdata returns for the same capture.
"""

from __future__ import annotations

import base64
import json
import math

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.nts.chrony.plugins.filter import nts_fleet as nf
from ansible_collections.nts.chrony.plugins.module_utils import nts_metrics as nm

from tests.lib.collection import cs, nr
from tests.unit.test_nts_report import FIXTURES, serverstats
from tests.unit.test_nts_report import authdata_result as _authdata

CHECKED = 1_800_000_000.0  # when the host check took its readings (its end)
NOW = CHECKED + 23.4  # the controller's clock when the playbook reads the file


class FakeChrony:
    """chronyc for wait_for_nts on one capture; sleeping advances a fake clock."""

    def __init__(self, status: str) -> None:
        self.status, self.now = status, 0.0

    def run(self, argv):
        return (0, "200 OK\n", "") if "burst" in argv else (0, self.status, "")

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def authdata_result(case: str) -> dict:
    """What chrony_authdata returns (and health.yml and report.yml register) for the capture ``case``."""
    result = _authdata(case)
    result["healthy_sources"] = [s["name"] for s in result["sources"] if s["healthy"]]
    return result


def checked(case: str, **kw) -> dict:
    """The host check's verdict on a capture (fresh, a burst, every source's own state) as nts_check computes it."""
    fake = FakeChrony((FIXTURES / case / "status.csv").read_text())
    kw.setdefault("timeout", 1.0)
    return cs.wait_for_nts(
        fake.run,
        cs.status_command("chronyc"),
        clock=fake.clock,
        sleep=fake.sleep,
        started=0.0,
        burst=cs.burst_command("chronyc"),
        **kw,
    )


def metrics(case: str = "healthy", duration: float = 0.5, running: bool = True, **kw) -> str:
    """The file the host check writes for a capture (nts_metrics.render, the check's own renderer)."""
    result = checked(case, required=kw.get("required", ())) if running else {"verified": False, "sources": []}
    return nm.render(result, CHECKED - duration, duration, running, **kw)


def slurped(text: str, path: str = "/var/lib/prometheus/node-exporter/chrony_nts.prom") -> dict:
    """What ansible.builtin.slurp registers for a file."""
    return {"changed": False, "content": base64.b64encode(text.encode()).decode(), "encoding": "base64", "source": path}


def reading(text: str, max_age: float = 180, now: float = NOW) -> dict:
    return nf.nts_metrics_reading(slurped(text), max_age, now)


# ------------------------------------------------------------------------------------------------ the conversion
def test_healthy_metrics_become_the_record_a_live_check_gives():
    live = authdata_result("healthy")
    result, stats, at = nf.metrics_result(metrics("healthy"))
    assert at == CHECKED and stats is None
    assert result["verified"] is True and "msg" not in result and result["reasons"] == []
    assert result["healthy_sources"] == [s["name"] for s in live["sources"]]
    (got,) = result["sources"]
    (want,) = live["sources"]
    # every field the report shows, equal to chrony_authdata's on the same chronyd output
    for key in ("name", "mode", "state", "healthy", "cause", "key_id", "aead", "attempts", "naks", "cookies", "reach",
                "reach_octal", "offset", "last_key_exchange", "last_rx"):  # fmt: skip
        assert got[key] == want[key], key
    assert (got["mode"], got["state"], got["selected"], got["combined"]) == ("NTS", "*", True, True)
    assert got["authenticated"] is True and got["problems"] == []
    assert set(nr.SOURCE_KEYS) <= set(got)


@pytest.mark.parametrize(
    ("case", "cause"),
    [
        ("nak", cs.CAUSE_NAK),
        ("ke_failed", cs.CAUSE_KE_NEVER),
        ("cookies_unreachable", cs.CAUSE_UNREACHABLE),  # cookies and KeyID are history: reach 0 says why
    ],
)
def test_unhealthy_source_gets_the_predicates_words(case, cause):
    live = checked(case)
    result, _stats, _at = nf.metrics_result(metrics(case))
    (src,) = result["sources"]
    assert src["healthy"] is False and src["cause"] == cause and src["problems"][0] == cause
    assert src["authenticated"] is None  # the metrics say "not authenticated now", not the last reply's flag
    assert result["verified"] is False == live["verified"]
    assert result["reasons"] == ["not verified by the host check: 0 of 1 source(s) authenticated now"]
    assert result["unhealthy_sources"] == [{"name": src["name"], "cause": cause}]
    assert result["msg"].endswith("Unhealthy sources: %s: %s" % (src["name"], cause))
    # the counters are chronyd's
    (want,) = live["sources"]
    for key in ("key_id", "attempts", "naks", "cookies", "reach", "offset", "last_key_exchange", "aead"):
        assert src[key] == want[key], key


def test_never_exchanged_keys_ages_are_none_and_state_is_not_used():
    (src,) = nf.metrics_result(metrics("ke_failed"))[0]["sources"]
    assert (src["last_key_exchange"], src["last_rx"], src["aead"], src["key_id"]) == (None, None, 0, 0)
    assert (src["state"], src["selected"], src["combined"]) == ("-", False, False)


def test_a_clean_history_that_failed_the_fresh_check_says_so():
    """Selected, reachable, cookies, no NAK, and still not authenticated now (a server that just died)."""
    live = checked("healthy")
    dead = dict(live["sources"][0], healthy=False, cause="unreachable", problems=["unreachable"])
    text = nm.render({"verified": False, "sources": [dead]}, CHECKED - 4, 4.0, True)
    (src,) = nf.metrics_result(text)[0]["sources"]
    assert src["state"] == "*" and src["reach"] > 0 and src["cookies"] == 8
    assert src["cause"] == nf.CAUSE_NOT_FRESH.format(age="1 s before the check")


def test_only_nts_sources_and_required_names():
    result = nf.metrics_result(metrics("mixed"))[0]
    assert [s["name"] for s in result["sources"]] == [s["name"] for s in checked("mixed")["sources"] if s["mode"]
                                                        == "NTS"]  # fmt: skip
    result = nf.metrics_result(metrics("healthy", required=["absent.example"]))[0]
    missing = result["sources"][-1]
    assert missing["name"] == "absent.example" and missing["cause"] == cs.CAUSE_MISSING
    assert (missing["mode"], missing["state"], missing["reach"]) == (None, None, None)
    assert result["verified"] is False


def test_no_nts_source_is_not_verified():
    result = nf.metrics_result(metrics("non_nts"))[0]
    assert result["sources"] == [] and result["verified"] is False
    assert result["reasons"] == ["not verified by the host check: no NTS source"]


def test_tracking_is_empty_but_for_a_synchronised_clock_the_verdict_proves():
    """The role's check requires a synchronised clock (chrony_nts_verify_require_synchronised, default true): a
    passing verdict says the clock is; a failing one or a check that does not require it says nothing."""
    assert nf.metrics_result(metrics("healthy"))[0]["tracking"] == {"synchronised": True}
    assert nf.metrics_result(metrics("healthy"), require_synchronised=False)[0]["tracking"] == {}
    assert nf.metrics_result(metrics("nak"))[0]["tracking"] == {}
    r = nf.nts_metrics_reading(slurped(metrics()), 180, NOW, require_synchronised=False)
    assert r["use"] is True and r["result"]["tracking"] == {}


def test_verdict_failing_with_every_source_healthy():
    """The check requires a synchronised clock and --min-sources: its verdict, not the sources, decides."""
    result = nf.metrics_result(metrics("healthy").replace("chrony_nts_verified 1", "chrony_nts_verified 0"))[0]
    assert result["verified"] is False and result["healthy_sources"]
    assert "every source authenticated now, but the clock is not synchronised" in result["reasons"][0]


def test_chronyd_not_answering_is_a_failed_result_as_live():
    result, _stats, at = nf.metrics_result(metrics(running=False, duration=20.0))
    assert at == CHECKED and result["failed"] is True and result["verified"] is False
    assert result["msg"] == nf.CHRONYD_DOWN and result["sources"] == []


def test_tier_counters_come_from_the_metrics():
    stats = serverstats()
    _result, got, _at = nf.metrics_result(metrics(serverstats=stats, cert_not_after=1.9e9, ntskeys_mtime=CHECKED - 60))
    assert got == {k: stats[k] for k in ("nts_ke_accepted", "nts_ke_dropped", "authenticated_ntp")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no chrony_nts_verified"),
        ("garbage\n", "not Prometheus exposition text"),
        ("chrony_nts_verified 1\nchrony_nts_chronyd_running 1\n", "no chrony_nts_last_check_timestamp_seconds"),
        (metrics().replace("chrony_nts_verified 1", "chrony_nts_verified 2"), "chrony_nts_verified must be 0 or 1"),
        (metrics().replace("chrony_nts_source_cookies{", "chrony_nts_source_cookies{x=\"1\",").replace(" 8\n", " 8\n"),
         "chrony_nts_source_cookies has labels"),
        (metrics().replace("_cookies{source=\"127.97.73.177\"} 8", "_cookies{source=\"127.97.73.177\"} -1"),
         "cookies must be a non-negative integer"),
        ("\n".join(line for line in metrics().splitlines() if "authenticated_now" not in line),
         "has series but no chrony_nts_source_authenticated_now"),
    ],
)  # fmt: skip
def test_unparsable_metrics_are_refused(text, message):
    with pytest.raises(nf.MetricsError, match=message):
        nf.metrics_result(text)


def test_series_of_a_newer_check_are_ignored():
    text = metrics() + '# TYPE chrony_nts_future gauge\nchrony_nts_future{source="x",y="z"} 3\n'
    assert nf.metrics_result(text)[0]["verified"] is True


# ------------------------------------------------------------------------------------------------ the reading
def test_fresh_file_is_used_with_its_age():
    r = reading(metrics())
    assert r["use"] is True and r["why"] is None and r["unreachable"] is False
    assert r["age"] == pytest.approx(23.4) and r["checked_at"] == CHECKED
    assert r["path"] == "/var/lib/prometheus/node-exporter/chrony_nts.prom"
    assert r["result"]["verified"] is True and r["serverstats"] is None
    assert reading(metrics(), max_age=30, now=CHECKED + 30)["use"] is True  # the bound itself is still fresh


@pytest.mark.parametrize(
    ("slurp", "max_age", "why"),
    [
        (slurped(metrics()), 20, "metrics 23 s old, more than 20 s"),
        (slurped(metrics()), 0, "metrics not used (max reading age 0)"),
        ({"changed": False, "failed": False, "msg": "File not found: /x.prom"}, 180,
         "metrics not readable: File not found: /x.prom"),
        ({"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}, 180, "metrics not read"),
        ({}, 180, "metrics not read"),
        (slurped("# HELP nothing\n"), 180, "metrics unparsable: no chrony_nts_verified"),
        ({"content": "!!not base64!!", "source": "/x.prom"}, 180, "metrics unparsable: "),
        ({"content": base64.b64encode(b"\xff\xfe").decode()}, 180, "metrics unparsable: "),
    ],
)  # fmt: skip
def test_file_not_used_and_why(slurp, max_age, why):
    r = nf.nts_metrics_reading(slurp, max_age, NOW)
    assert r["use"] is False and r["result"] is None and r["why"].startswith(why), r["why"]


def test_reading_from_the_future_means_the_clocks_disagree():
    assert reading(metrics(), now=CHECKED - 5)["use"] is True  # a little skew is tolerated, the age is then 0
    assert reading(metrics(), now=CHECKED - 5)["age"] == 0
    r = reading(metrics(), now=CHECKED - 60)
    assert r["use"] is False and r["why"].startswith("metrics dated 60 s after the controller's clock")


def test_unreachable_host():
    r = nf.nts_metrics_reading({"unreachable": True, "msg": "ssh: timed out", "changed": False}, 180, NOW)
    assert r["unreachable"] is True and r["msg"] == "ssh: timed out" and r["use"] is False


@pytest.mark.parametrize("bad", [-1, "soon", None, True, math.inf, math.nan])
def test_max_age_must_be_seconds(bad):
    with pytest.raises(AnsibleFilterError, match="max_age must be a number of seconds >= 0"):
        nf.nts_metrics_reading(slurped(metrics()), bad, NOW)


def test_default_now_is_the_controllers_clock():
    assert nf.nts_metrics_reading(slurped(metrics()), 180)["use"] is False  # CHECKED is in 2027


# ------------------------------------------------------------------------------------------------ health.yml's lines
def fleet_readings():
    """client1 fresh metrics, client2 stale metrics (live), client3 no file (live), client4 chronyd down (metrics),
    client5 unreachable, client6 metrics disabled (live)."""
    readings = {
        "client1": reading(metrics("healthy")),
        "client2": reading(metrics("healthy"), now=CHECKED + 400),
        "client3": nf.nts_metrics_reading({"msg": "File not found: /var/lib/x.prom", "failed": False}, 180, NOW),
        "client4": reading(metrics(running=False, duration=20.0)),
        "client5": nf.nts_metrics_reading({"unreachable": True, "msg": "ssh: No route to host"}, 180, NOW),
        "client6": nf.nts_metrics_reading({"skipped": True}, 0, NOW),
    }
    skipped = {"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}
    live = {
        "client1": skipped,
        "client2": authdata_result("nak"),
        "client3": authdata_result("healthy"),
        "client4": skipped,
        "client5": skipped,
        "client6": authdata_result("healthy"),
    }
    return readings, live


def test_health_lines_say_where_each_reading_came_from():
    readings, live = fleet_readings()
    lines = dict(zip(live, nf.nts_health_lines(live, readings)))
    name = checked("healthy")["sources"][0]["name"]
    assert lines["client1"] == (
        "client1      OK       1/1 NTS sources healthy  reading 23 s old (metrics)  "
        "%s[* mode=NTS nak=0 cook=8 reach=17 auth=yes]" % name
    )
    assert lines["client2"].startswith("client2      FAILING  0/1 NTS sources healthy  live (metrics 400 s old, "
                                       "more than 180 s)  ")  # fmt: skip
    assert "  live (metrics not readable: File not found: /var/lib/x.prom)  " in lines["client3"]
    assert lines["client4"] == "client4      UNKNOWN  reading 23 s old (metrics)  " + nf.CHRONYD_DOWN
    assert lines["client5"] == "client5      UNKNOWN  unreachable: ssh: No route to host"
    assert "OK       1/1 NTS sources healthy  live (metrics not read)  " in lines["client6"]


def test_health_lines_without_readings_are_live():
    (line,) = nf.nts_health_lines({"c1": authdata_result("healthy")})
    assert "  live  " in line and line.startswith("c1           OK       1/1 NTS sources healthy")
    assert nf.nts_health_lines({"c2": {}}) == ["c2           UNKNOWN  no answer"]


def test_health_line_of_a_host_that_left_the_play():
    """health.yml: an unreachable host leaves the play before its reading is judged; its line still appears."""
    assert nf.nts_health_lines({"c1": {}}, {"c1": {}}) == ["c1           UNKNOWN  no answer"]


# ------------------------------------------------------------------------------------------------ report.yml
def test_report_records_take_the_metrics_or_the_live_result():
    readings, live = fleet_readings()
    hosts = list(live)
    groups = {h: ["chrony_nts_clients"] for h in hosts}
    recs = {r["host"]: r for r in nf.nts_report_records(hosts, live, {}, groups, readings=readings)}
    assert recs["client1"]["reading"] == {"source": "metrics", "age": 23, "checked_at": CHECKED, "why_live": None}
    assert recs["client1"]["authdata"] == readings["client1"]["result"] and recs["client1"]["error"] is None
    assert recs["client2"]["reading"] == {"source": "live", "age": 0, "checked_at": None,
                                          "why_live": "metrics 400 s old, more than 180 s"}  # fmt: skip
    assert recs["client2"]["authdata"] == live["client2"]
    assert recs["client3"]["reading"]["why_live"] == "metrics not readable: File not found: /var/lib/x.prom"
    assert recs["client4"]["error"] == nf.CHRONYD_DOWN and recs["client4"]["authdata"] is None
    assert recs["client4"]["reading"]["source"] == "metrics"
    assert recs["client5"] == {"host": "client5", "groups": ["chrony_nts_clients"], "authdata": None,
                               "error": "unreachable: ssh: No route to host", "serverstats": None,
                               "reading": None}  # fmt: skip


def test_report_records_server_counters_from_the_metrics_or_live():
    stats = serverstats()
    with_counters = reading(metrics(serverstats=stats))
    without = reading(metrics())
    live_stats = {"changed": False, "stats": dict(stats, nts_ke_accepted=99)}
    recs = nf.nts_report_records(
        ["t1", "t2", "t3"],
        {"t1": {"skipped": True}, "t2": {"skipped": True}, "t3": authdata_result("healthy")},
        {"t1": {"skipped": True}, "t2": live_stats, "t3": live_stats},
        {h: ["chrony_nts_servers"] for h in ("t1", "t2", "t3")},
        readings={"t1": with_counters, "t2": without, "t3": reading(metrics(), max_age=1)},
    )
    assert recs[0]["serverstats"] == {"nts_ke_accepted": 2, "nts_ke_dropped": 0, "authenticated_ntp": 4}
    assert recs[1]["serverstats"]["nts_ke_accepted"] == 99  # the metrics have none: chrony_serverstats ran
    assert recs[2]["serverstats"]["nts_ke_accepted"] == 99 and recs[2]["reading"]["source"] == "live"


def test_report_records_without_readings_are_live():
    (rec,) = nf.nts_report_records(["c1"], {"c1": authdata_result("healthy")}, {}, {})
    assert rec["reading"] == {"source": "live", "age": 0, "checked_at": None, "why_live": None}
    (rec,) = nf.nts_report_records(["c1"], {"c1": {"unreachable": True, "msg": "x"}}, {}, {})
    assert rec["reading"] is None and rec["error"] == "unreachable: x"


@pytest.fixture
def report() -> dict:
    readings, live = fleet_readings()
    hosts = list(live)
    records = nf.nts_report_records(hosts, live, {}, {h: ["chrony_nts_clients"] for h in hosts}, readings=readings)
    return nr.build_report(records, "2027-01-15T08:00:23+00:00")


def test_report_hosts_carry_their_reading(report):
    hosts = {h["name"]: h for h in report["hosts"]}
    assert hosts["client1"]["status"] == "healthy" and hosts["client1"]["verified"] is True
    assert hosts["client1"]["reading"] == {"source": "metrics", "age": 23, "checked_at": CHECKED, "why_live": None}
    assert hosts["client2"]["status"] == "unhealthy" and hosts["client2"]["reading"]["source"] == "live"
    assert hosts["client2"]["reading"]["age"] == 0
    assert hosts["client4"]["status"] == "unknown" and hosts["client4"]["failures"] == [nf.CHRONYD_DOWN]
    assert hosts["client5"]["reading"] is None and hosts["client5"]["status"] == "unknown"
    s = report["summary"]
    assert s["readings"] == {"metrics": 2, "live": 3, "none": 1} and s["max_reading_age"] == 23
    assert json.loads(nr.render_json(report)) == report


def test_offset_of_a_metrics_host_is_its_selected_sources_sample(report):
    hosts = {h["name"]: h for h in report["hosts"]}
    src = hosts["client1"]["sources"][0]
    assert hosts["client1"]["offset"] == src["offset"] and hosts["client1"]["offset_basis"] == "selected source"
    assert hosts["client3"]["offset_basis"] == "tracking"
    assert hosts["client3"]["offset"] == authdata_result("healthy")["tracking"]["last_offset"]
    assert hosts["client1"]["stratum"] is None and hosts["client1"]["chrony_version"] is None
    assert hosts["client1"]["synchronised"] is True and hosts["client1"]["leap_status"] is None


def test_html_shows_source_and_age_of_each_reading(report):
    page = nr.render_html(report)
    assert "<th>Reading</th>" in page
    assert "<td class='reading'>metrics, 23 s old</td>" in page
    assert "<td class='reading'>live check</td>" in page and "<td class='reading'>n/a</td>" in page
    assert ("Reading: the host check&#x27;s metrics file, 23 s old (checked 2027-01-15T08:00:00Z). Offset: the "
            "selected source&#x27;s last sample") in page  # fmt: skip
    assert "Reading: live check (metrics 400 s old, more than 180 s).</p>" in page
    assert "Readings: 2 read from the host check&#x27;s metrics (oldest 23 s), 3 live checks, 1 not read." in page


def test_markdown_shows_source_and_age_of_each_reading(report):
    md = nr.render_markdown(report)
    assert "| Host | Status | Reading | Offset | Stratum | Healthy NTS sources | NTS-KE served |" in md
    assert "| client1 | HEALTHY | metrics, 23 s old | " in md and "| client2 | UNHEALTHY | live check | " in md
    assert "| client5 | UNKNOWN | n/a | " in md and "\n## client5 (unknown)\n\nReading: nothing read.\n" in md
    assert (
        "\n## client1 (healthy)\n\nReading: the host check's metrics file, 23 s old (checked 2027-01-15T08:00:00Z)."
        in md
    )
    assert (
        "\n## client3 (healthy)\n\nReading: live check (metrics not readable: File not found: /var/lib/x.prom).\n" in md
    )
    assert "Readings: 2 read from the host check's metrics (oldest 23 s), 3 live checks, 1 not read." in md


def test_every_host_of_the_svg_still_has_a_bar(report):
    svg = nr.render_svg(report)
    assert svg.count('<g class="host ') == len(report["hosts"])
    assert "read from the host check's metrics: the selected source's last sample" in svg


@pytest.mark.parametrize(
    ("reading", "message"),
    [
        ("metrics", "field 'reading' must be a mapping or null"),
        ({"source": "cache", "age": 1}, "field 'reading.source' must be one of metrics, live, got 'cache'"),
        ({"source": "metrics", "age": None}, "field 'reading.age' must be a finite number"),
        ({"source": "metrics", "age": -3}, "field 'reading.age' must be >= 0 seconds, got -3"),
        ({"source": "live", "age": 5}, "field 'reading.age' of a live check must be 0, got 5"),
        ({"source": "live", "age": 0, "why_live": 3}, "field 'reading.why_live' must be a string or null"),
        ({"source": "metrics", "age": 1, "checked_at": "now"}, "field 'reading.checked_at' must be a finite number"),
    ],
)
def test_bad_readings_name_the_field(reading, message):
    with pytest.raises(nr.ReportError, match=message):
        nr.build_report([{"host": "a", "reading": reading}], "t")


def test_filters_are_registered():
    filters = nf.FilterModule().filters()
    assert filters["nts_metrics_reading"] is nf.nts_metrics_reading
    assert {"nts_health_lines", "nts_report_records", "nts_target_errors"} <= set(filters)
