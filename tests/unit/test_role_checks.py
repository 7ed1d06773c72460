"""chrony_nts_input_errors: the role's input checks beyond argument_specs, one message per problem."""

from __future__ import annotations

import pytest
from ansible_collections.nts.chrony.plugins.filter.chrony_nts_checks import chrony_nts_input_errors, dropped_text

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
