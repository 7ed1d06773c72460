"""NTS catalog: the shipped data, schema validation, merging, the selection policy, PEM and option checks.

Everything runs the real code in plugins/module_utils/nts_catalog.py (on sys.path via tests/conftest.py); the
option table is cross-checked against the chronyd installed here with ``chronyd -x -p`` (parse only).
"""

from __future__ import annotations

import base64
import copy
import datetime
import importlib.util
import random
import shutil
import subprocess
from pathlib import Path

import nts_catalog as nc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from nts_catalog import NtsCatalogError

REPO = Path(__file__).resolve().parents[2]
CATALOG_FILE = REPO / "roles" / "chrony_nts" / "files" / "nts_catalog.yml"
REFERENCE_LIST = Path("/work/shared/reference/public-nts-servers.yaml")


# ----------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def shipped() -> dict:
    return yaml.safe_load(CATALOG_FILE.read_text(encoding="utf-8"))


def entry(host: str, provider: str = "prov-a", **kw) -> dict:
    base = {
        "host": host,
        "provider": provider,
        "operator": provider.upper(),
        "countries": ["DE"],
        "region": "europe",
        "stratum": 1,
    }
    base.update(kw)
    return base


def catalog(*entries: dict) -> dict:
    return {"version": 1, "updated": "2026-01-01", "servers": list(entries)}


def small_catalog() -> dict:
    """Three providers with two servers each plus a distro-only and an anycast entry."""
    return catalog(
        entry("a1.example.net", "prov-a", countries=["DE"], stratum=1),
        entry("a2.example.net", "prov-a", countries=["DE"], stratum=2),
        entry("b1.example.net", "prov-b", countries=["NL"], stratum=1),
        entry("b2.example.net", "prov-b", countries=["NL"], stratum=3),
        entry("c1.example.net", "prov-c", countries=["US"], region="north-america", stratum=2),
        entry("c2.example.net", "prov-c", countries=["US"], region="north-america", stratum=2, virtualised=True),
        entry("distro.example.net", "prov-d", countries=[], region="global", stratum=2, usage="distro-only"),
        entry("any.example.net", "prov-e", countries=[], region="global", stratum=3, anycast=True),
    )


def errors_of(func, *args, **kwargs) -> list[str]:
    with pytest.raises(NtsCatalogError) as info:
        func(*args, **kwargs)
    assert info.value.errors, "NtsCatalogError without messages"
    return info.value.errors


def one_error(func, *args, **kwargs) -> str:
    errs = errors_of(func, *args, **kwargs)
    assert len(errs) == 1, errs
    return errs[0]


def hosts(sources: list[dict]) -> list[str]:
    return [s["host"] for s in sources]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def ca_pem() -> tuple[str, str]:
    """A real self-signed EC P-256 CA: (certificate PEM, private key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("site ca"))
        .issuer_name(_name("site ca"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


# ----------------------------------------------------------------------------------------------- shipped data

REQUIRED_PROVIDERS = {
    # host: (provider, countries, stratum, anycast)
    "ntp-pool.rdem-systems.com": ("rdem-systems", ["FR", "DE"], 2, False),
    "nts.netnod.se": ("netnod", ["SE"], 1, True),
    "ptbtime1.ptb.de": ("ptb", ["DE"], 1, False),
    "time.cloudflare.com": ("cloudflare", [], 3, True),
    "nts.time.nl": ("sidn-labs", ["NL"], 1, False),
    "ntppool-nts.time.nl": ("ntppool-trifecta", ["NL"], 2, False),
}


def test_shipped_catalog_validates(shipped):
    norm = nc.validate_catalog(shipped)
    assert norm["version"] == 1
    datetime.date.fromisoformat(norm["updated"])
    assert len(norm["servers"]) == len(shipped["servers"]) >= 95


def test_shipped_catalog_has_the_six_required_providers(shipped):
    by_host = {e["host"]: e for e in nc.validate_catalog(shipped)["servers"]}
    for host, (provider, countries, stratum, anycast) in REQUIRED_PROVIDERS.items():
        got = by_host[host]
        assert (got["provider"], got["countries"], got["stratum"], got["anycast"]) == (
            provider,
            countries,
            stratum,
            anycast,
        ), host
        assert got["usage"] == "public"
    assert len({REQUIRED_PROVIDERS[h][0] for h in REQUIRED_PROVIDERS}) == 6


def test_shipped_entries_spell_out_flags_and_header_keeps_caveats(shipped):
    for raw in shipped["servers"]:
        assert {"anycast", "virtualised", "usage"} <= set(raw), raw["host"]
    text = CATALOG_FILE.read_text(encoding="utf-8")
    for caveat in ("No endorsement", "Entries go stale", "re-probe"):
        assert caveat in text


def test_ubuntu_servers_are_distro_only(shipped):
    ubuntu = [e for e in nc.validate_catalog(shipped)["servers"] if e["provider"] == "ubuntu"]
    assert len(ubuntu) == 4
    assert {e["usage"] for e in ubuntu} == {"distro-only"}


@pytest.mark.skipif(not REFERENCE_LIST.exists(), reason="project reference list not on this machine")
def test_every_reference_server_is_in_the_catalog_with_its_facts(shipped):
    ref = yaml.safe_load(REFERENCE_LIST.read_text(encoding="utf-8"))["servers"]
    by_host = {e["host"]: e for e in nc.validate_catalog(shipped)["servers"]}
    for item in ref:
        got = by_host[item["host"].lower()]
        assert got["stratum"] == item["stratum"], item["host"]
        assert got["virtualised"] == item["vm"], item["host"]
        assert got["anycast"] == (item.get("notes") == "Anycast"), item["host"]
        assert (got["usage"] == "distro-only") == (item.get("notes") == "Distro use only"), item["host"]


# ----------------------------------------------------------------------------------------------- schema errors


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("bad_host.example", "label 'bad_host' is not an RFC 1123 label"),
        ("-lead.example", "label '-lead' is not an RFC 1123 label"),
        ("a..example", "has an empty label"),
        ("ntp.example.", "must not end with a dot"),
        ("x" * 64 + ".example", "is not an RFC 1123 label"),
        ("1.2.3.999", "neither a valid IPv4 address nor a host name"),
        ("2001:db8::zz", "is not a valid IPv6 address"),
        ("", "must not be empty"),
    ],
)
def test_bad_hostname_is_named(host, why):
    msg = one_error(nc.validate_catalog, catalog(entry(host)))
    assert msg.startswith("catalog servers[0]")
    assert "host '%s'" % host in msg and why in msg


@pytest.mark.parametrize("host", ["ntp1.example.net", "192.0.2.10", "2001:db8::1", "Time.Example.ORG", "a-b.c0"])
def test_good_hostnames_pass(host):
    assert nc.validate_catalog(catalog(entry(host)))["servers"][0]["host"] == host.lower()


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("port", 0, "catalog servers[0] (host 'p.example'): port 0 is out of range 1-65535"),
        ("port", 65536, "catalog servers[0] (host 'p.example'): port 65536 is out of range 1-65535"),
        ("ntsport", 0, "catalog servers[0] (host 'p.example'): ntsport 0 is out of range 1-65535"),
        ("ntsport", 65536, "catalog servers[0] (host 'p.example'): ntsport 65536 is out of range 1-65535"),
        ("stratum", 0, "catalog servers[0] (host 'p.example'): stratum 0 is out of range 1-15"),
        ("stratum", 16, "catalog servers[0] (host 'p.example'): stratum 16 is out of range 1-15"),
        ("stratum", "2", "catalog servers[0] (host 'p.example'): stratum must be an integer, got '2'"),
        ("stratum", True, "catalog servers[0] (host 'p.example'): stratum must be an integer, got true"),
        ("anycast", "yes", "catalog servers[0] (host 'p.example'): anycast must be a boolean (true/false), got 'yes'"),
        (
            "usage",
            "private",
            "catalog servers[0] (host 'p.example'): usage 'private' is not one of public, distro-only",
        ),
        ("region", "europa", "region 'europa' is not one of"),
        ("countries", ["UK"], "countries[0] 'UK' is not an ISO 3166-1 alpha-2 code (use 'GB')"),
        ("countries", ["DE", "de"], "countries[1] 'DE' is listed twice"),
        ("countries", "DE", "countries must be a list of ISO 3166-1 alpha-2 codes, got 'DE'"),
        ("provider", "Net Nod", "provider 'Net Nod' must be a lower-case slug id"),
    ],
)
def test_bad_field_values_are_named(field, value, expected):
    msg = one_error(nc.validate_catalog, catalog(entry("p.example", **{field: value})))
    assert expected in msg


def test_unknown_and_missing_keys():
    bad = entry("k.example", stratm=2)
    del bad["region"]
    errs = errors_of(nc.validate_catalog, catalog(bad))
    assert any("unknown key 'stratm' (did you mean 'stratum'?)" in e for e in errs), errs
    assert any("required key 'region' is missing" in e for e in errs), errs
    top = catalog(entry("k.example"))
    top["servrs"] = []
    msg = one_error(nc.validate_catalog, top)
    assert msg == "catalog: unknown top-level key 'servrs'; allowed keys: version, updated, servers"


def test_catalog_top_level_checks():
    errs = errors_of(nc.validate_catalog, {"version": 2, "updated": "2026-13-01", "servers": {}})
    assert "catalog: version 2 is not supported (this code reads version 1)" in errs
    assert "catalog: updated '2026-13-01' is not a valid date" in errs
    assert any("catalog servers: must be a list of server entries" in e for e in errs)
    assert nc.validate_catalog(catalog())["servers"] == []
    dated = catalog(entry("d.example"))
    dated["updated"] = datetime.date(2026, 7, 22)  # unquoted YAML date
    assert nc.validate_catalog(dated)["updated"] == "2026-07-22"


def test_duplicate_host_in_catalog_is_case_insensitive():
    msg = one_error(nc.validate_catalog, catalog(entry("dup.example"), entry("DUP.example", "prov-b")))
    assert msg == "catalog servers[1] (host 'DUP.example'): duplicate host, already listed at catalog servers[0]"


def test_all_errors_are_collected_not_only_the_first():
    bad = catalog(entry("ok.example", stratum=0, port=0), entry("bad host"), entry("ok.example"))
    errs = errors_of(nc.validate_catalog, bad)
    assert len(errs) == 4, errs
    text = str(NtsCatalogError(errs))
    assert text.startswith("4 errors:\n- ")


# ----------------------------------------------------------------------------------------------- merge


def test_extra_entries_are_appended_and_override_replaces_in_place():
    base = small_catalog()
    extra = [
        entry("new.example.org", "prov-new", countries=["FR"]),
        entry("B1.example.net", "prov-b", countries=["BE"], stratum=2, override=True),
    ]
    merged = nc.merge_catalog(base, extra)
    got = hosts(merged["servers"])
    assert got[-1] == "new.example.org" and len(got) == len(base["servers"]) + 1
    b1 = merged["servers"][2]
    assert b1["host"] == "b1.example.net" and b1["countries"] == ["BE"] and b1["stratum"] == 2
    assert "override" not in b1
    assert base["servers"][2]["countries"] == ["NL"], "input must not be modified"


def test_extra_with_shipped_host_needs_override():
    msg = one_error(nc.merge_catalog, small_catalog(), [entry("a1.example.net", "prov-x")])
    assert msg == (
        "catalog_extra[0] (host 'a1.example.net'): host is already in the catalog at servers[0] "
        "(provider 'prov-a'); set 'override: true' on this entry to replace it"
    )


def test_override_of_unknown_host_and_duplicate_extras_are_errors():
    extra = [entry("typo.example.net", override=True), entry("x.example"), entry("X.example")]
    errs = errors_of(nc.merge_catalog, small_catalog(), extra)
    assert "catalog_extra[2] (host 'X.example'): duplicate host, already listed at catalog_extra[1]" in errs
    assert (
        "catalog_extra[0] (host 'typo.example.net'): override is true but the catalog has no entry with this host"
        in errs
    )


def test_replace_uses_only_the_extra_entries():
    merged = nc.merge_catalog(small_catalog(), [entry("only.example")], replace=True)
    assert hosts(merged["servers"]) == ["only.example"]
    msg = one_error(nc.merge_catalog, small_catalog(), [entry("a1.example.net", override=True)], replace=True)
    assert "(catalog_replace is true)" in msg
    assert "catalog_replace must be a boolean" in one_error(nc.merge_catalog, small_catalog(), [], replace="yes")


def test_merge_reports_errors_of_both_inputs():
    bad_base = catalog(entry("a.example", stratum=16))
    errs = errors_of(nc.merge_catalog, bad_base, [entry("b.example", port=0)])
    assert any("catalog servers[0] (host 'a.example'): stratum 16" in e for e in errs)
    assert any("catalog_extra[0] (host 'b.example'): port 0" in e for e in errs)


# ----------------------------------------------------------------------------------------------- policy


def test_default_policy_spreads_operators_and_skips_distro_only():
    chosen = nc.select_servers(small_catalog())
    assert len(chosen) == 4
    assert len({s["provider"] for s in chosen}) == 4
    assert "prov-d" not in {s["provider"] for s in chosen}
    # rank: stratum 1 first (a1 before b1 by name), then stratum 2 c1 (physical before virtualised), anycast e
    assert hosts(chosen) == ["a1.example.net", "b1.example.net", "c1.example.net", "any.example.net"]


def test_null_values_mean_default():
    """Ansible argument specs fill unset suboptions with None: that must mean 'default', not 'nothing'."""
    pol = dict.fromkeys(nc.POLICY_DEFAULTS)
    assert nc.select_servers(small_catalog(), pol) == nc.select_servers(small_catalog())
    extra = [dict(entry("n.example"), anycast=None, virtualised=None, port=None, usage=None, notes=None, override=None)]
    merged = nc.merge_catalog(small_catalog(), extra)
    assert merged["servers"][-1] == dict(
        entry("n.example"), anycast=False, virtualised=False, port=123, ntsport=4460, usage="public", notes=""
    )
    site = [{"host": "s.corp", "port": None, "ntsport": None, "certset": None, "ca": None, "ca_file": None}]
    site[0].update({"operator": None, "options": None})
    got = nc.select_servers(None, {"min_sources": 1}, site)[0]
    assert (got["operator"], got["port"], got["certset"], got["options"]) == ("site", None, None, [])


def test_distro_only_is_used_only_when_allowed():
    chosen = nc.select_servers(small_catalog(), {"usage": ["public", "distro-only"], "count": 5})
    assert "distro.example.net" in hosts(chosen)
    only_distro = nc.select_servers(small_catalog(), {"usage": ["distro-only"], "count": 1, "min_sources": 1})
    assert hosts(only_distro) == ["distro.example.net"]


def test_round_robin_when_fewer_providers_than_count():
    chosen = nc.select_servers(small_catalog(), {"providers_allow": ["prov-a", "prov-b"], "count": 4})
    assert hosts(chosen) == ["a1.example.net", "b1.example.net", "a2.example.net", "b2.example.net"]


def test_preference_ordering():
    pol = {"prefer_countries": ["US", "NL"], "count": 4}
    assert hosts(nc.select_servers(small_catalog(), pol)) == [
        "c1.example.net",
        "b1.example.net",
        "a1.example.net",
        "any.example.net",
    ]
    pol = {"prefer_regions": ["north-america"], "count": 3}
    assert hosts(nc.select_servers(small_catalog(), pol))[0] == "c1.example.net"


def test_max_stratum_countries_anycast_and_virtualised_filters():
    chosen = nc.select_servers(small_catalog(), {"max_stratum": 1, "count": 2, "min_sources": 2})
    assert {s["stratum"] for s in chosen} == {1}
    chosen = nc.select_servers(small_catalog(), {"countries": ["us"], "count": 2, "min_sources": 2})
    assert hosts(chosen) == ["c1.example.net", "c2.example.net"]
    chosen = nc.select_servers(small_catalog(), {"include_anycast": False, "count": 6, "min_sources": 3})
    assert not any(s["anycast"] for s in chosen)
    chosen = nc.select_servers(small_catalog(), {"include_virtualised": False, "count": 6})
    assert "c2.example.net" not in hosts(chosen)


def test_deny_and_exclude():
    chosen = nc.select_servers(
        small_catalog(), {"providers_deny": ["prov-a"], "exclude_hosts": ["B1.example.net"], "count": 3}
    )
    # c1 (stratum 2) ranks first, then the stratum-3 anycast entry before the unicast b2
    assert hosts(chosen) == ["c1.example.net", "any.example.net", "b2.example.net"]


def test_selection_is_deterministic_across_shuffled_input(shipped):
    pol = {"prefer_countries": ["DE", "NL"], "count": 6, "min_operators": 5}
    expected = nc.select_servers(shipped, pol)
    for seed in range(20):
        shuffled = copy.deepcopy(shipped)
        random.Random(seed).shuffle(shuffled["servers"])
        assert nc.select_servers(shuffled, pol) == expected
    assert len({s["provider"] for s in expected}) == 6


def test_shipped_catalog_default_selection(shipped):
    chosen = nc.select_servers(shipped)
    assert len(chosen) == 4 and len({s["provider"] for s in chosen}) == 4
    assert all(s["usage"] == "public" for s in chosen)
    assert chosen[0]["host"] == "nts.netnod.se"  # stratum 1 anycast ranks first


def test_output_shape_for_the_template():
    site = [{"host": "ntp.corp.example", "port": 11123, "ntsport": 4460, "options": ["minpoll 0", "iburst"]}]
    chosen = nc.select_servers(small_catalog(), {"count": 4}, site)
    assert [s["site"] for s in chosen] == [True, False, False, False]
    first, second = chosen[0], chosen[1]
    assert first == {
        "host": "ntp.corp.example",
        "port": 11123,
        "ntsport": None,
        "certset": None,
        "ca": None,
        "ca_file": None,
        "operator": "site",
        "provider": "site",
        "stratum": None,
        "countries": [],
        "region": None,
        "anycast": False,
        "virtualised": False,
        "usage": "site",
        "site": True,
        "options": ["minpoll 0", "iburst"],
    }
    assert second["port"] is None and second["ntsport"] is None and second["options"] == []
    assert second["certset"] is None and second["site"] is False


def test_site_servers_count_toward_count_and_are_never_dropped():
    site = [{"host": "10.0.0.%d" % i, "operator": "corp"} for i in range(1, 6)]
    chosen = nc.select_servers(small_catalog(), {"count": 4}, site)
    assert hosts(chosen) == ["10.0.0.%d" % i for i in range(1, 6)]
    only_site = nc.select_servers(None, {"count": 2, "min_sources": 2}, site[:2])
    assert hosts(only_site) == ["10.0.0.1", "10.0.0.2"]


def test_site_ca_gets_its_own_certset(ca_pem):
    cert, _ = ca_pem
    site = [
        {"host": "a.corp.example", "ca": cert},
        {"host": "b.corp.example", "ca": cert},
        {"host": "c.corp.example", "ca_file": "/etc/chrony/lab-ca.pem", "certset": 1},
        {"host": "d.corp.example", "ca_file": "/etc/chrony/other-ca.pem"},
        {"host": "e.corp.example"},
    ]
    chosen = nc.select_servers(None, {"min_sources": 1, "count": 5}, site)
    # set 1 is taken explicitly, so the shared PEM CA gets 2 and the other file 3; no CA -> None (set 0)
    assert [s["certset"] for s in chosen] == [2, 2, 1, 3, None]
    assert chosen[0]["ca"] == cert and chosen[2]["ca_file"] == "/etc/chrony/lab-ca.pem"


# ----------------------------------------------------------------------------------------------- policy errors


def test_unknown_provider_in_allow_or_deny_is_named():
    msg = one_error(nc.select_servers, small_catalog(), {"providers_allow": ["prov-x"]})
    assert msg.startswith("policy: providers_allow[0] 'prov-x' is not a provider id in the catalog")
    assert "known providers: prov-a, prov-b, prov-c, prov-d, prov-e" in msg
    msg = one_error(nc.select_servers, small_catalog(), {"providers_deny": ["prov-a", "netnood"]})
    assert msg.startswith("policy: providers_deny[1] 'netnood' is not a provider id in the catalog")


def test_typo_suggestion_on_shipped_catalog(shipped):
    msg = one_error(nc.select_servers, shipped, {"providers_allow": ["netnood"]})
    assert "(did you mean 'netnod'?)" in msg


def test_empty_selection_names_the_filters():
    msg = one_error(nc.select_servers, small_catalog(), {"countries": ["SE"]})
    assert msg == (
        "no NTS source selected: catalog has 8 server(s); usage removed 1 (usage not in public); countries removed "
        "7 (no country in SE); 0 catalog server(s) remain from 0 provider(s); 0 site server(s)"
    )


def test_fewer_sources_than_minimum_names_the_numbers():
    msg = one_error(nc.select_servers, small_catalog(), {"countries": ["DE", "NL"], "max_stratum": 1})
    assert msg.startswith("only 2 NTS source(s) selected but min_sources is 3 (count 4): catalog has 8 server(s)")
    assert "countries removed 3 (no country in DE, NL)" in msg
    assert "max_stratum removed 2 (stratum above 1)" in msg


def test_impossible_operator_diversity_is_an_error():
    msg = one_error(nc.select_servers, small_catalog(), {"providers_allow": ["prov-a", "prov-b"], "min_operators": 3})
    assert msg.startswith("only 2 distinct operator(s) among the 4 selected sources but min_operators is 3")
    assert "2 operator(s) available after the filters (prov-a, prov-b)" in msg


def test_policy_value_errors_are_collected():
    pol = {
        "count": 0,
        "max_stratum": 16,
        "countries": ["UK"],
        "prefer_regions": ["europa"],
        "usage": ["internal"],
        "include_anycast": "no",
        "exclude_host": [],
        "providers_allow": "prov-a",
    }
    errs = errors_of(nc.select_servers, small_catalog(), pol)
    expected = [
        "policy: count 0 is out of range 1-64",
        "policy: max_stratum 16 is out of range 1-15",
        "policy: countries[0] 'UK' is not an ISO 3166-1 alpha-2 code (use 'GB')",
        "policy: include_anycast must be a boolean (true/false), got 'no'",
        "policy: providers_allow must be a list of strings, got 'prov-a'",
        "policy: usage[0] 'internal' is not one of public, distro-only",
    ]
    for text in expected:
        assert text in errs, (text, errs)
    assert any(e.startswith("policy: unknown key 'exclude_host' (did you mean 'exclude_hosts'?)") for e in errs)
    assert any(e.startswith("policy: prefer_regions[0] 'europa' is not one of") for e in errs)


def test_policy_consistency_errors():
    assert (
        one_error(nc.select_servers, small_catalog(), {"count": 2}) == "policy: min_sources 3 is greater than count 2"
    )
    msg = one_error(nc.select_servers, small_catalog(), {"providers_allow": ["prov-a"], "providers_deny": ["prov-a"]})
    assert msg == "policy: provider(s) 'prov-a' are in both providers_allow and providers_deny"
    msg = one_error(nc.select_servers, small_catalog(), {"exclude_hosts": ["a3.example.net"]})
    assert msg.startswith("policy: exclude_hosts[0] 'a3.example.net' is not a host in the catalog")


# ----------------------------------------------------------------------------------------------- site errors


def test_site_server_duplicates_with_catalog_and_within_site():
    msg = one_error(nc.select_servers, small_catalog(), {}, [{"host": "A1.example.net"}])
    assert msg.startswith("site_servers[0] (host 'a1.example.net'): host is also in the catalog at servers[0]")
    msg = one_error(nc.select_servers, small_catalog(), {}, [{"host": "x.corp"}, {"host": "X.corp"}])
    assert msg == "site_servers[1] (host 'X.corp'): duplicate host, already listed at site_servers[0]"


@pytest.mark.parametrize(
    ("site", "expected"),
    [
        ({"host": "s.corp", "port": 0}, "site_servers[0] (host 's.corp'): port 0 is out of range 1-65535"),
        (
            {"host": "s.corp", "ntsport": 65536},
            "site_servers[0] (host 's.corp'): ntsport 65536 is out of range 1-65535",
        ),
        ({"host": "s corp"}, "site_servers[0] (host 's corp'): host 's corp' label 's corp' is not an RFC 1123 label"),
        ({"host": "s.corp", "cert": "x"}, "site_servers[0] (host 's.corp'): unknown key 'cert'"),
        ({"port": 123}, "site_servers[0]: required key 'host' is missing"),
        ({"host": "s.corp", "certset": -1}, "site_servers[0] (host 's.corp'): certset -1 is out of range"),
        (
            {"host": "s.corp", "ca_file": "ca.pem"},
            "site_servers[0] (host 's.corp'): ca_file 'ca.pem' must be an absolute path on the managed host",
        ),
        (
            {"host": "s.corp", "ca": "not a certificate"},
            "site_servers[0] (host 's.corp'): ca: contains no PEM CERTIFICATE block",
        ),
        (
            {"host": "s.corp", "options": ["minpol 0"]},
            "site_servers[0] (host 's.corp'): options[0]: unknown chrony server option 'minpol' (did you mean "
            "'minpoll'",
        ),
        (
            {"host": "s.corp", "options": ["minpoll x"]},
            "site_servers[0] (host 's.corp'): options[0]: option 'minpoll' value 'x' is not an integer",
        ),
        (
            {"host": "s.corp", "options": ["minpoll -8"]},
            "site_servers[0] (host 's.corp'): options[0]: option 'minpoll' value -8 is out of range -7 to 24",
        ),
        (
            {"host": "s.corp", "options": ["maxdelay fast"]},
            "site_servers[0] (host 's.corp'): options[0]: option 'maxdelay' value 'fast' is not a number",
        ),
        (
            {"host": "s.corp", "options": ["iburst 3"]},
            "site_servers[0] (host 's.corp'): options[0]: option 'iburst' takes no value, got '3'",
        ),
        (
            {"host": "s.corp", "options": ["port 123"]},
            "site_servers[0] (host 's.corp'): options[0] 'port 123' is not allowed here: set it with the 'port' key",
        ),
        (
            {"host": "s.corp", "options": ["key 5"]},
            "options[0] 'key 5' is not allowed here: symmetric keys cannot be combined with NTS",
        ),
        (
            {"host": "s.corp", "options": ["minpoll 6", "maxpoll 4"]},
            "site_servers[0] (host 's.corp'): options minpoll 6 is greater than maxpoll 4",
        ),
        (
            {"host": "s.corp", "options": ["iburst", "iburst"]},
            "site_servers[0] (host 's.corp'): options[1]: option 'iburst' is given more than once",
        ),
        ({"host": "s.corp", "options": "iburst"}, "options must be a list of strings such as 'minpoll 0'"),
        (
            {"host": "s.corp", "options": ["extfield ABCD"]},
            "option 'extfield' value 'ABCD' is not a known type (F323, F324, 10A)",
        ),
    ],
)
def test_site_server_errors_are_named(site, expected):
    msg = one_error(nc.select_servers, None, {"min_sources": 1}, [site])
    assert expected in msg, msg


def test_site_ca_and_ca_file_conflict_and_certset_zero(ca_pem):
    cert, _ = ca_pem
    msg = one_error(nc.select_servers, None, {"min_sources": 1}, [{"host": "s.corp", "ca": cert, "ca_file": "/x.pem"}])
    assert msg == "site_servers[0] (host 's.corp'): give either 'ca' (PEM text) or 'ca_file' (path), not both"
    msg = one_error(nc.select_servers, None, {"min_sources": 1}, [{"host": "s.corp", "ca": cert, "certset": 0}])
    assert msg.startswith("site_servers[0] (host 's.corp'): certset 0 is the default set trusted for every NTS source")


def test_private_key_pasted_as_site_ca(ca_pem):
    _, key = ca_pem
    msg = one_error(nc.select_servers, None, {"min_sources": 1}, [{"host": "s.corp", "ca": key}])
    assert msg.startswith("site_servers[0] (host 's.corp'): ca: contains a PRIVATE KEY block")
    body_line = key.splitlines()[1]
    assert body_line not in msg, "the key material must never be echoed"


# ----------------------------------------------------------------------------------------------- PEM


def test_pem_chain_is_counted(ca_pem):
    cert, _ = ca_pem
    assert nc.check_pem_certificates(cert) == 1
    assert nc.check_pem_certificates("subject=CN = site ca\n" + cert + "\n" + cert) == 2


@pytest.mark.parametrize(
    "label", ["RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY"]
)
def test_any_private_key_block_is_refused(ca_pem, label):
    cert, _ = ca_pem
    text = cert + "-----BEGIN %s-----\nAAAA\n-----END %s-----\n" % (label, label)
    msg = one_error(nc.check_pem_certificates, text, "chrony_nts_site_servers[0].ca")
    assert msg.startswith("chrony_nts_site_servers[0].ca: contains a PRIVATE KEY block")


def test_real_rsa_key_is_refused():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    assert "PRIVATE KEY block" in one_error(nc.check_pem_certificates, pem)


def test_malformed_pem_blocks(ca_pem):
    cert, _ = ca_pem
    lines = cert.strip().splitlines()
    assert one_error(nc.check_pem_certificates, "hello") == (
        "ca: contains no PEM CERTIFICATE block (-----BEGIN CERTIFICATE-----)"
    )
    unterminated = "\n".join(lines[:-1])
    assert "has 1 BEGIN line(s) but only 0 complete PEM block(s)" in one_error(nc.check_pem_certificates, unterminated)
    bad_b64 = "\n".join([lines[0], "!!!notbase64!!!", lines[-1]])
    assert one_error(nc.check_pem_certificates, bad_b64) == "ca: PEM block #1 (CERTIFICATE) body is not valid base64"
    truncated = "\n".join([lines[0], *lines[1:3], lines[-1]])
    assert "does not decode to a DER certificate" in one_error(nc.check_pem_certificates, truncated)
    not_der = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n"
    assert "does not decode to a DER certificate" in one_error(nc.check_pem_certificates, not_der)
    crl = "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n"
    assert one_error(nc.check_pem_certificates, crl) == "ca: PEM block #1 is 'X509 CRL', expected 'CERTIFICATE'"
    assert "must be PEM text" in one_error(nc.check_pem_certificates, b"bytes")


# ----------------------------------------------------------------------------------------------- chronyd agreement


CHRONY_43_OPTIONS = {
    name: sample
    for name, sample in {
        "minpoll": "minpoll -7",
        "maxpoll": "maxpoll 24",
        "iburst": "iburst",
        "burst": "burst",
        "maxdelay": "maxdelay 0.3",
        "maxdelayratio": "maxdelayratio 2.5",
        "maxdelaydevratio": "maxdelaydevratio 10",
        "maxdelayquant": "maxdelayquant 0.2",
        "mindelay": "mindelay 0.0001",
        "asymmetry": "asymmetry -0.5",
        "offset": "offset -5e-05",
        "minsamples": "minsamples 4",
        "maxsamples": "maxsamples 32",
        "filter": "filter 3",
        "offline": "offline",
        "auto_offline": "auto_offline",
        "prefer": "prefer",
        "noselect": "noselect",
        "trust": "trust",
        "require": "require",
        "xleave": "xleave",
        "polltarget": "polltarget 60",
        "presend": "presend 9",
        "minstratum": "minstratum 3",
        "version": "version 4",
        "copy": "copy",
        "extfield": "extfield f323",
    }.items()
}
NEWER_THAN_43 = {"ipv4", "ipv6", "maxunreach"}


def test_option_table_is_covered_by_the_chronyd_check():
    assert set(nc.SERVER_OPTIONS) == set(CHRONY_43_OPTIONS) | NEWER_THAN_43


@pytest.mark.skipif(shutil.which("chronyd") is None, reason="chronyd is not installed")
def test_chronyd_parses_every_validated_option(tmp_path):
    """Each option as normalized by validate_server_options is accepted by the local chronyd (-p parses only)."""
    version = subprocess.run(["chronyd", "-v"], capture_output=True, text=True, check=True).stdout
    failures = []
    for name, sample in sorted(CHRONY_43_OPTIONS.items()):
        options, errs = nc.validate_server_options([sample], "t")
        assert errs == [], errs
        conf = tmp_path / ("%s.conf" % name)
        conf.write_text("server 127.0.0.9 nts %s\n" % " ".join(options), encoding="utf-8")
        proc = subprocess.run(["chronyd", "-x", "-p", "-f", str(conf)], capture_output=True, text=True, timeout=20)
        if proc.returncode != 0:
            failures.append((name, options, proc.stderr.strip()))
    assert failures == [], "%s rejected: %s" % (version.strip(), failures)


# ----------------------------------------------------------------------------------------------- filter plugin


def _load_filter_plugin():
    path = REPO / "plugins" / "filter" / "nts_catalog.py"
    spec = importlib.util.spec_from_file_location("test_nts_catalog_filter_plugin", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_filter_plugin_wraps_the_functions(shipped):
    from ansible.errors import AnsibleFilterError

    filters = _load_filter_plugin().FilterModule().filters()
    assert set(filters) == {"nts_catalog_validate", "nts_catalog_merge", "nts_select", "nts_pem_check"}
    merged = filters["nts_catalog_merge"](shipped, [entry("lab.example.net", "lab")], False)
    assert filters["nts_catalog_validate"](merged) == merged
    chosen = filters["nts_select"](merged, {"providers_allow": ["lab", "ptb"], "count": 3, "min_sources": 2})
    assert [s["provider"] for s in chosen] == ["lab", "ptb", "ptb"]
    with pytest.raises(AnsibleFilterError, match=r"policy: providers_deny\[0\] 'ptbb' is not a provider id"):
        filters["nts_select"](merged, {"providers_deny": ["ptbb"]})
    with pytest.raises(AnsibleFilterError, match=r"ca: contains no PEM CERTIFICATE block"):
        filters["nts_pem_check"]("nope")


# ----------------------------------------------------------------------------------------------- X.509 CA check


def _pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode()
    return "-----BEGIN CERTIFICATE-----\n" + body + "-----END CERTIFICATE-----\n"


def test_block_that_frames_like_der_but_is_no_certificate_is_refused_naming_the_field():
    # A SEQUENCE holding a SEQUENCE passes the DER framing check but is not a certificate: chronyd would load no CA.
    junk = _pem(bytes([0x30, 0x06, 0x30, 0x04, 0x02, 0x02, 0x01, 0x00]))
    msg = one_error(nc.select_servers, None, {"min_sources": 1}, [{"host": "s.corp", "ca": junk}])
    assert msg.startswith("site_servers[0] (host 's.corp'): ca: PEM block #1 (CERTIFICATE) is not an X.509 certificate")


def test_leaf_certificate_given_as_ca_is_refused(ca_pem):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("s.corp"))
        .issuer_name(_name("site ca"))
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = leaf.public_bytes(serialization.Encoding.PEM).decode()
    msg = one_error(nc.select_servers, None, {"min_sources": 1}, [{"host": "s.corp", "ca": pem}])
    assert msg.startswith("site_servers[0] (host 's.corp'): ca: PEM block #1 (CERTIFICATE) is not a CA certificate")
    assert "CN=s.corp" in msg and "CN=site ca" in msg
    # the real CA of the same name passes
    assert nc.check_pem_certificates(ca_pem[0]) == 1
    # a server's own certificate chain (the server role's check) starts with its leaf: not refused there
    assert nc.check_pem_certificates(pem, "chrony_nts_server_cert_file", require_ca=False) == 1
