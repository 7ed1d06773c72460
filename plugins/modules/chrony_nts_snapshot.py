#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Save, restore or discard a byte-exact snapshot of a few files (the chrony_nts role's rollback point)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: chrony_nts_snapshot
short_description: Keep a byte-exact rollback point of a few files
description:
  - Saves the content, mode, owner, group, modification time and SELinux label of each listed file, and whether it
    existed at all, into a private directory (mode C(0700)) before a change is made.
  - O(state=restore) puts every file back byte for byte, removes the files that did not exist when the snapshot was
    saved, and removes the directories that were created since (only when they are empty).
  - O(state=discard) deletes the snapshot, or keeps it as the C(previous) copy next to it.
  - Used by the C(chrony_nts) role to roll back chrony's configuration when NTS verification fails.
    The snapshot lives outside every directory chrony reads, so no backup file is ever loaded as configuration.
  - Saving is bookkeeping, so it always reports C(changed=false) and a role run stays idempotent.
    A snapshot that is still pending from the same O(run_id) is kept, never overwritten, so the rollback point
    is always the state from before the first change of the run.
version_added: "1.0.0"
author:
  - chrony-nts project (@chrony-nts)
options:
  state:
    description:
      - V(save) records the files listed in O(files).
      - V(restore) writes the recorded state back.
      - V(discard) removes the pending snapshot.
    type: str
    choices: [save, restore, discard]
    required: true
  files:
    description:
      - Absolute paths of the files to record. Required with O(state=save).
      - Regular files and symbolic links are supported; a directory is an error.
    type: list
    elements: path
    default: []
  path:
    description:
      - Directory that holds the pending snapshot. Its parent is created with mode C(0700) when missing.
    type: path
    default: /var/lib/chrony-nts/snapshot
  run_id:
    description:
      - Identifier of the current run. With O(state=save), a pending snapshot carrying the same identifier is
        kept as it is; one with a different identifier is stale (left by an interrupted run) and is replaced.
      - With O(state=restore), when set, the snapshot is restored only if it carries this identifier; a snapshot
        of another run is an error and nothing is written (a stale rollback point must never be applied).
    type: str
    default: ''
  keep_previous:
    description:
      - With O(state=discard), move the snapshot to C(previous) beside O(path) (replacing an older one) instead
        of deleting it, so the configuration before the last successful change stays available.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Nothing is written or removed; the return values say what would happen.
  diff_mode:
    support: none
    description: File contents are never returned, so there is no diff.
notes:
  - Only the Python standard library is used on the target.
  - File contents are never returned, so the module is safe to use on files holding secrets.
seealso:
  - module: ansible.builtin.copy
"""

EXAMPLES = r"""
- name: Record chrony's configuration before changing it
  chrony_nts_snapshot:
    state: save
    files:
      - /etc/chrony/chrony.conf
      - /etc/default/chrony
    run_id: "{{ __run_id }}"

- name: Put the previous configuration back after a failed verification
  chrony_nts_snapshot:
    state: restore
  register: __restore

- name: Forget the rollback point after success, keeping it as the previous configuration
  chrony_nts_snapshot:
    state: discard
    keep_previous: true
"""

RETURN = r"""
snapshot:
  description: Directory of the pending snapshot.
  returned: always
  type: str
  sample: /var/lib/chrony-nts/snapshot
saved:
  description: Whether O(state=save) wrote (or in check mode would write) a new snapshot.
  returned: when O(state=save)
  type: bool
  sample: true
kept:
  description: Whether a pending snapshot from the same O(run_id) was kept instead of saving a new one.
  returned: when O(state=save)
  type: bool
  sample: false
replaced_stale:
  description: Run identifier of a stale snapshot that was replaced, or empty.
  returned: when O(state=save)
  type: str
  sample: ''
files:
  description: What the snapshot records for each file.
  returned: when O(state=save) or O(state=restore)
  type: list
  elements: dict
  contains:
    path:
      description: Absolute path.
      type: str
    existed:
      description: Whether the file existed when the snapshot was saved.
      type: bool
    sha256:
      description: SHA-256 of the recorded content, or null.
      type: str
restored:
  description: Paths written back, or removed because they did not exist before.
  returned: when O(state=restore)
  type: list
  elements: str
  sample: [/etc/chrony/chrony.conf]
removed_dirs:
  description: Directories removed by O(state=restore) because they were created after the snapshot.
  returned: when O(state=restore)
  type: list
  elements: str
found:
  description: Whether a pending snapshot existed.
  returned: when O(state=restore) or O(state=discard)
  type: bool
run_id:
  description: Run identifier stored in the snapshot.
  returned: when a snapshot exists
  type: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.nts.chrony.plugins.module_utils.file_snapshot import (  # noqa: E402
    SnapshotError,
    discard_snapshot,
    restore_snapshot,
    save_snapshot,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", required=True, choices=["save", "restore", "discard"]),
            files=dict(type="list", elements="path", default=[]),
            path=dict(type="path", default="/var/lib/chrony-nts/snapshot"),
            run_id=dict(type="str", default=""),
            keep_previous=dict(type="bool", default=False),
        ),
        required_if=[("state", "save", ("files",))],
        supports_check_mode=True,
    )
    params = module.params
    state = params["state"]
    try:
        if state == "save":
            result = save_snapshot(params["path"], params["files"], params["run_id"], module.check_mode)
            # Bookkeeping only: a saved snapshot is not a change to the managed host's configuration.
            changed = False
            if result["replaced_stale"]:
                module.warn(
                    "replaced a stale snapshot from run %s (an earlier run was interrupted before it finished)"
                    % result["replaced_stale"]
                )
        elif state == "restore":
            result = restore_snapshot(params["path"], module.check_mode, params["run_id"])
            changed = bool(result["restored"] or result["removed_dirs"])
        else:
            result = discard_snapshot(params["path"], params["keep_previous"], module.check_mode)
            changed = False
    except SnapshotError as exc:
        module.fail_json(msg=str(exc), path=exc.path, state=state, snapshot=params["path"])
    except OSError as exc:
        module.fail_json(
            msg="%s failed on %s: %s" % (state, exc.filename or params["path"], exc.strerror),
            path=exc.filename,
            state=state,
            snapshot=params["path"],
        )
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
