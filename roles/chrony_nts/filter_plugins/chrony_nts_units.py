"""Read `systemctl show --property=Id,LoadState,ActiveState,UnitFileState UNIT...` output: one block per unit."""

from __future__ import annotations


def chrony_nts_units_to_stop(stdout):
    """Return the names of the units that exist and are running or enabled (the ones to stop and disable).

    A unit that is not installed shows ``LoadState=not-found``; a masked one ``LoadState=masked``: both are left alone.
    """
    units = []
    for block in stdout.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if props.get("LoadState") != "loaded":
            continue
        running = props.get("ActiveState") in ("active", "activating", "reloading")
        enabled = props.get("UnitFileState") in ("enabled", "enabled-runtime")
        if running or enabled:
            units.append(props["Id"])
    return units


class FilterModule(object):
    """chrony_nts role filters: systemd unit state."""

    def filters(self):
        return {"chrony_nts_units_to_stop": chrony_nts_units_to_stop}
