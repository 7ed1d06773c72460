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


def test_cookies_survive_a_restart(host):
    """ntsdumpdir: chronyd writes its cookies at stop and reads them at start, so no new key exchange is needed."""
    dump = host.file("/var/lib/chrony")
    assert dump.is_directory and dump.user == "_chrony"
    assert "ntsdumpdir /var/lib/chrony" in host.file("/etc/chrony/chrony.conf").content_string

    def authdata():
        out = host.check_output("chronyc -c -N authdata")
        return {row[0]: row for row in (line.split(",") for line in out.splitlines())}

    before = authdata()
    host.check_output("systemctl restart chrony && sleep 0.5")
    after = authdata()
    for name, row in before.items():
        # name,mode,keyid,type,klen,last,attempts,nak,cookies,cookie_len: the same key exchange, cookies held
        assert after[name][2] == row[2] and int(after[name][5]) >= int(row[5]) and int(after[name][8]) > 0, after


def test_no_conflicting_time_daemon_and_no_ntp_server_socket(host):
    for unit in ("systemd-timesyncd", "ntp", "ntpsec", "openntpd"):
        assert not host.service(unit).is_running
    listening = host.check_output("ss -Hlnu")
    assert ":123 " not in listening, listening
