#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: chrony_serverstats
short_description: Read chronyd's server counters (NTP, NTS-KE, authenticated NTP) and optionally require progress
description:
  - Runs C(chronyc -c serverstats) against the running C(chronyd) and returns its counters by name (8 fields on
    chrony 4.0-4.1, 11 on 4.2-4.3, 17 on 4.4 and later).
  - With O(min_nts_ke_accepted) (and optionally O(baseline)) the module waits until C(chronyd) has accepted at least
    that many NTS-KE connections (since its start, or since the O(baseline) counters were read), so a play can prove
    that an NTS server really served a key exchange, for example right after an M(nts.chrony.nts_probe) against it.
  - Read-only. Never changes anything; runs the same checks in check mode.
  - "C(serverstats) is answered only over chronyd's Unix command socket (root or the chrony user): run the task with
    C(become: true)."
version_added: "1.0.0"
author:
  - chrony-nts project (@chrony-nts)
requirements:
  - chrony 4.0 or later on the managed host.
options:
  min_nts_ke_accepted:
    description:
      - Minimum number of NTS-KE connections chronyd must have accepted (counted from O(baseline) when given).
        V(0) only reads the counters.
    type: int
    default: 0
  min_authenticated_ntp:
    description:
      - Minimum number of authenticated NTP requests chronyd must have answered (counted from O(baseline) when
        given). V(0) does not check.
    type: int
    default: 0
  baseline:
    description:
      - Counters returned by an earlier call (its RV(stats)); the minimums then apply to the increase since that call.
        A counter lower than its baseline means chronyd restarted in between; the module then counts from zero.
    type: dict
  timeout:
    description:
      - Seconds to wait for the minimums to be reached (counters are read every O(interval) seconds).
    type: float
    default: 10
  interval:
    description:
      - Seconds between reads.
    type: float
    default: 0.25
  chronyc_path:
    description:
      - Name or path of the C(chronyc) program.
    type: str
    default: chronyc
  socket:
    description:
      - Path of chronyd's Unix command socket (C(chronyc -h PATH)) for a chronyd with a non-default
        C(bindcmdaddress).
    type: path
attributes:
  check_mode:
    support: full
    description: The module only reads; it performs the same checks in check mode.
notes:
  - The counters are chronyd's since its last start; C(nts_ke_accepted) is field 6 of the CSV line.
seealso:
  - module: nts.chrony.nts_probe
  - module: nts.chrony.chrony_authdata
  - name: chronyc serverstats
    description: Meaning of the counters.
    link: https://chrony-project.org/doc/4.3/chronyc.html#serverstats
"""

EXAMPLES = r"""
- name: Read the counters before probing
  become: true
  chrony_serverstats:
  register: before

- name: Probe the server from the controller
  nts_probe:
    servers:
      - host: "{{ inventory_hostname }}.example.net"
        address: "{{ ansible_host }}"
    ca_file: files/corp-ca.pem
  delegate_to: localhost

- name: Prove that this chronyd served the key exchange
  become: true
  chrony_serverstats:
    baseline: "{{ before.stats }}"
    min_nts_ke_accepted: 1
"""

RETURN = r"""
stats:
  description: The counters by name (absent counters of older chrony versions are not listed).
  returned: always
  type: dict
  sample:
    ntp_rx: 4
    ntp_dropped: 0
    cmd_rx: 2
    cmd_dropped: 0
    log_dropped: 0
    nts_ke_accepted: 2
    nts_ke_dropped: 0
    authenticated_ntp: 4
    interleaved_ntp: 0
    timestamps_held: 0
    timestamp_span: 0
fields:
  description: Number of fields in chronyc's CSV line (8, 11 or 17), which tells the chrony generation.
  returned: always
  type: int
  sample: 11
increase:
  description: Increase of every counter since O(baseline) (counted from zero for a counter that went down).
  returned: when O(baseline) is given
  type: dict
  sample: {nts_ke_accepted: 1, authenticated_ntp: 1}
elapsed:
  description: Seconds the module waited.
  returned: always
  type: float
  sample: 0.01
"""

import time  # noqa: E402 - Ansible modules import after their documentation strings

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.nts.chrony.plugins.module_utils.chronyc import (  # noqa: E402
    ChronycError,
    ChronyParseError,
    parse_serverstats,
)

CHECKED = ("nts_ke_accepted", "authenticated_ntp")


def increase(stats, baseline):
    """Per-counter increase since ``baseline``; a counter that went down (chronyd restarted) counts from zero."""
    out = {}
    for name, value in stats.items():
        if name in baseline:
            before = baseline[name]
            out[name] = value - before if value >= before else value
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            min_nts_ke_accepted=dict(type="int", default=0),
            min_authenticated_ntp=dict(type="int", default=0),
            baseline=dict(type="dict"),
            timeout=dict(type="float", default=10.0),
            interval=dict(type="float", default=0.25),
            chronyc_path=dict(type="str", default="chronyc"),
            socket=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    minimums = {"nts_ke_accepted": p["min_nts_ke_accepted"], "authenticated_ntp": p["min_authenticated_ntp"]}
    for name, value in minimums.items():
        if value < 0:
            module.fail_json(msg="min_%s must be >= 0, got %d" % (name, value))
    if p["timeout"] < 0:
        module.fail_json(msg="timeout must be >= 0 seconds, got %s" % p["timeout"])
    if not p["interval"] > 0:
        module.fail_json(msg="interval must be > 0 seconds, got %s" % p["interval"])
    baseline = None
    if p["baseline"] is not None:
        baseline = {}
        for name, value in p["baseline"].items():
            try:
                baseline[name] = int(value)
            except (TypeError, ValueError):
                module.fail_json(msg="baseline.%s must be an integer counter, got %r" % (name, value))
            if baseline[name] < 0:
                module.fail_json(msg="baseline.%s must be >= 0, got %r" % (name, value))
        missing = [n for n in CHECKED if minimums[n] > 0 and n not in baseline]
        if missing:
            module.fail_json(
                msg="baseline lacks %s: pass the 'stats' returned by an earlier chrony_serverstats call"
                % ", ".join(missing),
                baseline=p["baseline"],
            )

    if "/" in p["chronyc_path"]:
        chronyc = p["chronyc_path"]
    else:
        chronyc = module.get_bin_path(p["chronyc_path"], opt_dirs=["/usr/bin", "/usr/sbin"])
    if not chronyc:
        module.fail_json(msg="chronyc_path: %r not found: is chrony installed?" % p["chronyc_path"])
    cmd = [chronyc] + (["-h", p["socket"]] if p["socket"] else []) + ["-c", "serverstats"]
    target = "socket %s" % p["socket"] if p["socket"] else "the default command socket"

    start = time.monotonic()
    deadline = start + p["timeout"]
    while True:
        rc, out, err = module.run_command(cmd)
        try:
            stats = parse_serverstats(out)
            error = None
        except ChronycError as exc:
            hint = (
                " (run the task with become: true: serverstats needs chronyd's Unix socket)" if exc.code == 501 else ""
            )
            error = "chronyc via %s: %s%s" % (target, exc, hint)
            stats = None
        except ChronyParseError as exc:
            if rc != 0:
                error = "chronyc via %s exited with rc %d: %s" % (target, rc, (err or out).strip() or "no output")
                stats = None
            else:
                module.fail_json(msg="cannot parse chronyc serverstats via %s: %s" % (target, exc), command=cmd)
        result = {"changed": False, "elapsed": round(time.monotonic() - start, 3)}
        shortfall = []
        if stats is not None:
            result.update(stats=stats, fields=len(out.strip().split(",")))
            counted = stats
            if baseline is not None:
                counted = increase(stats, baseline)
                result["increase"] = counted
            for name in CHECKED:
                if minimums[name] > 0 and counted.get(name, 0) < minimums[name]:
                    shortfall.append(
                        "%s is %d%s, at least %d required"
                        % (name, counted.get(name, 0), " more than the baseline" if baseline else "", minimums[name])
                    )
        if stats is not None and not shortfall:
            module.exit_json(**result)
        if time.monotonic() >= deadline:
            if stats is None:
                module.fail_json(msg=error, stats={}, fields=0, elapsed=result["elapsed"])
            module.fail_json(
                msg="chronyd's server counters after %s s: %s" % (result["elapsed"], "; ".join(shortfall)), **result
            )
        time.sleep(min(p["interval"], max(0.0, deadline - time.monotonic())))


if __name__ == "__main__":
    main()
