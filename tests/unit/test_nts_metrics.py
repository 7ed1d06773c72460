"""Unit tests of plugins/module_utils/nts_metrics.py: the exposition text rendered from real ``wait_for_nts`` results
on chronyc output captured from a real chronyd 4.3 (tests/fixtures/chronyc)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from ansible_collections.nts.chrony.plugins.module_utils import nts_metrics as nm

from tests.lib.collection import cs as cs

REPO = Path(__file__).resolve().parents[2]


FIX = REPO / "tests" / "fixtures" / "chronyc"
START = 1_800_000_000.0


def fx(scenario: str, name: str = "status.csv") -> str:
    return (FIX / scenario / name).read_text()


class FakeChrony:
    """``run`` for chrony_status on a captured status output; a fake clock that sleeping advances."""

    def __init__(self, status: str) -> None:
        self.status = status
        self.now = 0.0
        self.calls: list[list[str]] = []

    def run(self, argv):
        self.calls.append(list(argv))
        if "burst" in argv:
            return 0, "200 OK\n", ""
        return 0, self.status, ""

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def polled(scenario: str, **kw) -> dict:
    """wait_for_nts on a fixture as right after a chronyd start (everything chronyd counts is new: fresh)."""
    fake = FakeChrony(fx(scenario))
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


def rendered(result: dict, **kw) -> dict:
    kw.setdefault("check_started", START)
    kw.setdefault("check_duration", 0.5)
    kw.setdefault("chronyd_running", True)
    return nm.parse(nm.render(result, **kw))


def src(name: str, **labels) -> tuple:
    return (("source", name), *labels.items())


# --- values -----------------------------------------------------------------------------------------------------


def test_healthy_source_every_value():
    result = polled("healthy")
    assert result["verified"] is True
    name = result["sources"][0]["name"]
    m = rendered(result)
    s = src(name)
    assert m[("chrony_nts_source_authenticated_now", s)] == 1
    assert m[("chrony_nts_source_key_exchanges_total", s)] == 1
    assert m[("chrony_nts_source_key_exchange_attempts", s)] == 0
    assert m[("chrony_nts_source_key_exchange_age_seconds", s)] == 1  # authdata Last
    assert m[("chrony_nts_source_nak", s)] == 0
    assert m[("chrony_nts_source_cookies", s)] == 8
    assert m[("chrony_nts_source_aead_info", src(name, aead="15"))] == 1
    assert m[("chrony_nts_source_reach", s)] == 0o17
    assert m[("chrony_nts_source_selected", s)] == 1
    assert m[("chrony_nts_source_combined", s)] == 1
    assert m[("chrony_nts_source_offset_seconds", s)] == pytest.approx(-0.000000183)
    assert m[("chrony_nts_source_authenticated_sample_age_seconds", s)] == 1  # sources LastRx
    assert m[("chrony_nts_verified", ())] == 1
    assert m[("chrony_nts_healthy_sources", ())] == 1
    assert m[("chrony_nts_sources", ())] == 1
    assert m[("chrony_nts_chronyd_running", ())] == 1
    assert m[("chrony_nts_last_check_timestamp_seconds", ())] == START + 0.5
    assert m[("chrony_nts_check_duration_seconds", ())] == 0.5
    assert not any(k[0].startswith("chrony_nts_server_") for k in m)


def test_nak_source_is_not_authenticated_now():
    result = polled("nak")
    name = result["sources"][0]["name"]
    m = rendered(result)
    assert m[("chrony_nts_source_nak", src(name))] == 1
    assert m[("chrony_nts_source_cookies", src(name))] == 7
    assert m[("chrony_nts_source_authenticated_now", src(name))] == 0
    assert (m[("chrony_nts_verified", ())], m[("chrony_nts_healthy_sources", ())]) == (0, 0)


def test_key_exchange_never_succeeded_ages_are_inf():
    result = polled("ke_failed")
    name = result["sources"][0]["name"]
    m = rendered(result)
    assert m[("chrony_nts_source_key_exchanges_total", src(name))] == 0
    assert m[("chrony_nts_source_key_exchange_attempts", src(name))] == 1
    assert m[("chrony_nts_source_key_exchange_age_seconds", src(name))] == math.inf
    assert m[("chrony_nts_source_authenticated_sample_age_seconds", src(name))] == math.inf
    assert m[("chrony_nts_source_aead_info", src(name, aead="0"))] == 1
    assert (m[("chrony_nts_source_cookies", src(name))], m[("chrony_nts_source_reach", src(name))]) == (0, 0)
    assert m[("chrony_nts_source_selected", src(name))] == 0
    assert "+Inf" in nm.render(result, START, 0.5, True)


def test_saved_cookies_of_an_unreachable_server_are_history_not_health():
    result = polled("cookies_unreachable")
    name = result["sources"][0]["name"]
    m = rendered(result)
    assert m[("chrony_nts_source_cookies", src(name))] == 6
    assert m[("chrony_nts_source_key_exchanges_total", src(name))] == 1
    assert m[("chrony_nts_source_authenticated_now", src(name))] == 0


def test_unauthenticated_source_nobody_required_is_left_out():
    """mixed: one NTS source and one plain NTP source (and a refclock): only the NTS source is exported."""
    result = polled("mixed")
    names = [s["name"] for s in result["sources"]]
    nts = [s["name"] for s in result["sources"] if s["mode"] == "NTS"]
    assert len(names) == 2 and len(nts) == 1
    m = rendered(result)
    exported = {dict(k[1])["source"] for k in m if k[1]}
    assert exported == set(nts)
    assert (m[("chrony_nts_sources", ())], m[("chrony_nts_healthy_sources", ())]) == (1, 1)


def test_required_source_that_is_not_nts_or_not_configured_is_exported_as_not_authenticated():
    result = polled("non_nts", required=["ntp.missing.example"])
    plain = result["sources"][0]["name"]
    required = [plain, "ntp.missing.example"]
    m = rendered(result, required=required)
    assert m[("chrony_nts_source_authenticated_now", src("ntp.missing.example"))] == 0
    missing = [k for k in m if k[1] == src("ntp.missing.example")]
    assert len(missing) == 1  # nothing chronyd did not report
    assert m[("chrony_nts_source_authenticated_now", src(plain))] == 0
    assert m[("chrony_nts_source_authenticated_sample_age_seconds", src(plain))] == math.inf  # not NTS
    assert m[("chrony_nts_source_aead_info", src(plain, aead="0"))] == 1
    assert (m[("chrony_nts_sources", ())], m[("chrony_nts_healthy_sources", ())]) == (2, 0)
    assert m[("chrony_nts_verified", ())] == 0


def test_pool_name_is_one_series_reported_by_its_healthy_source():
    base = polled("healthy")["sources"][0]
    dead = dict(base, healthy=False, cause="unreachable", state="?", reach=0, offset=0.5)
    alive = dict(base, healthy=True)
    for order in ([dead, alive], [alive, dead]):
        m = rendered({"verified": True, "sources": order})
        assert m[("chrony_nts_source_authenticated_now", src(base["name"]))] == 1
        assert m[("chrony_nts_source_offset_seconds", src(base["name"]))] == base["offset"]
        assert m[("chrony_nts_healthy_sources", ())] == 1 and m[("chrony_nts_sources", ())] == 1
    text = nm.render({"verified": False, "sources": [dead, dict(dead, reach=3)]}, START, 1.0, True)
    assert text.count("chrony_nts_source_reach{") == 1
    assert 'chrony_nts_source_reach{source="%s"} 0' % base["name"] in text


def test_chronyd_not_answering_host_values_only():
    fake = FakeChrony(fx("errors", "506.stdout"))
    result = cs.wait_for_nts(
        lambda argv: (1, fake.status, ""), cs.status_command("chronyc"), timeout=0.5, clock=fake.clock, sleep=fake.sleep
    )
    assert result.get("fatal") is True
    m = rendered(result, chronyd_running=False, check_duration=20.0)
    assert m == {
        ("chrony_nts_verified", ()): 0,
        ("chrony_nts_healthy_sources", ()): 0,
        ("chrony_nts_sources", ()): 0,
        ("chrony_nts_chronyd_running", ()): 0,
        ("chrony_nts_last_check_timestamp_seconds", ()): START + 20,
        ("chrony_nts_check_duration_seconds", ()): 20,
    }


def test_server_tier_values():
    stats = cs.parse_serverstats(fx("server", "serverstats.csv"))
    m = rendered(
        polled("healthy"),
        serverstats=stats,
        cert_not_after=1_900_000_000,
        ntskeys_mtime=START - 3600,
        check_duration=2.0,
    )
    assert m[("chrony_nts_server_ke_accepted_total", ())] == stats["nts_ke_accepted"] == 2
    assert m[("chrony_nts_server_ke_dropped_total", ())] == stats["nts_ke_dropped"] == 0
    assert m[("chrony_nts_server_authenticated_packets_total", ())] == stats["authenticated_ntp"] == 4
    assert m[("chrony_nts_server_certificate_not_after_timestamp_seconds", ())] == 1_900_000_000
    assert m[("chrony_nts_server_ntskeys_age_seconds", ())] == 3602  # taken at the end of the check
    m = rendered(polled("healthy"), ntskeys_mtime=START - 10, now=START + 100)
    assert m[("chrony_nts_server_ntskeys_age_seconds", ())] == 110


def test_serverstats_of_chrony_4_0_layout():
    """8-field serverstats (chrony 4.0-4.1) still carries the three NTS counters."""
    stats = cs.parse_serverstats("10,1,2,0,0,5,1,7\n")
    m = rendered(polled("healthy"), serverstats=stats)
    assert [m[(n, ())] for n, _ in nm.SERVERSTATS_METRICS] == [5, 1, 7]


# --- format -----------------------------------------------------------------------------------------------------


def full_text() -> str:
    """Every family at least once: a healthy source, a missing required name, tier values."""
    return nm.render(
        polled("healthy", required=["absent.example"]),
        START,
        0.25,
        True,
        serverstats=cs.parse_serverstats(fx("server", "serverstats.csv")),
        cert_not_after=1_900_000_000.0,
        ntskeys_mtime=START - 60,
        required=["absent.example"],
    )


def test_every_family_has_help_and_type_then_its_samples_together():
    text = full_text()
    lines = text.splitlines()
    assert text.endswith("\n") and "" not in lines
    seen: list[str] = []
    i = 0
    while i < len(lines):
        m = re.match(r"^# HELP (\S+) (.+)$", lines[i])
        assert m, lines[i]
        name = m.group(1)
        assert m.group(2) == nm.BY_NAME[name].help
        assert lines[i + 1] == "# TYPE %s %s" % (name, nm.BY_NAME[name].type)
        i += 2
        count = 0
        while i < len(lines) and not lines[i].startswith("#"):
            assert re.match(r"^%s(\{[^}]*\})? \S+$" % re.escape(name), lines[i]), lines[i]
            count += 1
            i += 1
        assert count >= 1 and name not in seen
        seen.append(name)
    assert seen == [m.name for m in nm.METRICS]  # declaration order, every family present


def test_metric_declarations_follow_the_naming_rules():
    for m in nm.METRICS:
        assert re.match(r"^chrony_nts_[a-z0-9_]+$", m.name), m.name
        assert m.type in ("gauge", "counter")
        assert m.name.endswith("_total") == (m.type == "counter"), m.name
        assert set(m.labels) <= {"source", "aead"} and (not m.labels or m.labels[0] == "source")
        assert ("aead" in m.labels) == (m.name == "chrony_nts_source_aead_info")
        assert m.name.startswith("chrony_nts_source_") == ("source" in m.labels)
        if "age" in m.name.split("_") or "duration" in m.name or "offset" in m.name or "timestamp" in m.name:
            assert m.name.endswith("_seconds"), m.name
        assert m.help and "\n" not in m.help and m.help.endswith(".")
    assert len(nm.BY_NAME) == len(nm.METRICS)


def test_label_values_are_escaped_and_parse_back():
    odd = 'we"ird\\name\nx'
    result = {"verified": False, "sources": [{"name": odd, "mode": None, "healthy": False}]}
    text = nm.render(result, START, 1, True, required=[odd])
    assert 'source="we\\"ird\\\\name\\nx"' in text
    assert nm.parse(text)[("chrony_nts_source_authenticated_now", src(odd))] == 0


@pytest.mark.parametrize(
    "value, text",
    [
        (0, "0"),
        (1, "1"),
        (True, "1"),
        (False, "0"),
        (2.0, "2"),
        (0.25, "0.25"),
        (-1.83e-07, "-1.83e-07"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
        (1796128660.22, "1796128660.22"),
    ],
)
def test_format_value(value, text):
    assert nm.format_value(value) == text
    if text != "NaN":
        assert float(text) == float(value)


def test_undeclared_metric_or_labels_are_refused(monkeypatch):
    monkeypatch.setattr(nm, "samples", lambda *a, **k: [("chrony_nts_bogus", (), 1)])
    with pytest.raises(ValueError, match="not declared"):
        nm.render({}, START, 1, True)
    monkeypatch.setattr(nm, "samples", lambda *a, **k: [("chrony_nts_verified", (("source", "x"),), 1)])
    with pytest.raises(ValueError, match="labels"):
        nm.render({}, START, 1, True)
