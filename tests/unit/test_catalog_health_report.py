"""`nts-catalog refresh` without a network: the time bound, the --address map and the report built from results.

The probes themselves run against real chronyd NTS servers on loopback in tests/integration/test_catalog_refresh.py.
"""

from __future__ import annotations

import datetime
import json

import pytest
from ansible_collections.nts.chrony.plugins.module_utils import nts_prober
from ansible_collections.nts.chrony.plugins.plugin_utils import catalog_refresh
from ansible_collections.nts.chrony.plugins.plugin_utils.catalog_schema import validate_catalog


def catalog(*hosts, stratum=1):
    return validate_catalog(
        {
            "version": 1,
            "updated": "2026-12-01",
            "servers": [
                dict(host=h, provider=h.split(".")[0], operator=h, countries=[], region="global", stratum=stratum)
                for h in hosts
            ],
        }
    )


@pytest.mark.parametrize(
    ("servers", "concurrency", "timeout", "waves", "bound"),
    [
        (95, 32, 5.0, 3, 15.0),
        (95, 16, 5.0, 6, 30.0),
        (95, 95, 5.0, 1, 5.0),
        (7, 8, 2.0, 1, 2.0),  # fewer servers than workers: one wave
        (20, 4, 1.5, 5, 7.5),
        (1, 1, 0.5, 1, 0.5),
    ],
)
def test_time_bound(servers, concurrency, timeout, waves, bound):
    b = catalog_refresh.time_bound(servers, concurrency, timeout)
    assert (b["waves"], b["bound_seconds"], b["workers"]) == (waves, bound, min(servers, concurrency))
    text = catalog_refresh.describe_bound(b)
    assert text.startswith("%d server(s), %d at a time, %g s per server: %d wave(s), at most %g s" % (
        servers, min(servers, concurrency), timeout, waves, bound))  # fmt: skip


def test_address_map():
    cat = catalog("a.example", "b.example")
    assert catalog_refresh.parse_address_map(["A.example=127.0.0.5", "b.example= ::1"], cat) == {
        "a.example": "127.0.0.5",
        "b.example": "::1",
    }
    for item, text in [
        ("a.example", "expected HOST=IP"),
        ("a.example=nohost", "is not an IP address"),
        ("c.example=127.0.0.5", "the catalog has no server 'c.example'"),
        ("=127.0.0.5", "expected HOST=IP"),
    ]:
        with pytest.raises(ValueError, match=text):
            catalog_refresh.parse_address_map([item], cat)
    specs = catalog_refresh.probe_specs(cat, {"a.example": "127.0.0.5"})
    assert specs == [{"host": "a.example", "port": 4460, "address": "127.0.0.5"}, {"host": "b.example", "port": 4460}]


def result(host, **values):
    r = nts_prober._result_template(host, 4460, "127.0.0.5", host)
    r.update(values)
    r["timings"] = {"total": 0.01}
    return r


def good(host, days=200, stratum=1):
    return result(
        host, ok=True, aead=15, cookies=8, cookie_length=100, stratum=stratum, leap=0, synchronised=True,
        cert_not_after="2027-06-01T00:00:00Z", cert_days_left=days, cert_issuer="CN=Some CA",
    )  # fmt: skip


def test_report_from_results(tmp_path):
    cat = catalog("a.example", "b.example", "c.example", "d.example", "e.example")
    results = [
        good("a.example"),
        good("b.example", days=3, stratum=2),
        result("c.example", stage="tcp", error="cannot connect to 127.0.0.5 port 4460: connection refused"),
        result(
            "d.example",
            stage="certificate",
            error="certificate verification failed: certificate has expired",
            cert_not_after="2026-11-28T00:00:00Z",
            cert_days_left=-3,
        ),
        result("e.example", ok=True, aead=15, cookies=8, cookie_length=100, stratum=16, leap=3, synchronised=False),
    ]
    timing = dict(catalog_refresh.time_bound(5, 32, 5.0), elapsed_seconds=1.2, date_recheck=None,
                  total_bound_seconds=5.0, within_bound=True)  # fmt: skip
    generated = datetime.datetime(2026, 12, 1, 13, 5, 1, tzinfo=datetime.timezone.utc)
    report = catalog_refresh.build_report(cat, "cat.yml", results, timing, 14, generated)
    assert (report["status"], report["exit_code"]) == ("CRITICAL", 2)
    statuses = [(s["host"], s["status"]) for s in report["servers"]]
    assert statuses == [
        ("a.example", "OK"),
        ("b.example", "WARNING"),
        ("c.example", "CRITICAL"),
        ("d.example", "CRITICAL"),
        ("e.example", "WARNING"),
    ]
    s = report["summary"]
    assert s["failed_by_stage"] == {"certificate": 1, "tcp": 1}
    assert (s["expiring_within_warn_days"], s["expired"]) == (["b.example"], ["d.example"])
    assert s["stratum_differs"] == ["b.example", "e.example"] and s["unsynchronised"] == ["e.example"]
    assert s["providers_without_ok_server"] == ["c", "d"]
    assert report["servers"][0]["aead_name"] == "AEAD_AES_SIV_CMAC_256"

    json_path, md_path = catalog_refresh.write_report(report, str(tmp_path / "out"))
    assert json_path.endswith("/catalog-health-20261201T130501Z.json") and md_path.endswith(".md")
    assert json.loads(open(json_path).read())["summary"] == s
    # a second report in the same second does not overwrite the first
    again = catalog_refresh.write_report(report, str(tmp_path / "out"))
    assert again[0].endswith("/catalog-health-20261201T130501Z-2.json")
    md = open(md_path).read()
    assert "| 5 | 1 | 2 | 2 | 2 | 5 | c, d |" in md
    assert "| d.example:4460 | d | certificate | certificate verification failed: certificate has expired |" in md
    assert "Total bound 5 s; took 1.2 s." in md
    table = catalog_refresh.report_table(report)
    assert table.splitlines()[1].startswith("CRITICAL  c.example:4460")  # worst first
    summary = catalog_refresh.report_summary(report)
    assert summary.startswith("CRITICAL: 5 server(s): 1 OK, 2 WARNING, 2 CRITICAL (2 probe(s) failed: certificate 1")


def test_a_pipe_in_a_reason_does_not_break_the_markdown_table():
    cat = catalog("a.example")
    results = [result("a.example", stage="nts-ke", error="odd | reason\nsecond line")]
    timing = dict(catalog_refresh.time_bound(1, 1, 1.0), elapsed_seconds=0.1, date_recheck=None,
                  total_bound_seconds=1.0, within_bound=True)  # fmt: skip
    report = catalog_refresh.build_report(
        cat, "c.yml", results, timing, 14, datetime.datetime.now(datetime.timezone.utc)
    )
    md = catalog_refresh.report_markdown(report)
    assert "odd \\| reason second line" in md
