#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: chrony_nts_host
short_description: Read what the chrony_nts role needs to know about a host, in one call
description:
  - Reads, without changing anything, the platform (from C(/etc/os-release)), whether the kernel runs in FIPS mode
    (C(/proc/sys/crypto/fips_enabled)), which of the listed packages are missing, the version and NTS support of
    C(chronyd), the state of the listed systemd units (to find conflicting time daemons) and the content of a few
    small configuration files (the daemon options file).
  - One module call instead of a fact gathering, a package query, a C(chronyd --version), a C(systemctl show) and a
    file read, so a converge that changes nothing costs few round trips.
  - Used by the C(chrony_nts) role before any change; safe on any host, in check mode too.
version_added: "1.0.0"
author:
  - chrony-nts project (@chrony-nts)
options:
  os_facts:
    description:
      - Return C(os_family), C(distribution), C(distribution_version) and C(distribution_major_version) as facts,
        valued as the C(setup) module values them for the supported distributions.
      - Leave it off when the play gathered facts already; the role sets it only when C(os_family) is missing.
    type: bool
    default: false
  packages:
    description: Package names whose installation state is reported in RV(packages_missing) (dpkg or rpm).
    type: list
    elements: str
    default: []
  units:
    description: systemd unit names whose load, active and unit file state are reported.
    type: list
    elements: str
    default: []
  read:
    description:
      - Absolute paths of small text files to return in RV(files) (a missing file is returned as null).
      - Never list files that hold secrets.
    type: list
    elements: path
    default: []
  start_check:
    description:
      - Start the NTS proof of a later M(nts.chrony.chrony_nts_apply) call now. Read every NTS source's reply
        counters and run C(chronyc burst 1/4), so the sources' fresh replies are in by the time the proof looks
        (RV(nts_baseline)). Asks the sources for one sample early; changes nothing on the host.
    type: bool
    default: false
  chronyd:
    description: Path of the chronyd binary.
    type: path
    default: /usr/sbin/chronyd
attributes:
  check_mode:
    support: full
    description: The module only reads.
  diff_mode:
    support: none
    description: The module changes nothing, so there is nothing to show.
notes:
  - Only the Python standard library is used on the target.
seealso:
  - module: ansible.builtin.setup
  - module: nts.chrony.chrony_nts_apply
"""

EXAMPLES = r"""
- name: Read the host's platform, chrony and time daemons
  chrony_nts_host:
    os_facts: true
    packages: [chrony]
    units: [systemd-timesyncd.service, ntp.service, ntpsec.service, openntpd.service]
    read: [/etc/default/chrony]
  register: host_state

- name: Stop the daemons that would fight chrony
  ansible.builtin.service:
    name: "{{ item }}"
    state: stopped
    enabled: false
  loop: "{{ host_state.units_to_stop }}"
"""

RETURN = r"""
ansible_facts:
  description: The platform facts, when O(os_facts=true).
  returned: when O(os_facts=true)
  type: dict
  sample: {os_family: Debian, distribution: Debian, distribution_version: "12.7", distribution_major_version: "12"}
fips_enabled:
  description:
    - Whether the kernel runs in FIPS mode (C(/proc/sys/crypto/fips_enabled) is C(1)), as Ansible's C(fips) fact
      says; null when the file does not exist. The C(chrony_nts) role stops on RHEL-family hosts in FIPS mode,
      where chronyd with NTS aborts, unless told otherwise.
  returned: always
  type: bool
  sample: false
packages_missing:
  description: The packages of O(packages) that are not installed.
  returned: always
  type: list
  elements: str
  sample: [chrony]
chronyd:
  description: What C(chronyd --version) says.
  returned: always
  type: dict
  contains:
    present:
      description: Whether the chronyd binary exists.
      type: bool
    output:
      description: The first line of C(chronyd --version), or an empty string.
      type: str
    version:
      description: The version number, or null.
      type: str
    nts:
      description: Whether it was built with NTS (C(+NTS)); null when unknown.
      type: bool
  sample: {present: true, output: "chronyd (chrony) version 4.3 (+CMDMON +NTP ... +NTS ...)", version: "4.3", nts: true}
units:
  description: The state of each unit of O(units).
  returned: always
  type: list
  elements: dict
  sample: [{Id: ntp.service, LoadState: loaded, ActiveState: active, UnitFileState: enabled}]
units_to_stop:
  description: The units of O(units) that are installed and running or enabled.
  returned: always
  type: list
  elements: str
  sample: [ntp.service]
nts_baseline:
  description:
    - With O(start_check), each NTS source's reply counters (C(chronyc ntpdata) total, received and valid replies)
      read just before a C(chronyc burst 1/4); null when chronyd does not answer. Handed to
      O(nts.chrony.chrony_nts_apply#module:verify.baseline) of M(nts.chrony.chrony_nts_apply), so replies arriving
      meanwhile count as fresh.
  returned: when O(start_check) is true
  type: dict
  sample: {"nts1.example.net|192.0.2.1": [41, 41, 41]}
files:
  description: Content of each file of O(read), null when it does not exist.
  returned: always
  type: dict
  sample: {/etc/default/chrony: "DAEMON_OPTS=\"-F 1\"\n"}
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.nts.chrony.plugins.module_utils.chrony_host import (  # noqa: E402
    FIPS_ENABLED,
    fips_enabled,
    missing_dpkg_packages,
    missing_rpm_packages,
    os_facts,
    parse_systemctl_show,
    units_to_stop,
)
from ansible_collections.nts.chrony.plugins.module_utils.chronyc import ChronyParseError, parse_version  # noqa: E402
from ansible_collections.nts.chrony.plugins.module_utils.nts_health import start_fresh_check  # noqa: E402

MAX_READ = 1 << 20  # the files read are small configuration files; refuse anything larger


def _read(path):
    try:
        with open(path, "r", errors="surrogateescape") as handle:
            return handle.read(MAX_READ + 1)
    except FileNotFoundError:
        return None


def packages_missing(module, names):
    if not names:
        return []
    dpkg = module.get_bin_path("dpkg-query")
    if dpkg:
        _rc, out, _err = module.run_command([dpkg, "-W", "-f", "${Package} ${db:Status-Abbrev}\\n", *names])
        return missing_dpkg_packages(names, out)
    rpm = module.get_bin_path("rpm")
    if rpm:
        _rc, out, _err = module.run_command([rpm, "-q", "--qf", "%{NAME}\\n", *names])
        return missing_rpm_packages(names, out)
    module.fail_json(msg="packages: neither dpkg-query nor rpm is on this host; cannot tell what is installed")


def chronyd_state(module, path):
    state = {"present": os.path.exists(path), "output": "", "version": None, "nts": None}
    if not state["present"]:
        return state
    rc, out, err = module.run_command([path, "--version"])
    state["output"] = (out or err).strip().splitlines()[0] if (out or err).strip() else ""
    if rc == 0:
        try:
            version = parse_version(out)
            state.update(version=version.version, nts=version.nts)
        except ChronyParseError:
            pass
    return state


def main():
    module = AnsibleModule(
        argument_spec=dict(
            os_facts=dict(type="bool", default=False),
            packages=dict(type="list", elements="str", default=[]),
            units=dict(type="list", elements="str", default=[]),
            read=dict(type="list", elements="path", default=[]),
            chronyd=dict(type="path", default="/usr/sbin/chronyd"),
            start_check=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result = dict(changed=False, files={}, units=[], units_to_stop=[])
    if p["os_facts"]:
        os_release = _read("/etc/os-release") or _read("/usr/lib/os-release")
        if os_release is None:
            module.fail_json(msg="os_facts: neither /etc/os-release nor /usr/lib/os-release exists on this host")
        result["ansible_facts"] = os_facts(os_release, _read("/etc/debian_version"))
    result["fips_enabled"] = fips_enabled(_read(FIPS_ENABLED))
    result["packages_missing"] = packages_missing(module, p["packages"])
    result["chronyd"] = chronyd_state(module, p["chronyd"])
    if p["units"]:
        systemctl = module.get_bin_path("systemctl", required=True)
        props = "--property=Id,LoadState,ActiveState,UnitFileState"
        rc, out, err = module.run_command([systemctl, "show", props, "--", *p["units"]])
        if rc != 0:
            module.fail_json(msg="systemctl show %s failed (rc %d): %s" % (" ".join(p["units"]), rc, err.strip()))
        result["units"] = parse_systemctl_show(out)
        result["units_to_stop"] = units_to_stop(result["units"])
    if p["start_check"]:
        chronyc = module.get_bin_path("chronyc", opt_dirs=["/usr/bin", "/usr/sbin"])
        result["nts_baseline"] = start_fresh_check(module.run_command, chronyc) if chronyc else None
    for path in p["read"]:
        content = _read(path)
        if content is not None and len(content) > MAX_READ:
            module.fail_json(msg="read: %s is larger than %d bytes, not a configuration file" % (path, MAX_READ))
        result["files"][path] = content
    module.exit_json(**result)


if __name__ == "__main__":
    main()
