"""A RHEL-family host after the chrony_nts role: chronyd (not chrony) service, /etc/chrony.conf, OPTIONS kept."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))
from tests.lib.nts_checks import assert_nts_healthy

testinfra_hosts = ["podman://mol-rhel-rocky9", "podman://mol-rhel-alma9"]


def test_nts_is_authenticated_and_selected(host):
    assert_nts_healthy(host.check_output, min_sources=2)


def test_rhel_names_and_options(host):
    assert host.service("chronyd").is_running
    text = host.file("/etc/chrony.conf").content_string
    assert "authselectmode require" in text
    options = host.file("/etc/sysconfig/chronyd").content_string
    assert "-F 2" in options and "-x" in options
