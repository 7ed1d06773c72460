"""chrony_nts_input_errors: the role's input checks beyond argument_specs, one message per problem."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.nts.chrony.plugins.filter.chrony_nts_checks import (
    chrony_nts_input_errors,
    chrony_nts_reserve_certsets,
    dropped_text,
)

GOOD = {
    "facts": {"os_family": "Debian", "distribution": "Debian", "distribution_version": "12.7",
              "distribution_major_version": "12"},
    "supported_families": ["Debian", "RedHat"],
    "min_distro_major": {"Debian": 11, "Ubuntu": 22, "RedHat": 8},
    "service": "chrony",
    "minsources": 1, "nocerttimecheck": 0, "makestep_threshold": 1.0, "makestep_limit": 3, "cmdport": 0,
    "maxupdateskew": 100.0, "verify_timeout": 60, "verify_min_sources": 2, "leapsectz": "right/UTC",
    "state_dir": "/var/lib/chrony-nts", "extra_config": [], "allow": [], "serve_ntp": False,
    "selected": ["a.example", "b.example", "c.example"], "kept": ["a.example", "b.example", "c.example"], "dropped": [],
}  # fmt: skip
FAILED = {"host": "c.example", "port": 4460, "stage": "certificate", "error": "the issuer is unknown"}


def errors(**changes):
    return chrony_nts_input_errors({**GOOD, **changes})


def test_good_inputs_give_no_error():
    assert errors() == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"minsources": 0}, "chrony_nts_minsources=0 (>= 1)."),
        ({"cmdport": 70000}, "chrony_nts_cmdport=70000 (0-65535)."),
        ({"makestep_threshold": 0}, "chrony_nts_makestep_threshold=0 (> 0)."),
        ({"makestep_limit": "x"}, 'chrony_nts_makestep_limit="x" (>= -1).'),
        ({"leapsectz": "right/UTC; rm"}, 'chrony_nts_leapsectz="right/UTC; rm" (a zone name).'),
        ({"state_dir": "var/lib"}, 'chrony_nts_state_dir="var/lib" (an absolute path).'),
        ({"extra_config": ["ok", "server a\nserver b"]}, "chrony_nts_extra_config[1] must be a single non-empty line"),
        ({"extra_config": ["  "]}, "chrony_nts_extra_config[0] must be a single non-empty line"),
        ({"allow": ["10.0.0.0/8", "10.1.0.0/16 10.2.0.0/16"]}, "chrony_nts_allow[1] must be an address"),
        ({"serve_ntp": True}, "chrony_nts_serve_ntp is true but chrony_nts_allow is empty"),
        ({"verify_min_sources": 4}, "chrony_nts_verify_min_sources is 4 but only 3 NTS source(s) are selected"),
    ],
)
def test_each_bad_input_is_named_with_its_value(changes, expected):
    found = errors(**changes)
    assert len(found) == 1 and expected in found[0], found


def test_every_problem_is_reported_at_once():
    assert len(errors(minsources=0, cmdport=-1, serve_ntp=True)) == 3


@pytest.mark.parametrize(
    ("facts", "service"),
    [
        ({"os_family": "Archlinux", "distribution": "Archlinux"}, "chrony"),
        ({"distribution_major_version": "10", "distribution_version": "10.13"}, "chrony"),  # Debian 10: chrony 3.4
        ({}, None),  # no vars file for the family
    ],
)
def test_unsupported_platform_is_named(facts, service):
    found = errors(facts={**GOOD["facts"], **facts}, service=service)
    assert len(found) == 1 and "supports the families Debian, RedHat" in found[0]
    assert "Debian >= 11" in found[0] and "this host is os_family" in found[0]


def test_too_few_servers_left_after_the_probe_stops_the_run():
    found = errors(kept=["a.example"], dropped=[FAILED, {**FAILED, "host": "b.example", "stage": "tcp"}])
    assert found == [
        "Only 1 selected NTS server(s) passed the pre-flight probe (a.example), at least 2 required; nothing on this "
        "host was changed. Dropped: c.example:4460 failed at certificate (the issuer is unknown); "
        "b.example:4460 failed at tcp (the issuer is unknown)."
    ]
    # enough left: the drop is reported by the run, not an error
    assert errors(kept=["a.example", "b.example"], dropped=[FAILED]) == []
    # at least one must pass even when the verification threshold is 0
    assert "at least 1 required" in errors(verify_min_sources=0, kept=[], dropped=[FAILED])[0]
    assert dropped_text([FAILED]) == "c.example:4460 failed at certificate (the issuer is unknown)"


def test_debian_testing_and_unstable_are_newer_than_any_release():
    for major in ("forky/sid", "sid"):
        facts = {**GOOD["facts"], "distribution_major_version": major, "distribution_version": major}
        assert errors(facts=facts) == []
    # a non-numeric version of another distribution is still refused
    found = errors(facts={**GOOD["facts"], "distribution": "Ubuntu", "distribution_major_version": "devel"})
    assert len(found) == 1 and "supports the families" in found[0]


# --- what chrony_nts_host read: FIPS mode, chronyd's version; the sources' own options; the distribution's sets ------

RHEL9 = {"os_family": "RedHat", "distribution": "RedHat", "distribution_version": "9.4",
         "distribution_major_version": "9"}  # fmt: skip
HOST = {
    "fips": False, "fips_allow": False, "fips_families": ["RedHat"], "chronyd_version": "4.3",
    "option_min_versions": {"ipv4": "4.6", "ipv6": "4.6"}, "ip_family": "any",
    "source_options": {"a.example": [], "b.example": ["minpoll 4"], "c.example": []},
    "site_servers": [], "reserved_certsets": [], "distro_nts": None,
}  # fmt: skip


def host_errors(**changes):
    return chrony_nts_input_errors({**GOOD, **HOST, **changes})


def test_good_host_readings_give_no_error_and_every_new_key_is_optional():
    assert host_errors() == []
    assert errors() == []  # without any of them (another caller of the filter)


def test_rhel_family_in_fips_mode_stops_unless_allowed():
    found = host_errors(facts=RHEL9, fips=True)
    assert len(found) == 1
    assert found[0].startswith(
        "this host runs in FIPS mode (/proc/sys/crypto/fips_enabled is 1) and is of the RedHat family (RedHat 9.4)"
    )
    for words in ("aborts in FIPS mode on RHEL 9 and 10", "ComplianceAsCode", "Nothing was changed",
                  "chrony_nts_fips_allow: true", "GNUTLS_FORCE_FIPS_MODE=0"):  # fmt: skip
        assert words in found[0], words
    assert host_errors(facts=RHEL9, fips=True, fips_allow=True) == []
    assert host_errors(facts=RHEL9, fips=False) == []
    assert host_errors(facts=RHEL9, fips=None) == []  # no /proc/sys/crypto/fips_enabled
    assert host_errors(fips=True) == []  # Debian in FIPS mode: not this check's business


@pytest.mark.parametrize(
    ("version", "options", "expected"),
    [
        (
            "4.3",
            ["ipv6"],
            "a.example has the server option 'ipv6', which needs chronyd >= 4.6; this host's chronyd "
            "is 4.3. Remove the option, or set chrony_nts_ip_family: ipv6 (chronyd's -6 flag",
        ),
        ("4.5", ["minpoll 4", "ipv4"], "which needs chronyd >= 4.6; this host's chronyd is 4.5."),
        ("4.6", ["ipv4"], None),
        ("4.6.1", ["ipv6"], None),
        ("4.10", ["ipv6"], None),  # compared as numbers, not strings
        (None, ["ipv6"], None),  # chrony not installed yet: chronyd -p on the host decides before any write
    ],
)
def test_per_source_ip_family_needs_chronyd_4_6(version, options, expected):
    found = host_errors(chronyd_version=version, source_options={**HOST["source_options"], "a.example": options})
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0], found


def test_per_source_family_must_agree_with_the_daemon_family():
    opts = {**HOST["source_options"], "a.example": ["ipv6"]}
    found = host_errors(chronyd_version="4.8", ip_family="ipv4", source_options=opts)
    assert found == [
        "chrony_nts_site_servers: a.example has the server option 'ipv6' but chrony_nts_ip_family is 'ipv4' (chronyd "
        "runs with -4): the source could never be reached. Remove the option or change the family."
    ]
    assert host_errors(chronyd_version="4.8", ip_family="ipv6", source_options=opts) == []
    both = {**HOST["source_options"], "a.example": ["ipv4", "ipv6"]}
    assert host_errors(chronyd_version="4.8", source_options=both) == [
        "chrony_nts_site_servers: a.example has both server options ipv4 and ipv6; keep one."
    ]


def test_a_site_ca_in_a_certificate_set_the_distribution_fills_is_refused():
    ubuntu = "Ubuntu's NTS pools (1-4.ntp.ubuntu.com) and bootstrap server (ntp-bootstrap.ubuntu.com)"
    site = [{"host": "nts.corp.example", "ca": "PEM", "certset": 1}, {"host": "b", "ca_file": "/x.pem", "certset": 2}]
    found = host_errors(site_servers=site, reserved_certsets=[1], distro_nts=ubuntu)
    assert len(found) == 1
    assert found[0].startswith(
        "chrony_nts_site_servers[0] (nts.corp.example): certset 1 is filled by the distribution (Ubuntu's NTS pools"
    )
    assert "leave it unset and the role picks a free one" in found[0]
    # the same set without a CA of its own (a source meant to use the distribution's set), or nothing reserved: fine
    assert host_errors(site_servers=[{"host": "ntp-bootstrap.ubuntu.com", "certset": 1}], reserved_certsets=[1]) == []
    assert host_errors(site_servers=site, reserved_certsets=[]) == []


def _sel(host, certset, site=True):
    return {"host": host, "certset": certset, "site": site, "options": []}


def test_assigned_certificate_sets_move_clear_of_the_distribution():
    # nts_select assigned 1 and 2 to two site CAs (set 3 was named by the user); Ubuntu fills set 1
    selected = [_sel("a", 1), _sel("b", 2), _sel("c", 1), _sel("d", 3), _sel("pub.example", None, site=False)]
    site = [{"host": "a", "ca": "A"}, {"host": "b", "ca": "B"}, {"host": "c", "ca": "A"}, {"host": "d", "certset": 3}]
    moved = chrony_nts_reserve_certsets(selected, [1], site)
    assert [(s["host"], s["certset"]) for s in moved] == [("a", 2), ("b", 4), ("c", 2), ("d", 3), ("pub.example", None)]
    assert selected[0]["certset"] == 1  # the input is not modified
    # nothing reserved: nothing moves
    assert chrony_nts_reserve_certsets(selected, [], site) == selected
    # a set the user named stays even when reserved (the input check above reports it)
    assert (
        chrony_nts_reserve_certsets([_sel("d", 1)], [1], [{"host": "d", "certset": "1", "ca": "X"}])[0]["certset"] == 1
    )
    with pytest.raises(AnsibleFilterError, match="sources must be the list"):
        chrony_nts_reserve_certsets({"host": "a"}, [1], [])


def test_require_selected_cannot_hold_next_to_kept_sources_with_prefer():
    ubuntu = "Ubuntu's NTS pools (1-4.ntp.ubuntu.com) and bootstrap server (ntp-bootstrap.ubuntu.com)"
    found = host_errors(distro_nts=ubuntu, distro_nts_prefer=True, verify_require_selected=True)
    assert len(found) == 1
    assert found[0].startswith(
        "chrony_nts_verify_require_selected is true but the distribution's NTS sources are kept "
        "(chrony_nts_distro_nts_sources: keep) and carry chrony's prefer option (Ubuntu's NTS pools"
    )
    assert "Set chrony_nts_distro_nts_sources: replace, or chrony_nts_verify_require_selected: false." in found[0]
    assert host_errors(distro_nts_prefer=False, verify_require_selected=True) == []  # replaced, or none
    assert host_errors(distro_nts_prefer=True, verify_require_selected=False) == []
