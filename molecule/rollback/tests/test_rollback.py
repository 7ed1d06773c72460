"""After a failed run: the good configuration is in place, chronyd runs it, and NTS is healthy again."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))
from tests.lib.nts_checks import wait_nts_healthy

testinfra_hosts = ["podman://mol-rollback-client1"]


def test_previous_configuration_is_in_place(host):
    text = host.file("/etc/chrony/chrony.conf").content_string
    assert "server nts1.lab.test" in text and "server nts2.lab.test" in text
    assert "nts-badca" not in text and "nts-nowhere" not in text
    leftovers = host.check_output("ls /etc/chrony/nts-certs/ /etc/chrony/conf.d/")
    assert "certset-2" not in leftovers, leftovers


def test_chrony_runs_the_restored_configuration_with_nts(host):
    assert host.service("chrony").is_running
    wait_nts_healthy(host.check_output, min_sources=2, timeout=30)
