"""`nts-catalog import`: the community list of NTS servers converted to the catalog schema and diffed against it.

Fixtures (tests/fixtures/catalog/) are small files written in the list's two layouts (the project's reference snapshot:
host/operator/location/vm/notes; upstream nts-sources.yml: hostname/owner with Markdown links) against a small catalog
in the shipped layout. The end-to-end test imports the reference snapshot itself (shared/reference beside the
checkout) against the shipped catalog.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_collections.nts.chrony.plugins.plugin_utils import catalog_cli, catalog_geo, catalog_import
from ansible_collections.nts.chrony.plugins.plugin_utils.catalog_schema import (
    ISO_3166_ALPHA2,
    REGIONS,
    validate_catalog,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "catalog"
SMALL = FIXTURES / "catalog-small.yml"
LIST = FIXTURES / "community-list.yml"
UPSTREAM = FIXTURES / "community-upstream.yml"
BAD = FIXTURES / "community-bad.yml"
SHIPPED = REPO / "roles" / "chrony_nts" / "files" / "nts_catalog.yml"
CLI = REPO / "bin" / "nts-catalog"
# CI runs in a fresh clone with a copy of shared/ beside it; on the build machine it is /work/shared.
REFERENCE_CANDIDATES = [
    REPO.parent / "shared" / "reference" / "public-nts-servers.yaml",
    Path("/work/shared/reference/public-nts-servers.yaml"),
]
# In the shipped catalog from the project brief, not from the community list.
BRIEF_ONLY = ["ntp-pool.rdem-systems.com", "nts.time.nl", "ntppool-nts.time.nl"]


def catalog_of(path):
    return validate_catalog(yaml.safe_load(Path(path).read_text()), source=str(path))


def import_list(source, catalog_path=SMALL, **kwargs):
    catalog = catalog_of(catalog_path)
    entries = catalog_import.source_entries(catalog_import.load_yaml(str(source)), str(source))
    converted = catalog_import.convert_source(entries, catalog, source_name=Path(source).name)
    kwargs.setdefault("updated", "2026-12-01")
    return catalog, catalog_import.diff_catalog(catalog, converted, **kwargs)


def added(result):
    return {c.entry["host"]: c for c in result.added}


def changed(result):
    return {conv.entry["host"]: changes for _old, conv, changes in result.changed}


# ---------------------------------------------------------------------------------------------------------------
# countries and regions


def test_every_iso_code_has_exactly_one_region():
    assert set(catalog_geo.REGION_OF) == set(ISO_3166_ALPHA2)
    assert set(catalog_geo.REGION_OF.values()) <= set(REGIONS)
    codes = [c for codes in catalog_geo._REGION_CODES.values() for c in codes.split()]
    assert len(codes) == len(set(codes)), "a code is in two regions"


def test_every_country_name_maps_to_an_assigned_code():
    assert set(catalog_geo.COUNTRY_CODE.values()) <= set(ISO_3166_ALPHA2)
    assert len(set(catalog_geo.COUNTRY_CODE.values())) == len(ISO_3166_ALPHA2)  # a name for every code


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("Germany", "DE"),
        ("UK", "GB"),
        ("United Kingdom", "GB"),
        ("Czech Republic", "CZ"),
        ("Czechia", "CZ"),
        ("The Netherlands", "NL"),
        ("US", "US"),
        ("United States", "US"),
        ("Côte d'Ivoire", "CI"),
        ("Russia", "RU"),
        ("South Korea", "KR"),
        ("se", "SE"),
        ("  sweden ", "SE"),
        ("Atlantis", None),
        ("EU", None),
    ],
)
def test_country_names(name, code):
    assert catalog_geo.country_code(name) == code


def test_regions_follow_the_shipped_catalog():
    """The shipped catalog's own country -> region choices agree with the table (RU europe, SG asia, ...)."""
    for entry in catalog_of(SHIPPED)["servers"]:
        if len(entry["countries"]) == 1:
            assert catalog_geo.REGION_OF[entry["countries"][0]] == entry["region"], entry


# ---------------------------------------------------------------------------------------------------------------
# conversion and diff


def test_list_format_is_converted_and_diffed():
    _catalog, result = import_list(LIST)
    assert result.problems == [] and result.warnings == []
    assert list(added(result)) == [
        "time3.example.net",
        "new.example.cz",
        "multi.example.eu",
        "uk.example.co.uk",
        "time4.example.net",
    ]
    assert changed(result) == {
        "time2.example.net": [("stratum", 1, 2)],
        "vm.example.io": [("virtualised", True, False)],
    }
    assert [e["host"] for e in result.missing] == ["old.example.org", "brief.example.net"]
    assert result.unchanged == ["time.example.net", "anycast.example.com", "distro.example.org"]
    assert result.has_changes and not result.pruned

    new = added(result)
    # a known operator: the catalog's provider id and its longer operator name, and the report says why
    time3 = new["time3.example.net"]
    assert (time3.entry["provider"], time3.entry["operator"]) == ("example-time", "Example Time (ETI)")
    assert time3.origin["provider"] == ("the catalog's provider of operator 'Example Time' (as for time.example.net)")
    assert (time3.entry["countries"], time3.entry["region"]) == (["AT"], "europe")
    # a new operator: a provider id made from the name, flagged for review
    cz = new["new.example.cz"].entry
    assert (cz["provider"], cz["operator"], cz["virtualised"], cz["notes"]) == (
        "jiri-example",
        "Jiří Example",
        True,
        "New in the list",
    )
    assert new["new.example.cz"].origin["provider"].startswith("NEW provider id")
    assert new["multi.example.eu"].entry["countries"] == ["FR", "DE"]
    uk = new["uk.example.co.uk"].entry
    assert (uk["countries"], uk["region"], uk["ntsport"], uk["port"]) == (["GB"], "europe", 4462, 123)
    t4 = new["time4.example.net"].entry
    assert (t4["ntsport"], t4["region"], t4["provider"]) == (4470, "north-america", "example-time")


def test_catalog_curation_is_kept_unless_the_list_says_otherwise():
    catalog, result = import_list(LIST)
    merged = {e["host"]: e for e in result.merged["servers"]}
    before = {e["host"]: e for e in catalog["servers"]}
    # "Example Time" is the catalog's "Example Time (ETI)"; "IPv4 and IPv6" is part of the catalog's notes
    assert merged["time.example.net"] == before["time.example.net"]
    # "Distro": no country, distro-only; the catalog's longer notes stay
    assert merged["distro.example.org"]["usage"] == "distro-only"
    assert merged["distro.example.org"]["notes"] == "Distro use only (Example Linux systems)"
    # "Anycast" in the notes, location "All"
    assert (merged["anycast.example.com"]["anycast"], merged["anycast.example.com"]["region"]) == (True, "global")
    # a list entry that does not state ntsport keeps the catalog's
    assert merged["brief.example.net"]["ntsport"] == 4461


def test_upstream_layout_with_markdown_links():
    _catalog, result = import_list(UPSTREAM)
    assert result.problems == []
    assert result.warnings == [
        "community-upstream.yml servers[3] (host 'ntp.example.ch'): field 'location': qualifier(s) '(Zurich)' ignored"
    ]
    assert result.unchanged == ["time.example.net", "anycast.example.com"]  # links stripped from host and owner
    new = added(result)
    lab = new["lab.example.hr"].entry
    assert (lab["provider"], lab["operator"], lab["countries"]) == ("example-lab", "Example Lab", ["HR"])
    ch = new["ntp.example.ch"].entry
    assert (ch["operator"], ch["countries"], ch["virtualised"], ch["notes"]) == (
        "Example CH",
        ["CH"],
        True,
        "IPv4 only",
    )


BAD_EXPECTED = [
    (0, None, "must be a mapping of fields", "'just a string'"),
    (1, None, "field 'host'", "missing"),
    (2, "https://url.example/ntp", "field 'host'", "is a URL, not a host name"),
    (3, "atlantis.example", "field 'location'", "'Atlantis' is not a country name or ISO 3166-1 alpha-2 code"),
    (4, "words.example", "field 'stratum'", "must be a whole number 1-15, got 'one'"),
    (5, "deep.example", "catalog field 'stratum'", "16 is out of range 1-15"),
    (6, "maybe.example", "field 'vm'", "must be true or false, got 'maybe'"),
    (8, "TWICE.example", "field 'host'", "twice.example is listed twice (first at servers[7])"),
    (9, "both.example", "field 'hostname'", "given together with 'host'"),
    (10, "nobody.example", "field 'operator'", "missing"),
    (11, "bad_label.example", "catalog field 'host'", "label 'bad_label' is not an RFC 1123 label"),
    (12, "ports.example:4461", "field 'ntsport'", "4462 disagrees with the port 4461 after the host name"),
    (13, "nostratum.example", "field 'stratum'", "missing"),
    (14, "linkonly.example", "field 'operator'", "holds no name"),
    (16, "region.example", "catalog field 'region'", "'europa' is not one of"),
    (17, "noloc.example", "field 'location'", "missing"),
]


def test_every_problem_names_the_entry_and_the_field():
    _catalog, result = import_list(BAD)
    problems = result.problems
    assert len(problems) == len(BAD_EXPECTED), "\n".join(problems)
    for (index, host, field, text), problem in zip(BAD_EXPECTED, problems):
        where = "community-bad.yml servers[%d]" % index + (" (host '%s')" % host if host else "")
        assert problem.startswith(where + ": "), problem
        assert field in problem and text in problem, problem
    assert "(did you mean 'europe'?)" in problems[-2] and "(from the list's 'region' field)" in problems[-2]
    assert result.warnings == [
        "community-bad.yml servers[15] (host 'extra.example'): field 'website': not a field of the list format, ignored"
    ]
    # only the good entries are in the diff
    assert list(added(result)) == ["twice.example", "extra.example"]


def test_an_entry_with_a_problem_changes_nothing(tmp_path):
    source = tmp_path / "list.yml"
    source.write_text(
        "servers:\n"
        "  - {host: time.example.net, stratum: 'x', location: Germany, operator: Example Time}\n"
        "  - {host: time2.example.net, stratum: 3, location: Germany, operator: Example Time}\n"
    )
    catalog, result = import_list(source)
    assert len(result.problems) == 1 and "servers[0] (host 'time.example.net'): field 'stratum'" in result.problems[0]
    assert "time.example.net" not in [e["host"] for e in result.missing]  # not "removed" either
    merged = {e["host"]: e for e in result.merged["servers"]}
    assert merged["time.example.net"] == catalog["servers"][0]
    assert changed(result) == {"time2.example.net": [("stratum", 1, 3)]}


def test_merged_catalog_order_date_and_prune():
    _catalog, result = import_list(LIST)
    assert [e["host"] for e in result.merged["servers"]] == [
        "time.example.net",
        "time2.example.net",
        "time3.example.net",  # right after the list's previous entry that the catalog has
        "anycast.example.com",
        "distro.example.org",
        "old.example.org",
        "vm.example.io",
        "new.example.cz",
        "multi.example.eu",
        "uk.example.co.uk",
        "time4.example.net",
        "brief.example.net",
    ]
    assert result.merged["updated"] == "2026-12-01"
    assert validate_catalog(result.merged) == result.merged

    _catalog, pruned = import_list(LIST, prune=True, keep=["brief.example.net"])
    hosts = [e["host"] for e in pruned.merged["servers"]]
    assert "old.example.org" not in hosts and "brief.example.net" in hosts
    assert [e["host"] for e in pruned.missing] == ["old.example.org"]

    # nothing changed: the catalog's date stays
    same = catalog_import.render_catalog(result.merged, catalog_import.catalog_header(SMALL.read_text()))
    merged_path = Path(os.environ.get("TMPDIR", "/tmp")) / ("nts-catalog-merged-%d.yml" % os.getpid())
    merged_path.write_text(same)
    try:
        _c, again = import_list(LIST, catalog_path=merged_path, updated="2030-01-01")
        assert not again.has_changes and again.merged["updated"] == "2026-12-01"
    finally:
        merged_path.unlink()


@pytest.mark.parametrize("path", [SHIPPED, SMALL], ids=["shipped", "fixture"])
def test_render_reproduces_a_catalog_byte_for_byte(path):
    text = path.read_text()
    catalog = catalog_of(path)
    assert catalog_import.render_catalog(catalog, catalog_import.catalog_header(text)) == text


def test_rendered_strings_round_trip():
    entry = dict(
        catalog_of(SMALL)["servers"][0],
        operator='Q "quoted" \\ back\tslash',
        notes="multi\nline, ünïcödé, #hash: colon",
    )
    text = catalog_import.render_catalog({"version": 1, "updated": "2026-12-01", "servers": [entry]})
    assert validate_catalog(yaml.safe_load(text))["servers"][0] == entry


# ---------------------------------------------------------------------------------------------------------------
# the command line


def cli(capsys, *argv):
    rc = catalog_cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_report_and_exit_codes(capsys, tmp_path):
    rc, out, err = cli(capsys, "import", LIST, "--catalog", SMALL)
    assert rc == 1, out + err  # differences
    assert out.startswith("Import of %s (10 entries) into %s (7 servers, updated 2026-01-15)\n" % (LIST, SMALL))
    assert "\n+ added (5)\n+ time3.example.net\n+     provider:    'example-time'   <- the catalog's provider" in out
    assert "\n~ changed (2)\n~ time2.example.net\n~     stratum:     1 -> 2\n" in out
    assert (
        "\n= not in the list, kept (2; --prune removes them)\n= old.example.org  (old-operator, Old Operator)\n" in out
    )
    assert out.endswith(
        "Summary: 5 added, 2 changed, 2 not in the list (kept), 3 unchanged, 0 problem(s), 0 warning(s)\n"
    )

    rc, out, _err = cli(capsys, "import", LIST, "--catalog", SMALL, "--prune", "--diff", "--updated", "2026-12-01")
    assert rc == 1
    assert "- removed: not in the list (2)" in out
    assert '-updated: "2026-01-15"\n+updated: "2026-12-01"\n' in out  # the unified diff
    assert "-  - host: old.example.org\n" in out and "+  - host: time3.example.net\n" in out

    rc, out, _err = cli(capsys, "import", BAD, "--catalog", SMALL, "--json")
    assert rc == 2
    import json

    data = json.loads(out)
    assert len(data["problems"]) == len(BAD_EXPECTED) and data["added"][0]["host"] == "twice.example"

    assert cli(capsys, "import", tmp_path / "nope.yml", "--catalog", SMALL)[0] == 3
    rc, _out, err = cli(capsys, "import", LIST, "--catalog", SMALL, "--keep", "x.example")
    assert rc == 3 and "--keep only makes sense with --prune" in err
    rc, _out, err = cli(capsys, "import", LIST, "--catalog", SMALL, "--prune", "--keep", "x.example")
    assert rc == 3 and "--keep x.example: not in the catalog" in err
    rc, _out, err = cli(capsys, "import", LIST, "--catalog", SMALL, "--updated", "yesterday")
    assert rc == 3 and "is not a date" in err
    notalist = tmp_path / "notalist.yml"
    notalist.write_text("servers: 3\n")
    rc, _out, err = cli(capsys, "import", notalist, "--catalog", SMALL)
    assert rc == 3 and "expected a mapping with a 'servers' list" in err


def test_cli_writes_only_new_files_or_with_write(capsys, tmp_path):
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(SMALL.read_text())
    original = catalog.read_text()
    out_file = tmp_path / "merged.yml"

    rc, _out, err = cli(capsys, "import", LIST, "--catalog", catalog, "--out", catalog)
    assert rc == 3 and "is the catalog itself: use --write" in err
    rc, _out, err = cli(capsys, "import", LIST, "--catalog", catalog, "--out", out_file, "--updated", "2026-12-01")
    assert rc == 1 and "wrote %s (12 servers, updated 2026-12-01)" % out_file in err
    assert catalog.read_text() == original  # the catalog itself is untouched
    merged = validate_catalog(yaml.safe_load(out_file.read_text()))
    assert len(merged["servers"]) == 12
    assert out_file.read_text().startswith(catalog_import.catalog_header(original))  # header comments kept
    rc, _out, err = cli(capsys, "import", LIST, "--catalog", catalog, "--out", out_file)
    assert rc == 3 and "exists: choose a new file or add --force" in err
    assert cli(capsys, "import", LIST, "--catalog", catalog, "--out", out_file, "--force")[0] == 1

    # problems: nothing is written
    rc, _out, err = cli(capsys, "import", BAD, "--catalog", catalog, "--out", tmp_path / "bad.yml")
    assert rc == 2 and "nothing written" in err and not (tmp_path / "bad.yml").exists()

    # --write replaces the catalog; then the same import finds nothing to change and does not rewrite it
    rc, _out, err = cli(capsys, "import", LIST, "--catalog", catalog, "--write", "--updated", "2026-12-01")
    assert rc == 1 and catalog.read_text() == out_file.read_text()
    rc, out, err = cli(capsys, "import", LIST, "--catalog", catalog, "--write")
    assert rc == 0 and "already up to date; not rewritten" in err
    assert "Summary: 0 added, 0 changed, 2 not in the list (kept), 10 unchanged" in out
    assert cli(capsys, "import", LIST, "--catalog", catalog, "--write", "--out", out_file)[0] == 3


def test_cli_wrapper_runs_from_anywhere(tmp_path):
    """bin/nts-catalog finds the collection relative to itself, whatever the working directory."""
    out = subprocess.run([str(CLI), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False)
    assert out.returncode == 0 and "refresh" in out.stdout and "import" in out.stdout
    out = subprocess.run([str(CLI)], capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False)
    assert out.returncode == 3 and "required" in out.stderr  # usage errors are UNKNOWN, never argparse's 2


# ---------------------------------------------------------------------------------------------------------------
# end to end: the project's reference snapshot of the community list against the shipped catalog


def reference_list():
    for path in REFERENCE_CANDIDATES:
        if path.is_file():
            return path
    pytest.skip(
        "the reference snapshot of the community list is absent (looked for %s): shared/reference is not beside "
        "this checkout" % " and ".join(str(p) for p in REFERENCE_CANDIDATES)
    )


def test_import_of_the_reference_list_reproduces_the_shipped_catalog(capsys, tmp_path):
    """The shipped catalog was made from this list: importing it converts every entry and changes nothing."""
    reference = reference_list()
    catalog, result = import_list(reference, catalog_path=SHIPPED)
    assert len(result.converted) >= 90
    assert result.problems == [] and result.warnings == []
    assert [c.entry["host"] for c in result.added] == []
    assert changed(result) == {}
    assert sorted(e["host"] for e in result.missing) == sorted(BRIEF_ONLY)
    assert len(result.unchanged) == len(catalog["servers"]) - len(BRIEF_ONLY)

    out_file = tmp_path / "nts_catalog.yml"
    rc, out, err = cli(capsys, "import", reference, "--catalog", SHIPPED, "--out", out_file)
    assert rc == 0, out + err
    assert out_file.read_text() == SHIPPED.read_text()  # byte for byte: an update is a reviewed diff, nothing else

    # a stale copy of the catalog (one server gone, one stratum wrong) is brought back by the import
    stale = catalog_of(SHIPPED)
    gone = stale["servers"].pop(10)
    stale["servers"][20]["stratum"] = 9
    stale_file = tmp_path / "stale.yml"
    stale_file.write_text(catalog_import.render_catalog(stale, catalog_import.catalog_header(SHIPPED.read_text())))
    fixed_file = tmp_path / "fixed.yml"
    rc, out, _err = cli(
        capsys, "import", reference, "--catalog", stale_file, "--out", fixed_file, "--updated", stale["updated"]
    )
    assert rc == 1
    assert "+ added (1)\n+ %s\n" % gone["host"] in out
    assert (
        "~ %s\n~     stratum:     9 -> %d\n" % (stale["servers"][20]["host"], catalog["servers"][21]["stratum"]) in out
    )
    assert fixed_file.read_text() == SHIPPED.read_text()
