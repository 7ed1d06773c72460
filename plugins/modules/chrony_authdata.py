#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: chrony_authdata
short_description: Prove that chronyd's NTS sources really work (key exchange, cookies, authenticated replies)
description:
  - Polls the running C(chronyd) with C(chronyc -c -N -m sources tracking authdata ntpdata) (one process per poll)
    until enough NTS sources are healthy or O(timeout) passes, then reports every source and, when the check fails,
    why each unhealthy source is unhealthy.
  - "A source is healthy when C(authdata) shows mode C(NTS), C(KeyID) > 0 (a key exchange succeeded), no NTS NAK and
    at least one cookie, C(ntpdata) says the last response was authenticated and, with O(fresh) (the default), a
    valid authenticated reply arrived during this check: C(ntpdata)'s valid-reply counter moved since the module's
    first poll. Reach, cookies and the selected state are history: chronyd keeps a dead source selected for up to
    eight lost polls (over two hours at poll 10) and reloads cookies from C(ntsdumpdir) at start."
  - With O(burst) (the default), the module runs C(chronyc burst 1/4) after its first poll, and again every 8 s
    while the check does not hold, so each source answers within about 0.2 s instead of at its next poll. A healthy
    source costs one extra request per check; a dead one fails the check within O(timeout)."
  - Meant to run right after (re)starting chronyd, so a role can roll back a configuration that breaks NTS.
  - Changes nothing on the host (a burst only asks the sources for samples early); runs the same checks in check
    mode.
  - "C(authdata) and C(ntpdata) are answered only over chronyd's Unix command socket, which needs root or the chrony
    user: run the task with C(become: true)."
version_added: "1.0.0"
author:
  - chrony-nts project (@chrony-nts)
requirements:
  - chrony 4.0 or later built with NTS support (C(+NTS) in C(chronyd --version)) on the managed host.
options:
  min_sources:
    description:
      - Minimum number of healthy NTS sources.
    type: int
    default: 1
  sources:
    description:
      - Names that must each be healthy, as written in the chrony configuration (for example the NTS servers the role
        configured). A name absent from the running chronyd's sources is unhealthy (not configured in the running
        chronyd). For a name shared by several sources (a C(pool)), one healthy source is enough.
    type: list
    elements: str
    default: []
  timeout:
    description:
      - Seconds to wait for the sources to become healthy before failing.
    type: float
    default: 60
  interval:
    description:
      - Seconds between polls (sub-second values are fine).
    type: float
    default: 0.25
  require_selected:
    description:
      - Also require each healthy source to be selected or combined for synchronisation (state C(*) or C(+)).
    type: bool
    default: false
  require_synchronised:
    description:
      - Also require the system clock to be synchronised (C(tracking) leap status not C(Not synchronised)).
    type: bool
    default: false
  fresh:
    description:
      - Count a source only on an authenticated reply received during this check. V(false) judges chronyd's
        history alone, which can be hours old; use it only to read state, never to prove NTS works.
    type: bool
    default: true
  burst:
    description:
      - Ask every source for a sample at once (C(chronyc burst 1/4)) so a fresh check takes a fraction of a second
        with any polling interval. Without it a fresh check waits for the sources' next polls.
    type: bool
    default: true
  wait_all:
    description:
      - Once enough sources are healthy, go on polling (within O(timeout)) until every source is, so that the report
        shows each source's own state. A dead source then makes the check take O(timeout); the verdict is the same.
    type: bool
    default: false
  chronyc_path:
    description:
      - Name or path of the C(chronyc) program.
    type: str
    default: chronyc
  socket:
    description:
      - Path of chronyd's Unix command socket, passed as C(chronyc -h PATH), for a chronyd with a non-default
        C(bindcmdaddress). By default chronyc tries C(/run/chrony/chronyd.sock) first.
    type: path
  fail_on_unhealthy:
    description:
      - Fail when the sources are not healthy in time. With V(false) the module returns the report with
        RV(verified=false) instead.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: The module changes nothing; it performs the same checks in check mode.
notes:
  - Works with chrony 4.0 to 4.8 (the C(ntpdata) layout is chosen from its field count, 33, 34 or 38 fields).
  - Each poll runs one C(chronyc) process; chrony older than 4.4 has no C(-e), the reports are split by shape.
seealso:
  - name: chronyc authdata
    description: Meaning of the authdata columns.
    link: https://chrony-project.org/doc/4.3/chronyc.html#authdata
"""

EXAMPLES = r"""
- name: Restart chronyd and prove NTS works
  become: true
  block:
    - name: Restart chrony
      ansible.builtin.service:
        name: chrony
        state: restarted

    - name: Verify the NTS sources
      chrony_authdata:
        sources: "{{ chrony_nts_servers | map(attribute='name') | list }}"
        min_sources: 1
        timeout: 60
      register: nts_check

- name: Report without failing (for dashboards)
  become: true
  chrony_authdata:
    timeout: 5
    fail_on_unhealthy: false
  register: nts_report

- name: Check a chronyd with its own command socket
  become: true
  chrony_authdata:
    socket: /run/chrony-test/chronyd.sock
    timeout: 10
    require_selected: true
"""

RETURN = r"""
verified:
  description: Whether the requirements held before the timeout.
  returned: always
  type: bool
  sample: true
elapsed:
  description: Seconds from the module's start until the requirements held (or until it gave up).
  returned: always
  type: float
  sample: 0.52
polls:
  description: Number of chronyc calls made.
  returned: always
  type: int
  sample: 3
sources:
  description: Per-source report of the last poll (NTP sources of the running chronyd plus missing required names).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name as configured (C(chronyc -N))
      type: str
      sample: ntp1.example.net
    address:
      description: IP address the source uses (from ntpdata)
      type: str
      sample: 192.0.2.10
    mode:
      description: "Authentication mode: C(NTS), C(SK) or C(-)"
      type: str
      sample: NTS
    key_id:
      description: For NTS the number of successful key exchanges
      type: int
      sample: 1
    aead:
      description: NTS AEAD algorithm id (15 AES-SIV-CMAC-256, 30 AES-128-GCM-SIV)
      type: int
      sample: 15
    key_length:
      description: Key length in bits
      type: int
      sample: 256
    last_key_exchange:
      description: Seconds since the last successful key exchange, null if never
      type: int
    attempts:
      description: Key exchange attempts since the last success
      type: int
      sample: 0
    naks:
      description: NTS NAKs received since the last request
      type: int
      sample: 0
    cookies:
      description: Cookies held
      type: int
      sample: 8
    cookie_length:
      description: Length of the next cookie in bytes
      type: int
      sample: 100
    reach:
      description: Reachability register as an integer
      type: int
      sample: 255
    reach_octal:
      description: Reachability register in octal as chronyc shows it
      type: str
      sample: "377"
    state:
      description: "Selection state: C(*) selected, C(+) combined, C(-), C(x), C(~), C(?)"
      type: str
    stratum:
      description: Stratum of the source
      type: int
      sample: 2
    offset:
      description: Adjusted offset of the last sample in seconds
      type: float
      sample: -0.000012
    last_rx:
      description: Seconds since the last good sample, null if never
      type: int
    authenticated:
      description: Whether the last NTP response was authenticated
      type: bool
    healthy:
      description: Whether the source meets the health predicate
      type: bool
    cause:
      description: Most likely cause when unhealthy, null when healthy
      type: str
    problems:
      description: All problems found, most fundamental first
      type: list
      elements: str
healthy_sources:
  description: Names of healthy sources.
  returned: always
  type: list
  elements: str
  sample: [ntp1.example.net]
unhealthy_sources:
  description: Unhealthy sources with their most likely cause.
  returned: always
  type: list
  elements: dict
  sample:
    - name: ntp2.example.net
      cause: "NTS key exchange never succeeded (TCP 4460 blocked, server down, or certificate rejected: ...)"
reasons:
  description: Why the requirements do not hold (empty when verified).
  returned: always
  type: list
  elements: str
tracking:
  description: Parsed C(chronyc -c tracking) of the last poll (offsets in seconds, frequencies in ppm).
  returned: when chronyd answered
  type: dict
chrony_version:
  description: Parsed C(chronyd --version) (or C(chronyc --version) if chronyd is not found).
  returned: when the version could be read
  type: dict
  sample: {program: chronyd, version: "4.3", version_tuple: [4, 3], nts: true, features: {NTS: true, CMDMON: true}}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.nts.chrony.plugins.module_utils.chronyc import (  # noqa: E402
    ChronyParseError,
    parse_version,
)
from ansible_collections.nts.chrony.plugins.module_utils.nts_health import (  # noqa: E402
    burst_command,
    status_command,
    wait_for_nts,
)


def read_version(module, chronyc):
    """chronyd --version (for the +NTS flag), falling back to chronyc --version; None if neither works."""
    candidates = [module.get_bin_path("chronyd", opt_dirs=["/usr/sbin", "/sbin", "/usr/local/sbin"]), chronyc]
    for prog in candidates:
        if not prog:
            continue
        rc, out, _err = module.run_command([prog, "--version"])
        if rc == 0:
            try:
                return parse_version(out)
            except ChronyParseError:
                continue
    return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            min_sources=dict(type="int", default=1),
            sources=dict(type="list", elements="str", default=[]),
            timeout=dict(type="float", default=60.0),
            interval=dict(type="float", default=0.25),
            require_selected=dict(type="bool", default=False),
            require_synchronised=dict(type="bool", default=False),
            chronyc_path=dict(type="str", default="chronyc"),
            socket=dict(type="path"),
            fail_on_unhealthy=dict(type="bool", default=True),
            fresh=dict(type="bool", default=True),
            burst=dict(type="bool", default=True),
            wait_all=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["min_sources"] < 0:
        module.fail_json(msg=f"min_sources must be >= 0, got {p['min_sources']}")
    if p["timeout"] < 0:
        module.fail_json(msg=f"timeout must be >= 0 seconds, got {p['timeout']}")
    if not p["interval"] > 0:
        module.fail_json(msg=f"interval must be > 0 seconds, got {p['interval']}")
    required = [name for name in p["sources"] if name]
    if len(required) != len(p["sources"]):
        module.fail_json(msg="sources must not contain empty names", sources=p["sources"])

    if "/" in p["chronyc_path"]:
        chronyc = p["chronyc_path"]
    else:
        chronyc = module.get_bin_path(p["chronyc_path"], opt_dirs=["/usr/bin", "/usr/sbin"])
    if not chronyc:
        module.fail_json(msg=f"chronyc_path: {p['chronyc_path']!r} not found: is chrony installed?")

    version = read_version(module, chronyc)
    result = dict(
        changed=False,
        verified=False,
        elapsed=0.0,
        polls=0,
        sources=[],
        healthy_sources=[],
        unhealthy_sources=[],
        reasons=[],
    )
    if version is not None:
        result["chrony_version"] = version.to_dict()
        if version.nts is False:
            module.fail_json(
                msg=f"{version.program} {version.version} was built without NTS support (-NTS): NTS cannot work",
                **result,
            )

    target = f"socket {p['socket']}" if p["socket"] else "the default command socket"
    polled = wait_for_nts(
        module.run_command,
        status_command(chronyc, p["socket"]),
        target=target,
        min_sources=p["min_sources"],
        required=required,
        timeout=p["timeout"],
        interval=p["interval"],
        require_selected=p["require_selected"],
        require_synchronised=p["require_synchronised"],
        fresh=p["fresh"],
        burst=burst_command(chronyc, p["socket"]) if p["burst"] and p["fresh"] else None,
        wait_all=p["wait_all"],
    )
    msg = polled.pop("msg", None)
    fatal = polled.pop("fatal", False)
    result.update(polled)
    if result["verified"]:
        module.exit_json(**result)
    if fatal or p["fail_on_unhealthy"]:
        module.fail_json(msg=msg, **result)
    result["msg"] = msg
    module.exit_json(**result)


if __name__ == "__main__":
    main()
