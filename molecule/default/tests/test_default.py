"""What a Debian 12 host looks like after the chrony_nts role: read with chronyc, ps and the files themselves."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))
from tests.lib.nts_checks import assert_nts_healthy

# testinfra's native podman backend: several times faster than going through Ansible.
testinfra_hosts = ["podman://mol-default-client1"]


def test_nts_is_authenticated_and_selected(host):
    assert_nts_healthy(host.check_output, min_sources=2)


def test_chronyd_runs_with_the_distro_options_plus_no_clock_control(host):
    assert host.service("chrony").is_running
    assert host.service("chrony").is_enabled
    cmdlines = [p.args for p in host.process.filter(comm="chronyd")]
    assert cmdlines and all("-F 1" in c and "-x" in c.split() for c in cmdlines), cmdlines
    options = host.file("/etc/default/chrony").content_string
    assert 'DAEMON_OPTS="-F 1 -x"' in options


def test_config_is_nts_only_and_managed(host):
    conf = host.file("/etc/chrony/chrony.conf")
    assert conf.user == "root" and conf.mode == 0o644
    text = conf.content_string
    assert "Managed by chrony-nts" in text
    assert "authselectmode require" in text
    servers = [line for line in text.splitlines() if line.startswith(("server ", "pool ", "peer "))]
    assert servers and all(" nts" in line for line in servers), servers
    assert "sourcedir /etc/chrony/sources.d" not in text
    assert not [f for f in host.file("/etc/chrony/conf.d").listdir() if "~" in f or f.endswith((".bak", ".orig"))]


def test_cookies_are_saved_with_tight_modes(host):
    dump = host.file("/var/lib/chrony")
    saved = [f for f in dump.listdir() if f.endswith(".nts")]
    assert saved
    for name in saved:
        f = host.file(f"/var/lib/chrony/{name}")
        assert f.mode == 0o600 and f.user == "_chrony"


def test_no_conflicting_time_daemon_and_no_ntp_server_socket(host):
    for unit in ("systemd-timesyncd", "ntp", "ntpsec", "openntpd"):
        assert not host.service(unit).is_running
    listening = host.check_output("ss -Hlnu")
    assert ":123 " not in listening, listening
