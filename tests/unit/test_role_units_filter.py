"""The filter that picks conflicting time daemons to stop, on real `systemctl show` output shapes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "chrony_nts_units",
    Path(__file__).resolve().parents[2] / "roles" / "chrony_nts" / "filter_plugins" / "chrony_nts_units.py",
)
units = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(units)

# systemctl 252 (Debian 12): an absent, a running+enabled, an enabled-but-stopped, a masked and a disabled unit.
OUTPUT = """Id=systemd-timesyncd.service
LoadState=not-found
ActiveState=inactive
UnitFileState=

Id=ntp.service
LoadState=loaded
ActiveState=active
UnitFileState=enabled

Id=ntpsec.service
LoadState=loaded
ActiveState=inactive
UnitFileState=enabled

Id=openntpd.service
LoadState=masked
ActiveState=inactive
UnitFileState=masked

Id=ntpd.service
LoadState=loaded
ActiveState=inactive
UnitFileState=disabled
"""


def test_running_or_enabled_units_are_stopped_absent_masked_and_disabled_ones_are_not():
    assert units.chrony_nts_units_to_stop(OUTPUT) == ["ntp.service", "ntpsec.service"]


def test_nothing_installed_means_nothing_to_stop():
    assert units.chrony_nts_units_to_stop("Id=ntp.service\nLoadState=not-found\nActiveState=inactive\n") == []
