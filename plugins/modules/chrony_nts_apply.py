#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: chrony_nts_apply
short_description: Write chrony's files, restart, prove NTS works and roll back if it does not, in one call
description:
  - The change-and-prove step of the C(chrony_nts) role, done on the host in a single module call.
  - Before any change, checks that C(chronyd) is new enough and built with NTS, compares each file of O(files) with
    what is on the host, and validates every file whose content would change (for chrony.conf
    C(chronyd -p -f %s)). A file that fails validation stops the module with the validator's message; nothing is
    written.
  - When something would change, records a byte-exact rollback point of every listed file, writes the files
    atomically (same directory, then rename), reloads systemd when a unit file changed, and restarts O(service).
    Otherwise the service is only started if it is not running. It is enabled in both cases.
  - Then, on every run, changed or not, proves NTS works by polling C(chronyc) until the health predicate of the
    C(chrony_authdata) module holds (O(verify)). A second run is therefore a compliance check.
  - The proof is fresh. A source counts only on a valid, authenticated reply received during this call. After a
    (re)start everything chronyd received is new. Without one, the module takes the counters of C(chronyc ntpdata)
    as a baseline and runs C(chronyc burst 1/4) so every source answers within about 0.2 s instead of at its next
    poll. A server that stopped answering makes the run fail within O(verify.timeout), although chronyd keeps such a
    source selected for up to eight lost polls.
  - The proof goes through the trust settings just written. With O(config), every NTS source of that file gets a
    fingerprint of its trust inputs (name, port, ntsport, certset, the bytes of its C(ntstrustedcerts) files,
    C(nosystemcert)). A source whose fingerprint differs from the one recorded in O(trust_state) after the last proof
    (every source when there is no record) loses its saved cookies while chronyd is stopped, so the start makes a new
    NTS key exchange with the new settings, and the proof requires that key exchange to be newer than the start.
    Unchanged sources keep their cookies.
  - Every C(ntstrustedcerts) path of O(config) must exist on the host and hold a PEM certificate (a site server's
    C(ca_file) included), else the module stops before any change.
  - When the service does not come up or the proof fails after a change, every file is put back byte for byte,
    systemd reloaded when needed, the service restarted on the restored files, and the module fails with the verify
    report, chronyd's own log line for each failed source, and what was restored.
version_added: "1.0.0"
author:
  - chrony-nts project (@chrony-nts)
options:
  files:
    description: The files the module manages; every one is in the rollback point.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      state:
        description: V(present) writes O(files[].content); V(absent) removes the file.
        type: str
        choices: [present, absent]
        default: present
      content:
        description:
          - The whole content of the file. It is part of the task's arguments and is shown in diff mode, so it is not
            for secrets (install keys with a C(no_log) task, as the C(chrony_nts_server) role does).
        type: str
      owner:
        description: Owner.
        type: str
        default: root
      group:
        description: Group.
        type: str
        default: root
      mode:
        description: Octal mode, as a string.
        type: str
        default: "0644"
      validate:
        description:
          - Command run on a temporary copy before anything is written, C(%s) standing for its path; a non-zero
            exit stops the module. Runs only when the content would change.
        type: str
      unit:
        description: The file is a systemd unit or drop-in; a change reloads systemd before the restart.
        type: bool
        default: false
  service:
    description: systemd service of chronyd (C(chrony) on Debian, C(chronyd) on RHEL).
    type: str
    required: true
  restart:
    description:
      - Restart the service even when none of O(files) changes, for a change made by another task that chronyd reads
        only at start (the C(chrony_nts_server) role's key and certificate). The proof follows the restart; those
        other files are not in the rollback point.
    type: bool
    default: false
  chronyd:
    description: Path of chronyd, used for the version check.
    type: path
    default: /usr/sbin/chronyd
  min_version:
    description: Oldest chronyd accepted. chronyd must also be built with NTS (C(+NTS)).
    type: str
    default: "4.0"
  min_version_reason:
    description: Why O(min_version) is needed, for the error message.
    type: str
    default: NTS needs it
  verify:
    description:
      - The proof, with the options of the C(chrony_authdata) module. Omit it to skip the proof.
    type: dict
    suboptions:
      sources:
        description: Configured names that must each be healthy.
        type: list
        elements: str
        default: []
      min_sources:
        description: Healthy NTS sources required.
        type: int
        default: 1
      timeout:
        description: Seconds to wait for the predicate.
        type: float
        default: 60.0
      interval:
        description: Seconds between polls.
        type: float
        default: 0.25
      require_selected:
        description: Healthy sources must also be selectable (C(*) or C(+)).
        type: bool
        default: false
      require_synchronised:
        description: The clock must be synchronised.
        type: bool
        default: false
      fresh:
        description:
          - Count a source only on an authenticated reply received during this call (see the description). V(false)
            judges chronyd's history (reach, cookies, last sample), which can be minutes or hours old.
        type: bool
        default: true
      baseline:
        description:
          - The reply counters that M(nts.chrony.chrony_nts_host) read with C(start_check=true) earlier in the same
            run (its RV(nts.chrony.chrony_nts_host#module:nts_baseline)). Replies received since then count as fresh,
            so the burst it started has usually been answered before this module looks. Ignored when this call
            (re)starts chronyd.
        type: dict
      server:
        description:
          - After the proof, also prove that this host's chronyd serves NTS (the C(chrony_nts_server) role). chrony's
            own NTS client runs once from this host (C(chronyd -Q -x), which neither steers the clock nor touches the
            running daemon) against O(verify.server.name), trusting only O(verify.server.trust), and must get an
            authenticated sample; this chronyd's C(serverstats) must count the key exchange and the authenticated NTP
            request.
          - With O(config) and an C(ntsdumpdir) in it, the server's cookie keys (C(ntskeys)) must also have been saved
            there, mode 0600, owned by chronyd's user.
          - The report is in RV(verify.server). Omit it to not prove the server.
        type: dict
        suboptions:
          name:
            description: The name clients use for this server; its certificate must be valid for it.
            type: str
            required: true
          ntsport:
            description: The NTS-KE port the server listens on.
            type: int
            default: 4460
          trust:
            description: The certificate (or CA bundle) the check trusts, in PEM; the system's CAs are not used.
            type: path
            required: true
          timeout:
            description: Seconds the one-shot client may take (at least 1).
            type: float
            default: 10.0
  config:
    description:
      - Path of chrony's main configuration file (one of O(files) or already on the host). Its NTS sources' trust
        settings are tracked in O(trust_state); omit it to not track them.
    type: path
  trust_state:
    description: Where the trust fingerprints of the last successful proof are kept (root only, mode 0600).
    type: path
    default: /var/lib/chrony-nts/trust.json
  live_trust:
    description:
      - When the only files that change are C(ntstrustedcerts) bundles (a CA added or replaced), renew the NTS
        sources that use them in the running chronyd instead of restarting it. Each such source is deleted with
        chronyc, its saved cookies are removed, and it is added again with its line of the new configuration, so its
        next NTS key exchange reads the new bundle. The proof then requires that key exchange. The other sources keep
        their state and cookies, and the clock keeps its sources.
      - Used with chronyd 4.3 or later (measured on 4.3, 4.6.1 and 4.9, which read the bundle at each key exchange),
        while chronyd is running, for C(server) sources that chronyd has resolved. Otherwise the change restarts
        chronyd as any other.
      - A failed proof rolls back as after a restart; chronyd is then restarted on the old files.
    type: bool
    default: true
  secret_files:
    description:
      - Files whose content is a secret (the NTS server key). Handled like O(files) (compared, in the rollback point,
        written atomically, a change restarts the service) but never shown in diffs, logs or results, and a change
        that includes one keeps no C(previous/) copy. Directories created for them are mode 0750 with the file's group.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      content:
        description: The whole content (no_log).
        type: str
        required: true
      owner:
        description: Owner.
        type: str
        default: root
      group:
        description: Group.
        type: str
        default: root
      mode:
        description: Octal mode.
        type: str
        default: "0600"
  managed:
    description: The C(ansible_managed) text written at the top of the units this module generates.
    type: str
    default: "Managed by chrony-nts (Ansible): local changes are overwritten."
  monitor:
    description:
      - The host-side health check, in the same transaction. This module carries the check's code (the collection's
        C(chronyc), C(nts_health), C(nts_metrics) and C(nts_check) module_utils) to O(monitor.prefix) at its package
        path, writes a oneshot service and a timer (C(chrony-nts-check)), and after the proof enables the timer. The
        check runs C(python3 -E -s -m ansible_collections.nts.chrony.plugins.module_utils.nts_check), evaluates the
        deploy proof's fresh predicate and writes node_exporter textfile metrics to O(monitor.output).
      - Its files never restart chronyd; they are in the rollback point like the others.
      - As root it keeps only CAP_DAC_OVERRIDE (chronyd's socket directory belongs to the chrony user), without
        network, with a read-only file system but the metrics directory.
    type: dict
    suboptions:
      enabled:
        description:
          - Install and run the check; V(false) stops it and removes its code, units and metrics file
            (O(monitor.output)).
        type: bool
        default: true
      interval:
        description: Seconds between checks.
        type: int
        default: 60
      timeout:
        description: Seconds one check may take (a dead source makes it take that long).
        type: float
        default: 20.0
      output:
        description: The metrics file, in node_exporter's textfile directory (created when missing).
        type: path
        default: /var/lib/prometheus/node-exporter/chrony_nts.prom
      user:
        description:
          - User the check runs as. The chrony user (C(_chrony), C(chrony)) works where it may write O(monitor.output)'s
            directory; root (the default) is kept to CAP_DAC_OVERRIDE.
        type: str
        default: root
      prefix:
        description: Where the check's code goes.
        type: path
        default: /usr/local/lib/chrony-nts
      args:
        description: More arguments of the check (C(--source NAME), C(--min-sources N), C(--serverstats), ...).
        type: list
        elements: str
        default: []
      boot_wait:
        description:
          - Order boot after authenticated time. C(chrony-nts-wait.service), enabled, runs the same check at boot
            before C(time-sync.target), so units ordered C(After=time-sync.target) start once chronyd has
            authenticated time, or after O(monitor.boot_wait_timeout) seconds at most (the unit then fails and boot
            goes on). V(false) removes it.
        type: bool
        default: false
      boot_wait_timeout:
        description: The bound of the boot wait, in seconds.
        type: int
        default: 120
  rollback:
    description: Keep a rollback point and restore it when the service or the proof fails after a change.
    type: bool
    default: true
  snapshot:
    description:
      - Directory of the pending rollback point. After a successful change it is kept as C(previous) beside it.
    type: path
    default: /var/lib/chrony-nts/snapshot
  run_id:
    description: Identifier of the playbook run; a pending rollback point of the same run is kept, not replaced.
    type: str
    default: ''
attributes:
  check_mode:
    support: full
    description:
      - Reports what would change, with diffs, and validates the new content; writes nothing, restarts nothing.
      - Verifies only when nothing would change and chronyd is installed (the running chronyd does not run the new
        files otherwise).
  diff_mode:
    support: full
    description:
      - Returns a diff of each file that changes (or would, in check mode); for O(secret_files) only the path, with
        the content replaced by C((secret content not shown\)).
notes:
  - Only the Python standard library is used on the target.
  - File contents are returned only as diffs in diff mode; never pass secrets in O(files).
seealso:
  - module: nts.chrony.chrony_authdata
  - module: nts.chrony.chrony_nts_snapshot
  - module: nts.chrony.chrony_nts_host
"""

EXAMPLES = r"""
- name: Configure chrony, restart it, prove NTS works (rolled back when it does not)
  chrony_nts_apply:
    service: chrony
    files:
      - path: /etc/chrony/chrony.conf
        content: "{{ lookup('ansible.builtin.template', 'chrony.conf.j2') }}"
        validate: /usr/sbin/chronyd -p -f %s
      - path: /etc/systemd/system/chrony.service.d/50-chrony-nts.conf
        state: absent
        unit: true
    verify:
      sources: [nts.netnod.se, ptbtime1.ptb.de]
      min_sources: 2
      timeout: 60
"""

RETURN = r"""
changed_files:
  description: Paths written or removed (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/etc/chrony/chrony.conf]
restarted:
  description: Whether the service was restarted (or started) by this run.
  returned: always
  type: bool
enabled:
  description: Whether this run enabled the service.
  returned: always
  type: bool
reloaded:
  description: Whether systemd was reloaded because a unit file changed.
  returned: always
  type: bool
chrony_version:
  description: The version of chronyd, when it is installed.
  returned: when chronyd is installed
  type: str
  sample: "4.3"
verify:
  description:
    - The proof, as the C(chrony_authdata) module returns it (C(verified), C(elapsed), C(polls), C(sources),
      C(healthy_sources), C(unhealthy_sources), C(reasons), C(tracking)); C(skipped) with the reason when not run.
  returned: always
  type: dict
  contains:
    server:
      description:
        - With O(verify.server), the server proof. C(name) and C(ntsport) probed, C(rc) of the one-shot
          C(chronyd -Q), C(elapsed) seconds, and C(served), what this chronyd's C(serverstats) gained
          (C(nts_ke_accepted), C(authenticated_ntp)).
      returned: when O(verify.server) is set and the sources were proven (not in check mode)
      type: dict
      sample: {name: ntp1.example.net, ntsport: 4460, rc: 0, elapsed: 1.2,
               served: {nts_ke_accepted: 1, authenticated_ntp: 1}}
log_causes:
  description: For each unhealthy source, chronyd's latest log line about it since its last start.
  returned: on failure, when sources were unhealthy
  type: dict
  sample:
    nts-badca.lab.test: "TLS handshake with 10.89.0.7:4460 (nts-badca.lab.test) failed : The certificate issuer is..."
timings:
  description: Seconds spent in each step that ran (C(version), C(compare_validate), C(snapshot), C(write),
    C(daemon_reload), C(service), C(verify), C(verify_server), C(monitor)), for benchmarks and slow hosts.
  returned: always
  type: dict
  sample: {version: 0.004, compare_validate: 0.011, snapshot: 0.003, write: 0.002, service: 0.21, verify: 1.8}
trust:
  description:
    - With O(config), the NTS sources whose trust settings differ from the last proof (C(changed_sources)), why
      (C(reason)), the record used (C(record)) and the cookie files removed before the start (C(dropped_cookies)).
  returned: when O(config) and O(verify) are set and chronyd is installed
  type: dict
  sample: {changed_sources: [nts1.example.net], reason: trust settings changed since the last proof,
           record: /var/lib/chrony-nts/trust.json, dropped_cookies: [/var/lib/chrony/192.0.2.1.nts]}
renewed_sources:
  description:
    - The NTS sources renewed in the running chronyd (see O(live_trust)) instead of a restart, with the address each
      was deleted at. Empty when chronyd was restarted or nothing had to be renewed.
  returned: success
  type: list
  elements: dict
  sample: [{name: nts1.example.net, address: 192.0.2.1}]
monitor:
  description: With O(monitor), whether the health check is on (C(enabled)), its timer (C(timer)) and its metrics
    file (C(output)).
  returned: when O(monitor) is set and the proof passed (not in check mode)
  type: dict
  sample: {enabled: true, timer: chrony-nts-check.timer, output: /var/lib/prometheus/node-exporter/chrony_nts.prom}
rollback:
  description: What the rollback did (C(restored), C(removed_dirs), C(restarted) or C(stopped), C(disabled), C(error)).
  returned: on failure after a change
  type: dict
"""

import grp  # noqa: E402
import os  # noqa: E402
import pkgutil  # noqa: E402
import pwd  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import stat  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.nts.chrony.plugins.module_utils import nts_check  # noqa: E402
from ansible_collections.nts.chrony.plugins.module_utils.atomic_write import selinux_label, write_atomic  # noqa: E402
from ansible_collections.nts.chrony.plugins.module_utils.chrony_host import explain_causes, journal_causes  # noqa: E402
from ansible_collections.nts.chrony.plugins.module_utils.chrony_trust import (  # noqa: E402
    changed_sources,
    dump_files,
    fingerprints,
    load_proven,
    parse_trust,
    read_trust_path,
    save_proven,
    trust_problems,
)
from ansible_collections.nts.chrony.plugins.module_utils.chronyc import (  # noqa: E402
    ChronycError,
    ChronyParseError,
    parse_serverstats,
    parse_sources,
    parse_version,
)
from ansible_collections.nts.chrony.plugins.module_utils.file_snapshot import (  # noqa: E402
    SnapshotError,
    discard_snapshot,
    restore_snapshot,
    save_snapshot,
)
from ansible_collections.nts.chrony.plugins.module_utils.nts_health import (  # noqa: E402
    burst_command,
    status_command,
    wait_for_nts,
)

# chronyd versions measured to read their ntstrustedcerts files again at each NTS key exchange (4.3, 4.6.1, 4.9):
# from these on, a CA bundle change is applied by renewing its sources instead of restarting (option live_trust).
LIVE_TRUST_MIN_VERSION = "4.3"
UNIT_PROPS = "--property=LoadState,ActiveState,SubState,Result,ConditionResult,UnitFileState"
# What `systemctl is-enabled` (and UnitFileState) say of a unit that starts at boot, or needs no enabling.
ENABLED_STATES = ("enabled", "enabled-runtime", "static", "alias", "indirect", "generated")


class ApplyError(Exception):
    """A step failed; ``stage`` says which, the message says why."""

    def __init__(self, stage, msg):
        super(ApplyError, self).__init__(msg)
        self.stage = stage


def _version_tuple(text):
    return tuple(int(x) for x in text.split(".") if x.isdigit())


class Host(object):
    """The commands the module runs, in one place (module.run_command underneath)."""

    def __init__(self, module):
        self.module = module
        self.systemctl = module.get_bin_path("systemctl")

    def run(self, argv):
        return self.module.run_command(argv)

    def systemctl_do(self, *args):
        if not self.systemctl:
            raise ApplyError("service", "systemctl not found: chrony_nts_apply needs systemd")
        rc, out, err = self.run([self.systemctl, *args])
        return rc, out, err

    def unit_states(self, units):
        """{unit: {property: value}} of several units, read with one `systemctl show` (one block per unit, in order)."""
        rc, out, err = self.systemctl_do("show", UNIT_PROPS, "--", *units)
        if rc != 0:
            raise ApplyError("service", "systemctl show %s failed (rc %d): %s" % (" ".join(units), rc, err.strip()))
        blocks = [block for block in out.split("\n\n") if block.strip()]
        if len(blocks) != len(units):
            shown = "systemctl show gave %d blocks for %d units" % (len(blocks), len(units))
            raise ApplyError("service", "%s (%s)" % (shown, " ".join(units)))
        return {
            unit: dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            for unit, block in zip(units, blocks)
        }

    def unit_state(self, service, kind="service"):
        unit = service + "." + kind
        return self.unit_states([unit])[unit]


def desired_files(module, lenient=False):
    """Check the file lists (O(files), then O(secret_files)); returns the entries with their wanted bytes, uid, gid
    and mode. ``lenient`` (check mode before chrony is installed): an owner or group the package will create is not
    an error yet."""
    seen = set()
    entries = []
    # Secret files first: a directory they share with other files is created for the secret (0750, its group).
    items = [("secret_files", dict(item, state="present", validate=None, unit=False, secret=True))
             for item in module.params["secret_files"] or []]  # fmt: skip
    items += [("files", dict(item, secret=False)) for item in module.params["files"]]
    if module.params["monitor"] is not None:
        generated = monitor_entries(module.params["monitor"], module.params["service"], module.params["managed"])
        defaults = dict(owner="root", group="root", mode="0644", validate=None, unit=False, state="present",
                        content=None, secret=False)  # fmt: skip
        items += [("monitor", dict(defaults, **entry)) for entry in generated]
    counters = {"files": 0, "secret_files": 0, "monitor": 0}
    for option, item in items:
        index = counters[option]
        counters[option] += 1
        where = "%s[%d] (%s)" % (option, index, item["path"])
        path = item["path"]
        if not os.path.isabs(path):
            module.fail_json(msg="%s: path must be absolute" % where)
        if path in seen:
            module.fail_json(msg="%s: listed twice" % where)
        seen.add(path)
        entry = dict(item)
        if item["state"] == "present":
            if item["content"] is None:
                module.fail_json(msg="%s: content is required with state=present" % where)
            try:
                entry["uid"] = pwd.getpwnam(item["owner"]).pw_uid
            except KeyError:
                if not lenient:
                    module.fail_json(msg="%s: owner %r does not exist on this host" % (where, item["owner"]))
                entry["uid"] = None
            try:
                entry["gid"] = grp.getgrnam(item["group"]).gr_gid
            except KeyError:
                if not lenient:
                    module.fail_json(msg="%s: group %r does not exist on this host" % (where, item["group"]))
                entry["gid"] = None
            try:
                entry["mode_int"] = int(item["mode"], 8)
            except ValueError:
                module.fail_json(msg="%s: mode %r is not an octal number" % (where, item["mode"]))
            entry["bytes"] = item["content"].encode("utf-8", "surrogateescape")
        entries.append(entry)
    return entries


def current_state(entry):
    """(exists, bytes or None, uid, gid, mode) of the file on the host."""
    try:
        st = os.lstat(entry["path"])
    except FileNotFoundError:
        return False, None, None, None, None
    if stat.S_ISDIR(st.st_mode):
        raise ApplyError("compare", "%s is a directory" % entry["path"])
    data = None
    if stat.S_ISREG(st.st_mode):
        with open(entry["path"], "rb") as handle:
            data = handle.read()
    return True, data, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def plan(entries):
    """Mark each entry with what would change; returns the entries that change."""
    changes = []
    for entry in entries:
        exists, data, uid, gid, mode = current_state(entry)
        entry["before"] = data
        entry["existed"] = exists
        if entry["state"] == "absent":
            entry["content_changed"] = exists
            entry["attrs_changed"] = False
        else:
            entry["content_changed"] = data != entry["bytes"]
            entry["attrs_changed"] = exists and (uid, gid, mode) != (entry["uid"], entry["gid"], entry["mode_int"])
        if entry["content_changed"] or entry["attrs_changed"]:
            changes.append(entry)
    return changes


def validate(host, entry):
    """Run the entry's validate command on a private temporary copy; raise ApplyError when it fails."""
    workdir = tempfile.mkdtemp(prefix="chrony-nts-validate-")
    try:
        copy = os.path.join(workdir, os.path.basename(entry["path"]))
        with open(copy, "wb") as handle:
            handle.write(entry["bytes"])
        os.chmod(copy, 0o644)
        command = entry["validate"]
        if "%s" not in command:
            raise ApplyError("validate", "files (%s): validate must contain %%s, got %r" % (entry["path"], command))
        argv = [copy if word == "%s" else word.replace("%s", copy) for word in command.split()]
        rc, out, err = host.run(argv)
        if rc != 0:
            detail = (err.strip() or out.strip() or "no output").replace(copy, entry["path"] + " (new)")
            raise ApplyError(
                "validate",
                "the new %s failed validation (%s, rc %d): %s; nothing was changed"
                % (entry["path"], command.replace("%s", "FILE"), rc, detail),
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _make_parents(path, secret_gid=None):
    directory = os.path.dirname(path)
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for directory in reversed(missing):
        if secret_gid is None:
            # Configuration directories (a CA directory, a systemd drop-in directory): root's, readable by chronyd.
            os.mkdir(directory, 0o755)
            os.chmod(directory, 0o755)  # noqa: S103 - the umask must not make them unreadable
        else:
            # The directory of a secret (the NTS server key): root and the file's group (chronyd's) only.
            os.mkdir(directory, 0o750)
            os.chown(directory, 0, secret_gid)
            os.chmod(directory, 0o750)  # noqa: S103 - root and chronyd's group (the key's reader)
    return list(reversed(missing))


def write(entry, restorecon):
    """Put a present entry in place atomically (temp file in its directory, then rename), keeping the SELinux label."""
    path = entry["path"]
    created = _make_parents(path, entry["gid"] if entry.get("secret") else None)
    label = selinux_label(path) if entry["existed"] else None
    write_atomic(path, entry["bytes"], entry["mode_int"], owner=(entry["uid"], entry["gid"]), label=label)
    if label is None and restorecon:
        restorecon([*created, path])


MONITOR_UNIT = "chrony-nts-check"
# The sandbox both health-check services run in (root with CAP_DAC_OVERRIDE only, or an unprivileged user).
UNIT_SANDBOX = """NoNewPrivileges=yes
{capabilities}PrivateNetwork=yes
PrivateTmp=yes
ProtectSystem=strict
ProtectHome=yes
ReadWritePaths={output_dir}
"""
MONITOR_SERVICE = (
    """# {managed}
# The chrony-nts health check: the deploy proof's fresh predicate, every {interval} s, as node_exporter metrics.
[Unit]
Description=chrony-nts: prove authenticated time now and write node_exporter metrics
After={service}.service
Wants={service}.service

[Service]
Type=oneshot
WorkingDirectory={prefix}
ExecStart=/usr/bin/python3 -B -E -s -m {module} --timeout {timeout} --output {output}{args}
# exit 2 = checked, not healthy: the metrics say so; the unit did its job
SuccessExitStatus=2
TimeoutStartSec={unit_timeout}
User={user}
Nice=10
"""
    + UNIT_SANDBOX
)
WAIT_UNIT = "chrony-nts-wait"
WAIT_SERVICE = (
    """# {managed}
# Boot ordering: services ordered after time-sync.target start once chronyd has authenticated time (the deploy
# proof's fresh predicate), or after {boot_timeout} s at most (then this unit fails and boot goes on).
[Unit]
Description=chrony-nts: wait until chronyd has authenticated time (at most {boot_timeout} s)
After={service}.service
Wants={service}.service time-sync.target
Before=time-sync.target

[Service]
Type=oneshot
RemainAfterExit=yes
WorkingDirectory={prefix}
ExecStart=/usr/bin/python3 -B -E -s -m {module} --timeout {boot_timeout} --output {output}{args}
TimeoutStartSec={boot_unit_timeout}
User={user}
"""
    + UNIT_SANDBOX
    + """
[Install]
WantedBy=multi-user.target
"""
)
MONITOR_TIMER = """# {managed}
[Unit]
Description=chrony-nts: run the NTS health check every {interval} s

[Timer]
OnBootSec={interval}
OnUnitActiveSec={interval}
AccuracySec=1

[Install]
WantedBy=timers.target
"""


def monitor_entries(spec, service, managed):
    """The files of the host-side check: its code (carried by this module from the collection's module_utils), a
    oneshot service and a timer. With spec['enabled'] false, the same paths with state absent."""
    prefix = spec["prefix"]
    package = os.path.join(prefix, nts_check.PACKAGE_DIR)
    unit_dir = "/etc/systemd/system"
    paths = [os.path.join(package, name) for name in nts_check.HOST_FILES]
    units = [os.path.join(unit_dir, MONITOR_UNIT + ".service"), os.path.join(unit_dir, MONITOR_UNIT + ".timer")]
    wait = os.path.join(unit_dir, WAIT_UNIT + ".service")
    if not spec["enabled"] and not spec["boot_wait"]:
        # the metrics file goes too: node_exporter would serve the last reading for ever, and the stale-check alert fire
        every = paths + units + [wait, spec["output"]]
        return [dict(path=path, state="absent", monitor=True, unit=path in units or path == wait) for path in every]
    entries = []
    for name, path in zip(nts_check.HOST_FILES, paths):
        data = pkgutil.get_data("ansible_collections.nts.chrony.plugins.module_utils", name)
        entries.append(dict(path=path, content=data.decode("utf-8"), mode="0644", monitor=True))
    root = spec["user"] == "root"
    fields = dict(
        managed=managed,
        interval=int(spec["interval"]),
        service=service,
        prefix=prefix,
        module=nts_check.MODULE,
        timeout=spec["timeout"],
        output=spec["output"],
        output_dir=os.path.dirname(spec["output"]),
        args="".join(" " + shlex.quote(a) for a in spec["args"]),
        unit_timeout=int(spec["timeout"]) + 30,
        user=spec["user"],
        # root needs CAP_DAC_OVERRIDE only: chronyd's socket directory belongs to the chrony user
        capabilities="CapabilityBoundingSet=CAP_DAC_OVERRIDE\n" if root else "CapabilityBoundingSet=\n",
        boot_timeout=int(spec["boot_wait_timeout"]),
        boot_unit_timeout=int(spec["boot_wait_timeout"]) + 30,
    )
    if spec["enabled"]:
        entries.append(dict(path=units[0], content=MONITOR_SERVICE.format(**fields), unit=True, monitor=True))
        entries.append(dict(path=units[1], content=MONITOR_TIMER.format(**fields), unit=True, monitor=True))
    else:
        entries += [dict(path=path, state="absent", monitor=True, unit=True) for path in units]
        entries.append(dict(path=spec["output"], state="absent", monitor=True, unit=False))
    if spec["boot_wait"]:
        entries.append(dict(path=wait, content=WAIT_SERVICE.format(**fields), unit=True, monitor=True))
    else:
        entries.append(dict(path=wait, state="absent", monitor=True, unit=True))
    return entries


def _resolve_error(name):
    """Why ``name`` does not resolve on this host, or None when it does (or is an address)."""
    try:
        socket.getaddrinfo(name, 123, 0, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        return exc.strerror or str(exc)
    except (OSError, UnicodeError) as exc:
        return str(exc)
    return None


def _diff(entries):
    diffs = []
    for entry in entries:
        if entry.get("secret"):
            hidden = "(secret content not shown)\n"
            diffs.append({"before_header": entry["path"], "after_header": entry["path"],
                          "before": hidden if entry["existed"] else "", "after": hidden})  # fmt: skip
            continue
        before = entry["before"].decode("utf-8", "replace") if entry["before"] is not None else ""
        after = entry["content"] if entry["state"] == "present" else ""
        diffs.append({"before_header": entry["path"], "after_header": entry["path"], "before": before, "after": after})
    return diffs


class Apply(object):
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.host = Host(module)
        self.result = dict(
            changed=False,
            changed_files=[],
            restarted=False,
            enabled=False,
            reloaded=False,
            verify={},
            renewed_sources=[],
        )
        self.start = self._last = time.monotonic()
        self.was_active = True
        self.states = {}  # the units' states read before any change (unit_states)
        self.changes = []
        self.started_at = None  # monotonic time just before this run (re)started chronyd
        self.trust = None
        self.live = None  # the sources to renew in the running chronyd instead of a restart (live_plan)
        self.ke_since = None  # monotonic time after which the renewed sources' key exchange must be
        self.result["timings"] = {}

    def lap(self, step):
        now = time.monotonic()
        self.result["timings"][step] = round(now - self._last, 3)
        self._last = now

    def fail(self, msg, **extra):
        self.result.update(extra)
        self.result["elapsed"] = round(time.monotonic() - self.start, 3)
        self.module.fail_json(msg=msg, **self.result)

    # --- before any change --------------------------------------------------------------------------------------
    def check_chronyd(self):
        path = self.p["chronyd"]
        if not os.path.exists(path):
            return False
        rc, out, err = self.host.run([path, "--version"])
        try:
            version = parse_version(out) if rc == 0 else None
        except ChronyParseError:
            version = None
        if version is None:
            self.fail(
                "`%s --version` gave no version (rc %d): %s; nothing was configured" % (path, rc, (err or out).strip())
            )
        self.result["chrony_version"] = version.version
        if _version_tuple(version.version) < _version_tuple(self.p["min_version"]) or version.nts is False:
            self.fail(
                "chronyd on this host cannot do this: `%s --version` says '%s'; chrony >= %s built with +NTS is "
                "required (%s; some distributions ship NTS in a separate package). Nothing was configured."
                % (path, out.strip(), self.p["min_version"], self.p["min_version_reason"])
            )
        return True

    def trust_plan(self, entries):
        """Which NTS sources' trust inputs differ from those last proven on this host (None: not tracked).

        Every ``ntstrustedcerts`` path of the new configuration must exist and hold a certificate, whether this run
        writes it or it is already on the host (a site server's ``ca_file``): a missing one stops the run here.
        """
        config = self.p["config"]
        if not config or self.p["verify"] is None:
            return None
        pending = {e["path"]: (e["bytes"] if e["state"] == "present" else None) for e in entries}
        if config in pending:
            data = pending[config]
        else:
            data = read_trust_path(config)
        if data is None:
            return None
        parsed = parse_trust(data.decode("utf-8", "replace"))

        def read(path):
            return read_trust_path(path, pending)

        problems = trust_problems(parsed, read)
        if problems:
            self.fail(
                "the new %s trusts certificates that are not usable on this host: %s. Nothing was changed."
                % (config, "; ".join(problems)),
                stage="trust",
            )
        prints = fingerprints(parsed, read)
        proven = load_proven(self.p["trust_state"])
        changed = changed_sources(prints, proven)
        self.result["trust"] = {
            "changed_sources": changed,
            "record": self.p["trust_state"] if proven is not None else None,
            "reason": (
                "no record of a proven key exchange under the current trust settings"
                if proven is None
                else "trust settings changed since the last proof"
            )
            if changed
            else "unchanged since the last proof",
        }
        return {"parsed": parsed, "prints": prints, "changed": changed}

    def live_plan(self, changes):
        """The sources to renew in the running chronyd instead of restarting it, or None (see option live_trust).

        Only when the change is CA bundles alone: every file of the change that chronyd reads is an existing
        ``ntstrustedcerts`` path of the new configuration, the trust of some sources changed, chronyd (4.3+) runs,
        and each of those sources is a resolved ``server`` line (chronyc deletes it by address, then adds it back).
        """
        if not (self.p["live_trust"] and self.trust and self.trust["changed"] and self.was_active):
            return None
        if self.p["restart"] or _version_tuple(self.result.get("chrony_version", "0")) < _version_tuple(
            LIVE_TRUST_MIN_VERSION
        ):
            return None
        trusted = {path for _set_id, path in self.trust["parsed"]["trusted"]}
        chronyd_files = [e for e in changes if not e.get("monitor")]
        if not chronyd_files or any(
            e["path"] not in trusted or e["state"] != "present" or not e["existed"] for e in chronyd_files
        ):
            return None
        lines = {src["name"]: src for src in self.trust["parsed"]["sources"]}
        chronyc = self.module.get_bin_path("chronyc", opt_dirs=["/usr/bin", "/usr/sbin"])
        if not chronyc:
            return None
        addresses = self.source_addresses(chronyc)
        plan = []
        for name in self.trust["changed"]:
            src = lines.get(name)
            found = addresses.get(name, [])
            if src is None or src["directive"] != "server" or len(found) != 1:
                return None
            plan.append({"name": name, "address": found[0], "args": src["args"]})
        return {"chronyc": chronyc, "sources": plan}

    def source_addresses(self, chronyc):
        """{configured name: [addresses]} of chronyd's NTP sources (``sources`` with and without -N, by position)."""
        rc1, named, _err = self.host.run([chronyc, "-c", "-N", "sources"])
        rc2, plain, _err = self.host.run([chronyc, "-c", "-n", "sources"])
        try:
            named_rows, plain_rows = parse_sources(named), parse_sources(plain)
        except (ChronyParseError, ChronycError):
            return {}
        if rc1 != 0 or rc2 != 0 or len(named_rows) != len(plain_rows):
            return {}
        out = {}
        for name_row, addr_row in zip(named_rows, plain_rows):
            if name_row.mode in ("^", "="):
                out.setdefault(name_row.name, []).append(addr_row.name)
        return out

    def renew_sources(self):
        """Renew the sources of live_plan in the running chronyd: delete each (chronyd saves its cookies then), remove
        its saved cookies, add it again with its line of the new configuration. Its next key exchange reads the new
        CA bundle; the proof requires it (ke_since)."""
        chronyc = self.live["chronyc"]
        dumpdir = self.trust["parsed"]["ntsdumpdir"]
        self.ke_since = time.monotonic()
        removed = []
        for src in self.live["sources"]:
            rc, out, err = self.host.run([chronyc, "delete", src["address"]])
            if rc != 0:
                detail = (err or out).strip()
                raise ApplyError(
                    "service", "chronyc delete %s (%s) failed (rc %d): %s" % (src["address"], src["name"], rc, detail)
                )
            for path in dump_files(dumpdir, [src["name"]]):
                try:
                    os.unlink(path)
                    removed.append(path)
                except FileNotFoundError:
                    pass
            rc, out, err = self.host.run([chronyc, "add", "server", *src["args"]])
            if rc != 0:
                detail = (err or out).strip()
                raise ApplyError(
                    "service", "chronyc add server %s failed (rc %d): %s" % (" ".join(src["args"]), rc, detail)
                )
            self.result["renewed_sources"].append({"name": src["name"], "address": src["address"]})
        self.result["trust"]["dropped_cookies"] = removed

    def drop_cookies(self):
        """Remove the saved cookies of the sources whose trust changed (chronyd is stopped): the start then makes a
        new NTS key exchange with the new settings for them, and only for them."""
        removed = []
        for path in dump_files(self.trust["parsed"]["ntsdumpdir"], self.trust["changed"]):
            try:
                os.unlink(path)
                removed.append(path)
            except FileNotFoundError:
                pass
        self.result["trust"]["dropped_cookies"] = removed

    # --- the change -----------------------------------------------------------------------------------------------
    def restorecon(self, paths):
        tool = self.module.get_bin_path("restorecon")
        selinuxenabled = self.module.get_bin_path("selinuxenabled")
        if tool and selinuxenabled and self.host.run([selinuxenabled])[0] == 0:
            self.host.run([tool, "-F", *paths])

    def apply_changes(self, changes):
        for entry in changes:
            if entry["state"] == "absent":
                os.unlink(entry["path"])
            elif entry["content_changed"]:
                write(entry, self.restorecon)
            else:  # owner/group/mode only
                os.chown(entry["path"], entry["uid"], entry["gid"])
                os.chmod(entry["path"], entry["mode_int"])

    def reload_systemd(self):
        rc, _out, err = self.host.systemctl_do("daemon-reload")
        if rc != 0:
            raise ApplyError("service", "systemctl daemon-reload failed (rc %d): %s" % (rc, err.strip()))

    def service_up(self, restart):
        service = self.p["service"]
        state = self.states[service + ".service"]
        acted = False
        exercise = bool(self.trust and self.trust["changed"]) and not self.live
        if restart or exercise or state.get("ActiveState") != "active":
            acted = True
            action = "restart" if restart and not exercise else "start"
            if exercise:
                # chronyd writes every source's cookies when it stops: stop it first, then remove those of the
                # sources whose trust changed, then start.
                if state.get("ActiveState") == "active":
                    rc, _out, err = self.host.systemctl_do("stop", service + ".service")
                    if rc != 0:
                        raise ApplyError("service", "systemctl stop %s failed (rc %d): %s" % (service, rc, err.strip()))
                self.drop_cookies()
            self.started_at = time.monotonic()
            rc, _out, err = self.host.systemctl_do(action, service + ".service")
            if rc != 0:
                raise ApplyError("service", "systemctl %s %s failed (rc %d): %s" % (action, service, rc, err.strip()))
            self.result["restarted"] = True
        if state.get("UnitFileState") not in ENABLED_STATES:
            acted = True
            rc, _out, err = self.host.systemctl_do("enable", service + ".service")
            if rc != 0:
                raise ApplyError("service", "systemctl enable %s failed (rc %d): %s" % (service, rc, err.strip()))
            self.result["enabled"] = True
        if acted:
            state = self.host.unit_state(service)
        if state.get("ActiveState") != "active":
            hint = (
                "A unit condition failed: the unit needs CAP_SYS_TIME, which containers usually lack; set "
                "chrony_nts_clock_control: false for such hosts."
                if state.get("ConditionResult") == "no"
                else "See journalctl -u %s." % service
            )
            raise ApplyError(
                "service",
                "%s.service is not running (ActiveState=%s, Result=%s, ConditionResult=%s). %s"
                % (service, state.get("ActiveState"), state.get("Result"), state.get("ConditionResult"), hint),
            )

    def prove(self):
        spec = self.p["verify"]
        chronyc = self.module.get_bin_path("chronyc", opt_dirs=["/usr/bin", "/usr/sbin"])
        if not chronyc:
            raise ApplyError("verify", "chronyc not found: is chrony installed?")
        required = [name for name in spec["sources"] if name]
        fresh_ke = self.trust["changed"] if (self.trust and (self.started_at is not None or self.live)) else []
        polled = wait_for_nts(
            self.host.run,
            status_command(chronyc),
            min_sources=spec["min_sources"],
            required=required,
            timeout=spec["timeout"],
            interval=spec["interval"],
            require_selected=spec["require_selected"],
            require_synchronised=spec["require_synchronised"],
            fresh=spec["fresh"],
            started=self.started_at,
            burst=burst_command(chronyc),
            fresh_ke=fresh_ke,
            ke_since=self.ke_since,
            baseline=spec["baseline"],
        )
        msg = polled.pop("msg", None)
        polled.pop("fatal", None)
        self.result["verify"] = polled
        if not polled["verified"]:
            raise ApplyError("verify", msg)

    # --- after a failure ------------------------------------------------------------------------------------------
    def explain(self):
        """For each unhealthy source, what the host sees: chronyd's latest log line about it, labelled (certificate,
        NTS-KE refused or timed out, NAK), or that its name does not resolve here."""
        unhealthy = self.result["verify"].get("unhealthy_sources", [])
        causes = {}
        for source in unhealthy:
            if source.get("cause", "").startswith("not configured in the running chronyd"):
                unresolved = _resolve_error(source["name"])
                if unresolved:
                    causes[source["name"]] = "the name does not resolve on this host: %s" % unresolved
        rest = [s["name"] for s in unhealthy if s["name"] not in causes]
        if rest and self.module.get_bin_path("journalctl"):
            rc, out, _err = self.host.run(["journalctl", "--unit", self.p["service"], "--boot", "--no-pager",
                                           "--output", "cat", "--lines", "300"])  # fmt: skip
            if rc == 0:
                causes.update(explain_causes(journal_causes(out.splitlines(), rest)))
        return causes

    def roll_back(self):
        """Restore the rollback point and restart on it; returns the sentence for the failure message."""
        report = {"restored": [], "removed_dirs": [], "restarted": False}
        self.result["rollback"] = report
        try:
            restored = restore_snapshot(self.p["snapshot"], run_id=self.p["run_id"])
        except (SnapshotError, OSError) as exc:
            report["error"] = str(exc)
            return "ROLLBACK FAILED: %s; the snapshot is kept in %s." % (exc, self.p["snapshot"])
        report["restored"] = restored["restored"]
        report["removed_dirs"] = restored["removed_dirs"]
        if not restored["restored"] and not restored["removed_dirs"]:
            discard_snapshot(self.p["snapshot"])
            return "Nothing needed restoring."
        units = {e["path"] for e in self.module.params["files"] if e["unit"]}
        service = self.p["service"]
        # The service goes back to the state it had before this run: restarted on the restored files if it was
        # running, stopped again if it was not (e.g. chrony installed by this run), disabled again if this run
        # enabled it.
        action = "restart" if self.was_active else "stop"
        try:
            if units & set(restored["restored"]):
                self.reload_systemd()
            rc, _out, err = self.host.systemctl_do(action, service + ".service")
            if rc != 0:
                raise ApplyError("service", "systemctl %s: rc %d: %s" % (action, rc, err.strip()))
            report["restarted" if self.was_active else "stopped"] = True
            if self.result["enabled"]:
                rc, _out, err = self.host.systemctl_do("disable", service + ".service")
                if rc != 0:
                    raise ApplyError("service", "systemctl disable: rc %d: %s" % (rc, err.strip()))
                report["disabled"] = True
        except ApplyError as exc:
            report["error"] = str(exc)
        discard_snapshot(self.p["snapshot"])
        what = "put back " + ", ".join(restored["restored"])
        if restored["removed_dirs"]:
            what += " and removed " + ", ".join(restored["removed_dirs"])
        if "error" in report:
            return "Rolled back: %s; %s FAILED to %s on the restored files: %s." % (
                what,
                service,
                action,
                report["error"],
            )
        if self.was_active:
            return "Rolled back: %s; %s restarted on the restored files." % (what, service)
        return "Rolled back: %s; %s stopped%s, as it was not running before this run." % (
            what,
            service,
            " and disabled" if report.get("disabled") else "",
        )

    # --- the whole step -------------------------------------------------------------------------------------------
    def run(self):
        installed_guess = os.path.exists(self.p["chronyd"])
        entries = desired_files(self.module, lenient=self.module.check_mode and not installed_guess)
        installed = self.check_chronyd()
        self.lap("version")
        if not installed and not self.module.check_mode:
            self.fail(
                "%s not found: install chrony before this module runs; nothing was configured" % self.p["chronyd"]
            )
        try:
            changes = plan(entries)
            for entry in changes:
                if entry["content_changed"] and entry.get("validate") and entry["state"] == "present":
                    if installed:
                        validate(self.host, entry)
        except ApplyError as exc:
            self.fail(str(exc), stage=exc.stage)
        if installed:
            self.trust = self.trust_plan(entries)
        exercise = bool(self.trust and self.trust["changed"])
        self.lap("compare_validate")
        self.result["changed_files"] = [e["path"] for e in changes]
        self.result["changed"] = bool(changes) or self.p["restart"] or exercise
        if self.module._diff and changes:
            self.result["diff"] = _diff(changes)
        if self.module.check_mode:
            self.check_mode_verify(installed, changes)
            self.done()

        self.changes = changes
        try:
            # chronyd's unit and the health check's: one read, reused below unless this run acts on a unit.
            units = [self.p["service"] + ".service"]
            if self.p["monitor"] is not None:
                units += [MONITOR_UNIT + ".timer", WAIT_UNIT + ".service"]
            self.states = self.host.unit_states(units)
            self.was_active = self.states[units[0]].get("ActiveState") == "active"
            self.live = self.live_plan(changes)
        except ApplyError as exc:
            self.fail("%s; nothing was changed" % exc, stage=exc.stage)
        if changes and self.p["rollback"]:
            try:
                saved = save_snapshot(self.p["snapshot"], [e["path"] for e in entries], self.p["run_id"])
                if saved["replaced_stale"]:
                    self.module.warn(
                        "replaced the rollback point left by run %s in %s (that run was interrupted before it ended)"
                        % (saved["replaced_stale"], self.p["snapshot"])
                    )
            except (SnapshotError, OSError) as exc:
                self.fail(
                    "could not record the rollback point in %s: %s; nothing was changed" % (self.p["snapshot"], exc)
                )
        self.lap("snapshot")
        try:
            try:
                self.apply_changes(changes)
            except OSError as exc:
                raise ApplyError("write", "writing %s failed: %s" % (exc.filename, exc.strerror)) from exc
            self.lap("write")
            if any(e["unit"] for e in changes):
                self.reload_systemd()
                self.result["reloaded"] = True
                self.lap("daemon_reload")
            # The health check's own files (monitor) do not concern chronyd: they never restart it. A change of CA
            # bundles alone renews their sources in the running chronyd (live_plan).
            chronyd_files = [e for e in changes if not e.get("monitor")]
            self.service_up(restart=(bool(chronyd_files) and not self.live) or self.p["restart"])
            if self.live:
                self.renew_sources()
            self.lap("service")
            self.result["changed"] = bool(changes) or self.result["restarted"] or self.result["enabled"]
            if self.p["verify"] is not None:
                self.prove()
                self.lap("verify")
                if self.p["verify"]["server"]:
                    self.prove_server()
                    self.lap("verify_server")
                if self.trust:
                    self.record_trust()
            else:
                self.result["verify"] = {"skipped": True, "reason": "verify is not set"}
            if self.p["monitor"] is not None:
                self.monitor_timer()
                self.lap("monitor")
        except ApplyError as exc:
            self.failed_after_change(exc, changes)
        if changes and self.p["rollback"]:
            try:
                # A rollback point that holds a secret (the previous NTS server key) is not kept as previous/.
                keep = not any(e.get("secret") for e in entries)
                discard_snapshot(self.p["snapshot"], keep_previous=keep)
            except OSError as exc:  # the change is done and proven: say so, do not fail
                self.module.warn("could not keep the rollback point as the previous configuration: %s" % exc)
        self.done()

    def prove_server(self):
        """This chronyd serves NTS: a key exchange and an authenticated NTP sample by chrony's own client from this
        host (``chronyd -Q``, which neither steers the clock nor touches the running daemon), verified against the
        server's certificate for the name clients use, and counted by this chronyd's serverstats."""
        spec = self.p["verify"]["server"]
        chronyc = self.module.get_bin_path("chronyc", opt_dirs=["/usr/bin", "/usr/sbin"])
        started = time.monotonic()
        before = self.serverstats(chronyc)
        # minpoll -4: the sample comes within half a second (2.2 s at the default iburst pacing)
        line = "server %s iburst nts ntsport %d maxsamples 1 minpoll -4 maxpoll -4" % (spec["name"], spec["ntsport"])
        argv = [self.p["chronyd"], "-Q", "-x", "-t", str(int(max(1, spec["timeout"]))), line,
                "ntstrustedcerts %s" % spec["trust"], "nosystemcert"]  # fmt: skip
        rc, out, err = self.host.run(argv)
        after = self.serverstats(chronyc)
        gained = {k: after.get(k, 0) - before.get(k, 0) for k in ("nts_ke_accepted", "authenticated_ntp")}
        report = {"name": spec["name"], "ntsport": spec["ntsport"], "rc": rc, "elapsed": 0.0, "served": gained}
        self.result["verify"]["server"] = report
        problems = []
        if rc != 0:
            lines = [x.split("Z ", 1)[-1] for x in (out + err).splitlines() if x.strip()]
            why = [x for x in lines if not x.startswith(("chronyd version", "Disabled control", "chronyd exiting"))]
            unresolved = _resolve_error(spec["name"])
            if unresolved:
                why.append("%s does not resolve on this host: %s" % (spec["name"], unresolved))
            problems.append("chrony's own NTS client from this host got no authenticated sample from %s:%d (%s)"
                            % (spec["name"], spec["ntsport"], "; ".join(why[-3:]) or "rc %d" % rc))  # fmt: skip
        else:
            for key, what in (("nts_ke_accepted", "key exchange"), ("authenticated_ntp", "authenticated NTP request")):
                if gained[key] < 1:
                    problems.append("this chronyd counted no %s (serverstats %s +%d): something else answered"
                                    % (what, key, gained[key]))  # fmt: skip
        dumpdir = self.trust["parsed"]["ntsdumpdir"] if self.trust else None
        if dumpdir:
            keys = os.path.join(dumpdir, "ntskeys")
            try:
                st, dst = os.stat(keys), os.stat(dumpdir)
                if stat.S_IMODE(st.st_mode) != 0o600 or st.st_uid != dst.st_uid:
                    problems.append("%s is not mode 0600 owned by chronyd's user" % keys)
            except OSError:
                problems.append(
                    "chronyd did not save its cookie keys as %s: without them every client's cookies are invalid "
                    "after a restart (NTS NAK, then a key exchange storm)" % keys
                )
        report["elapsed"] = round(time.monotonic() - started, 3)
        if problems:
            raise ApplyError("verify", "the NTS server is not proven: " + "; ".join(problems))

    def monitor_timer(self):
        """Start (or stop) the health check's timer and enable (or disable) the boot wait; their files were written
        with the rest of the change."""
        spec = self.p["monitor"]
        if spec["enabled"] or spec["boot_wait"]:
            directory = os.path.dirname(spec["output"])
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o755)
                self.result["changed"] = True
        timer, wait = MONITOR_UNIT + ".timer", WAIT_UNIT + ".service"
        states = self.states
        if any(entry.get("unit") and entry.get("monitor") for entry in self.changes):
            states = self.host.unit_states([timer, wait])  # their files changed: read them after the reload
        # the timer runs now; the wait unit is only enabled: it orders the next boot
        self.unit_wanted(timer, states[timer], spec["enabled"], now=True)
        self.unit_wanted(wait, states[wait], spec["boot_wait"], now=False)
        self.result["monitor"] = {
            "enabled": spec["enabled"],
            "timer": MONITOR_UNIT + ".timer",
            "output": spec["output"],
            "boot_wait": spec["boot_wait"],
        }

    def unit_wanted(self, unit, state, wanted, now):
        enabled = state.get("UnitFileState") == "enabled"
        active = state.get("ActiveState") == "active"
        # (not --no-reload: systemd then keeps reporting the unit's old UnitFileState, and the next run would enable
        # it again)
        flags = ["--now"] if now else []
        if wanted and not (enabled and (active or not now)):
            rc, _out, err = self.host.systemctl_do("enable", *flags, unit)
            if rc != 0:
                raise ApplyError("monitor", "systemctl enable %s failed (rc %d): %s" % (unit, rc, err.strip()))
            self.result["changed"] = True
        elif not wanted and state.get("LoadState") == "loaded" and (enabled or (now and active)):
            self.host.systemctl_do("disable", *flags, unit)
            self.result["changed"] = True
        elif not wanted:
            # Its file is gone already (this run removed it): systemctl can no longer disable it, so stop it if it
            # still runs, clear the failed state a timer enters when its service's file goes, and remove the links
            # that enabled it (WantedBy= of the templates above).
            if active or state.get("ActiveState") == "activating":
                self.host.systemctl_do("stop", unit)
                self.result["changed"] = True
            elif state.get("ActiveState") == "failed":
                self.host.systemctl_do("reset-failed", unit)
                self.result["changed"] = True
            for target in ("timers.target", "multi-user.target"):
                link = os.path.join("/etc/systemd/system", target + ".wants", unit)
                if os.path.islink(link):
                    os.unlink(link)
                    self.result["changed"] = True

    def serverstats(self, chronyc):
        rc, out, _err = self.host.run([chronyc, "-c", "serverstats"])
        try:
            return parse_serverstats(out) if rc == 0 else {}
        except (ChronyParseError, ChronycError):
            return {}

    def record_trust(self):
        """After a proof: these trust settings have been used by a key exchange (or by cookies from one)."""
        try:
            save_proven(self.p["trust_state"], self.trust["prints"], time.time())
        except OSError as exc:  # the change is proven; the next run exercises the sources again
            self.module.warn("could not record the proven trust settings in %s: %s" % (self.p["trust_state"], exc))

    def check_mode_verify(self, installed, changes):
        if self.p["verify"] is None:
            self.result["verify"] = {"skipped": True, "reason": "verify is not set"}
        elif not installed:
            self.result["verify"] = {"skipped": True, "reason": "check mode, and chrony is not installed yet"}
        elif changes:
            reason = "check mode, and the files would change (the running chronyd does not run the new configuration)"
            self.result["verify"] = {"skipped": True, "reason": reason}
        elif self.trust and self.trust["changed"]:
            reason = "check mode, and a real run would drop the saved cookies of %s for a new key exchange (%s)" % (
                ", ".join(self.trust["changed"]),
                self.result["trust"]["reason"],
            )
            self.result["verify"] = {"skipped": True, "reason": reason}
        else:
            try:
                if self.host.unit_state(self.p["service"]).get("ActiveState") != "active":
                    self.result["changed"] = True  # a real run would start it
                    self.result["verify"] = {"skipped": True, "reason": "check mode, and the service is not running"}
                    return
                self.prove()
            except ApplyError as exc:
                self.fail("NTS is not working (check mode, nothing was changed): %s" % exc, stage=exc.stage)

    def failed_after_change(self, exc, changes):
        causes = self.explain()
        if causes:
            self.result["log_causes"] = causes
        parts = ["chrony_nts failed at %s: %s" % (exc.stage, str(exc).strip().rstrip(".") + ".")]
        if causes:
            parts.append("On the host: " + "; ".join("%s: %s" % (k, v.rstrip(".")) for k, v in causes.items()) + ".")
        if not changes:
            parts.append("This run had not changed chrony's files, so nothing was touched.")
        elif not self.p["rollback"]:
            parts.append("Rollback is disabled (chrony_nts_rollback: false): the new configuration was left in place.")
        else:
            parts.append(self.roll_back())
        self.fail(" ".join(parts), stage=exc.stage)

    def done(self):
        self.result["elapsed"] = round(time.monotonic() - self.start, 3)
        self.module.exit_json(**self.result)


def main():
    file_spec = dict(
        path=dict(type="path", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        content=dict(type="str"),
        owner=dict(type="str", default="root"),
        group=dict(type="str", default="root"),
        mode=dict(type="str", default="0644"),
        validate=dict(type="str"),
        unit=dict(type="bool", default=False),
    )
    secret_spec = dict(
        path=dict(type="path", required=True),
        content=dict(type="str", required=True, no_log=True),
        owner=dict(type="str", default="root"),
        group=dict(type="str", default="root"),
        mode=dict(type="str", default="0600"),
    )
    verify_spec = dict(
        sources=dict(type="list", elements="str", default=[]),
        min_sources=dict(type="int", default=1),
        timeout=dict(type="float", default=60.0),
        interval=dict(type="float", default=0.25),
        require_selected=dict(type="bool", default=False),
        require_synchronised=dict(type="bool", default=False),
        fresh=dict(type="bool", default=True),
        baseline=dict(type="dict"),
        server=dict(
            type="dict",
            options=dict(
                name=dict(type="str", required=True),
                ntsport=dict(type="int", default=4460),
                trust=dict(type="path", required=True),
                timeout=dict(type="float", default=10.0),
            ),
        ),
    )
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(type="list", elements="dict", options=file_spec, required=True),
            secret_files=dict(type="list", elements="dict", options=secret_spec, default=[], no_log=False),
            service=dict(type="str", required=True),
            restart=dict(type="bool", default=False),
            chronyd=dict(type="path", default="/usr/sbin/chronyd"),
            min_version=dict(type="str", default="4.0"),
            min_version_reason=dict(type="str", default="NTS needs it"),
            verify=dict(type="dict", options=verify_spec),
            rollback=dict(type="bool", default=True),
            snapshot=dict(type="path", default="/var/lib/chrony-nts/snapshot"),
            run_id=dict(type="str", default=""),
            config=dict(type="path"),
            trust_state=dict(type="path", default="/var/lib/chrony-nts/trust.json"),
            live_trust=dict(type="bool", default=True),
            managed=dict(type="str", default="Managed by chrony-nts (Ansible): local changes are overwritten."),
            monitor=dict(
                type="dict",
                options=dict(
                    enabled=dict(type="bool", default=True),
                    interval=dict(type="int", default=60),
                    timeout=dict(type="float", default=20.0),
                    output=dict(type="path", default="/var/lib/prometheus/node-exporter/chrony_nts.prom"),
                    user=dict(type="str", default="root"),
                    prefix=dict(type="path", default="/usr/local/lib/chrony-nts"),
                    args=dict(type="list", elements="str", default=[]),
                    boot_wait=dict(type="bool", default=False),
                    boot_wait_timeout=dict(type="int", default=120),
                ),
            ),
        ),
        supports_check_mode=True,
    )
    verify = module.params["verify"]
    if verify is not None:
        if verify["min_sources"] < 0:
            module.fail_json(msg="verify.min_sources must be >= 0, got %d" % verify["min_sources"])
        if verify["timeout"] < 0 or not verify["interval"] > 0:
            module.fail_json(msg="verify.timeout must be >= 0 and verify.interval > 0 seconds")
    Apply(module).run()


if __name__ == "__main__":
    main()
