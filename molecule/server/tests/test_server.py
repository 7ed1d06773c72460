"""What the NTS server tier looks like after chrony_nts_server, and a client that uses it: read with chronyc, stat and
the processes themselves (testinfra's native podman backend)."""

from __future__ import annotations

import os
import sys

import testinfra

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))
from tests.lib.nts_checks import assert_nts_healthy

testinfra_hosts = ["podman://mol-server-tier1"]
CLIENT = testinfra.get_host("podman://mol-server-client1")


def test_key_and_certificate_modes(host):
    d = host.file("/etc/chrony/nts-server")
    assert (d.user, d.group, d.mode) == ("root", "_chrony", 0o750)
    key = host.file("/etc/chrony/nts-server/server.key")
    assert (key.user, key.group, key.mode) == ("root", "_chrony", 0o640)
    crt = host.file("/etc/chrony/nts-server/server.crt")
    assert crt.mode == 0o644 and "BEGIN CERTIFICATE" in crt.content_string


def test_server_lines_and_no_clock_control(host):
    text = host.file("/etc/chrony/chrony.conf").content_string
    for line in (
        "ntsserverkey /etc/chrony/nts-server/server.key",
        "ntsservercert /etc/chrony/nts-server/server.crt",
        "ntsport 4460",
        "ntsprocesses 1",
        "local stratum 8",
        "allow 10.89.0.0/16",
        "ntsdumpdir /var/lib/chrony",
    ):
        assert line in text.splitlines(), line
    cmdlines = [p.args for p in host.process.filter(comm="chronyd")]
    assert cmdlines and all("-x" in c.split() for c in cmdlines), cmdlines
    assert ":4460 " in host.check_output("ss -Hltn")


def test_server_counts_key_exchanges_and_keeps_cookie_keys(host):
    fields = host.check_output("chronyc -c serverstats").split(",")
    assert int(fields[5]) >= 2, fields  # the role's proof and the client (at least)
    keys = host.file("/var/lib/chrony/ntskeys")
    assert keys.exists and keys.user == "_chrony" and keys.mode == 0o600


def test_server_has_healthy_upstream(host):
    assert_nts_healthy(host.check_output, min_sources=2)


def test_client_uses_the_tier():
    text = CLIENT.file("/etc/chrony/chrony.conf").content_string
    assert any(line.startswith("server mol-server-tier1 ") for line in text.splitlines()), text
    rows = [r.split(",") for r in CLIENT.check_output("chronyc -c -N authdata").splitlines()]
    (tier,) = [r for r in rows if r[0] == "mol-server-tier1"]
    assert tier[1] == "NTS" and int(tier[2]) >= 1 and int(tier[8]) > 0, tier  # mode, KeyID, cookies
