"""chrony_nts role filters: daemon options that keep the distribution's flags, and the private CA list."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.nts.chrony.plugins.filter.chrony_nts_certs import chrony_nts_trusted_certs
from ansible_collections.nts.chrony.plugins.filter.chrony_nts_options import chrony_nts_daemon_opts

DEBIAN = '# Options to pass to chrony.\nDAEMON_OPTS="-F 1"\n'
RHEL = '# Command-line options for chronyd\nOPTIONS="-F 2"\n'


@pytest.mark.parametrize(
    ("content", "var", "clock", "line"),
    [
        (DEBIAN, "DAEMON_OPTS", True, 'DAEMON_OPTS="-F 1"'),
        (DEBIAN, "DAEMON_OPTS", False, 'DAEMON_OPTS="-F 1 -x"'),
        (RHEL, "OPTIONS", False, 'OPTIONS="-F 2 -x"'),
        ('OPTIONS="-F 2 -x"\n', "OPTIONS", True, 'OPTIONS="-F 2"'),
        ('OPTIONS="-x -F 2 -x"\n', "OPTIONS", False, 'OPTIONS="-F 2 -x"'),
        ('OPTIONS=""\n', "OPTIONS", True, 'OPTIONS=""'),  # RHEL 8 ships no flag: none is invented
        ("DAEMON_OPTS=-F\\ 1\n", "DAEMON_OPTS", True, 'DAEMON_OPTS="-F 1"'),
        ('#DAEMON_OPTS="-x"\nDAEMON_OPTS="-F 1 -d"  # local\n', "DAEMON_OPTS", False, 'DAEMON_OPTS="-F 1 -d -x"'),
        ('export DAEMON_OPTS="-F 1"\nDAEMON_OPTS="-F 0"\n', "DAEMON_OPTS", True, 'DAEMON_OPTS="-F 0"'),  # last wins
    ],
)
def test_daemon_options_keep_flags_and_toggle_x(content, var, clock, line):
    result = chrony_nts_daemon_opts(content, var, clock, "-F 9")
    assert result["line"] == line
    assert result["found"] is True


@pytest.mark.parametrize(
    ("content", "family", "keep", "clock", "line"),
    [
        (DEBIAN, "ipv4", False, True, 'DAEMON_OPTS="-F 1 -4"'),
        (DEBIAN, "ipv6", True, False, 'DAEMON_OPTS="-F 1 -6 -r -x"'),
        ('DAEMON_OPTS="-4 -F 1"\n', "ipv6", False, True, 'DAEMON_OPTS="-F 1 -6"'),  # the family switches
        ('DAEMON_OPTS="-6 -F 1 -r -x"\n', "any", False, True, 'DAEMON_OPTS="-F 1"'),  # the role's flags all go
        ('DAEMON_OPTS="-r -F 1 -4"\n', "ipv4", True, True, 'DAEMON_OPTS="-F 1 -4 -r"'),  # same flags, fixed order
        ('OPTIONS="-F 2 -d"\n', "any", True, True, 'OPTIONS="-F 2 -d -r"'),  # other local flags stay
    ],
)
def test_daemon_options_ip_family_and_kept_measurements(content, family, keep, clock, line):
    var = line.split("=")[0]
    assert chrony_nts_daemon_opts(content, var, clock, "", family, keep)["line"] == line


def test_daemon_options_defaults_leave_the_family_and_measurement_flags_off():
    # the two new parameters default to "any" and false: a caller of the old signature gets the old result
    assert chrony_nts_daemon_opts(DEBIAN, "DAEMON_OPTS", False, "")["line"] == 'DAEMON_OPTS="-F 1 -x"'
    # a second run on the file the first one wrote changes nothing
    once = chrony_nts_daemon_opts(RHEL, "OPTIONS", False, "", "ipv4", True)["content"]
    assert chrony_nts_daemon_opts(once, "OPTIONS", False, "", "ipv4", True)["content"] == once


def test_missing_file_or_variable_uses_family_default():
    assert chrony_nts_daemon_opts("", "DAEMON_OPTS", False, "-F 1") == {
        "found": False,
        "options": ["-F", "1", "-x"],
        "line": 'DAEMON_OPTS="-F 1 -x"',
        "content": 'DAEMON_OPTS="-F 1 -x"\n',
    }
    assert chrony_nts_daemon_opts("OTHER=1\n", "OPTIONS", True, "-F 2")["line"] == 'OPTIONS="-F 2"'


def test_new_file_content_changes_only_the_last_assignment():
    # The file is rewritten whole: every other line (comments, exports, the earlier assignment) stays as it was.
    before = '# keep me\nexport DAEMON_OPTS="-F 1"\nDAEMON_OPTS="-F 0"  # local\nOTHER=1'
    after = chrony_nts_daemon_opts(before, "DAEMON_OPTS", False, "")["content"]
    assert after == '# keep me\nexport DAEMON_OPTS="-F 1"\nDAEMON_OPTS="-F 0 -x"\nOTHER=1'
    # no assignment: appended after a newline the file lacked
    assert chrony_nts_daemon_opts("OTHER=1", "OPTIONS", False, "-F 2")["content"] == 'OTHER=1\nOPTIONS="-F 2 -x"\n'
    # unchanged flags give the same bytes back, so the role writes nothing
    assert chrony_nts_daemon_opts(DEBIAN, "DAEMON_OPTS", True, "")["content"] == DEBIAN


def test_options_the_role_cannot_rewrite_are_refused():
    with pytest.raises(AnsibleFilterError, match="cannot rewrite"):
        chrony_nts_daemon_opts("OPTIONS=\"-f '/etc/my chrony.conf'\"\n", "OPTIONS", True, "")
    with pytest.raises(AnsibleFilterError, match="cannot be parsed"):
        chrony_nts_daemon_opts('OPTIONS="-F 2\n', "OPTIONS", True, "")
    with pytest.raises(AnsibleFilterError, match="clock_control must be a boolean"):
        chrony_nts_daemon_opts(DEBIAN, "DAEMON_OPTS", "false", "")
    with pytest.raises(AnsibleFilterError, match="keep_measurements must be a boolean"):
        chrony_nts_daemon_opts(DEBIAN, "DAEMON_OPTS", True, "", "any", "yes")
    with pytest.raises(AnsibleFilterError, match="ip_family must be one of any, ipv4, ipv6, got 'inet6'"):
        chrony_nts_daemon_opts(DEBIAN, "DAEMON_OPTS", True, "", "inet6")


CA1 = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
CA2 = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n"


def _src(host, certset=None, ca=None, ca_file=None):
    return {"host": host, "certset": certset, "ca": ca, "ca_file": ca_file}


def test_trusted_certs_bundle_per_set_and_reference_host_files():
    sources = [
        _src("a", 1, CA1),
        _src("b", 1, CA1 + "\n"),  # same CA, other whitespace: one copy
        _src("c", 1, CA2),  # a second CA forced into set 1: bundled
        _src("d", 2, ca_file="/etc/ssl/x.pem"),
        _src("e", 2, ca_file="/etc/ssl/x.pem"),
        _src("public.example"),
    ]
    assert chrony_nts_trusted_certs(sources, "/etc/chrony/nts-certs/") == [
        {"certset": 1, "path": "/etc/chrony/nts-certs/certset-1.pem", "content": CA1 + "\n" + CA2},
        {"certset": 2, "path": "/etc/ssl/x.pem", "content": None},
    ]


def test_trusted_certs_empty_and_bad_input():
    assert chrony_nts_trusted_certs([_src("a")], "/d") == []
    with pytest.raises(AnsibleFilterError, match="sources must be the list"):
        chrony_nts_trusted_certs({"host": "a"}, "/d")
    with pytest.raises(AnsibleFilterError, match=r"sources\[0\] is not a source"):
        chrony_nts_trusted_certs([{"name": "a"}], "/d")
