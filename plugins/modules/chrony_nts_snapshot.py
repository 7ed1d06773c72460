#!/usr/bin/python
# -*- coding: utf-8 -*-
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
author:
  - chrony-nts project
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

import base64  # noqa: E402
import errno  # noqa: E402
import grp  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import shutil  # noqa: E402
import stat  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SELINUX_XATTR = "security.selinux"


class SnapshotError(Exception):
    """A snapshot operation failed; ``path`` names the file or directory concerned."""

    def __init__(self, msg, path=None):
        super(SnapshotError, self).__init__(msg)
        self.path = path


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _name_of(getter, ident):
    try:
        return getter(ident)[0]
    except KeyError:
        return None


def _get_selinux(path):
    try:
        return base64.b64encode(os.getxattr(path, SELINUX_XATTR, follow_symlinks=False)).decode("ascii")
    except (OSError, AttributeError):
        return None


def _set_selinux(path, label):
    if label is None:
        return
    try:
        os.setxattr(path, SELINUX_XATTR, base64.b64decode(label), follow_symlinks=False)
    except (OSError, AttributeError) as exc:
        if getattr(exc, "errno", None) not in (errno.ENOTSUP, errno.EPERM, errno.EACCES, None):
            raise


def _missing_parents(path):
    """Ancestor directories of ``path`` that do not exist yet, deepest first."""
    missing = []
    parent = os.path.dirname(path)
    while parent and parent != os.path.dirname(parent) and not os.path.lexists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    return missing


def record_file(path):
    """Describe ``path`` (and read its content); returns (entry, content or None)."""
    if not os.path.isabs(path):
        raise SnapshotError("files: %r is not an absolute path" % path, path)
    entry = {"path": path, "existed": False, "missing_parents": _missing_parents(path)}
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return entry, None
    entry.update(
        {
            "existed": True,
            "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "owner": _name_of(pwd.getpwuid, st.st_uid),
            "group": _name_of(grp.getgrgid, st.st_gid),
            "atime_ns": st.st_atime_ns,
            "mtime_ns": st.st_mtime_ns,
            "selinux": _get_selinux(path),
        }
    )
    if stat.S_ISLNK(st.st_mode):
        entry["type"] = "symlink"
        entry["link"] = os.readlink(path)
        return entry, None
    if not stat.S_ISREG(st.st_mode):
        raise SnapshotError("files: %s is not a regular file or symbolic link" % path, path)
    with open(path, "rb") as handle:
        content = handle.read()
    entry.update({"type": "file", "size": len(content), "sha256": _sha256(content)})
    return entry, content


def read_manifest(snap_dir):
    """Return the manifest of the pending snapshot, or None when there is none."""
    manifest_path = os.path.join(snap_dir, MANIFEST)
    try:
        with open(manifest_path, "r") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise SnapshotError("snapshot manifest %s is unreadable: %s" % (manifest_path, exc), manifest_path) from exc
    if manifest.get("format") != FORMAT_VERSION:
        raise SnapshotError(
            "snapshot manifest %s has format %r, expected %d" % (manifest_path, manifest.get("format"), FORMAT_VERSION),
            manifest_path,
        )
    return manifest


def _public(entries):
    return [{"path": e["path"], "existed": e["existed"], "sha256": e.get("sha256")} for e in entries]


def _make_private_dir(path):
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def save_snapshot(snap_dir, paths, run_id="", check_mode=False):
    """Record ``paths`` into ``snap_dir`` unless a snapshot from the same ``run_id`` is pending."""
    if not paths:
        raise SnapshotError("files: at least one path is required with state=save")
    if len(set(paths)) != len(paths):
        raise SnapshotError("files: duplicate paths in %r" % (paths,))
    current = read_manifest(snap_dir)
    result = {"snapshot": snap_dir, "saved": False, "kept": False, "replaced_stale": ""}
    if current is not None and current.get("run_id") == run_id and run_id:
        result.update({"kept": True, "run_id": run_id, "files": _public(current["files"])})
        return result
    if current is not None:
        result["replaced_stale"] = current.get("run_id") or "(no run id)"

    recorded = [record_file(p) for p in paths]
    entries = [entry for entry, _ in recorded]
    result.update({"saved": True, "run_id": run_id, "files": _public(entries)})
    if check_mode:
        return result

    parent = os.path.dirname(os.path.abspath(snap_dir))
    _make_private_dir(parent)
    staging = tempfile.mkdtemp(prefix=".snapshot-", dir=parent)
    try:
        os.chmod(staging, 0o700)
        for index, (entry, content) in enumerate(recorded):
            if content is None:
                continue
            blob = "blob-%d" % index
            fd = os.open(os.path.join(staging, blob), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            entry["blob"] = blob
        manifest = {"format": FORMAT_VERSION, "run_id": run_id, "created": time.time(), "files": entries}
        with open(os.path.join(staging, MANIFEST), "w") as handle:
            json.dump(manifest, handle, indent=1, sort_keys=True)
            os.fchmod(handle.fileno(), 0o600)
            handle.flush()
            os.fsync(handle.fileno())
        if os.path.lexists(snap_dir):
            shutil.rmtree(snap_dir)
        os.rename(staging, snap_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _current_matches(entry, content):
    """Whether the file on disk already equals the recorded state."""
    path = entry["path"]
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return not entry["existed"]
    if not entry["existed"]:
        return False
    if (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) != (entry["mode"], entry["uid"], entry["gid"]):
        return False
    if entry["type"] == "symlink":
        return stat.S_ISLNK(st.st_mode) and os.readlink(path) == entry["link"]
    if not stat.S_ISREG(st.st_mode):
        return False
    with open(path, "rb") as handle:
        return handle.read() == content


def _write_back(entry, content):
    path = entry["path"]
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o755)
    if os.path.isdir(path) and not os.path.islink(path):
        raise SnapshotError("cannot restore %s: a directory is in its place" % path, path)
    if entry["type"] == "symlink":
        tmp = os.path.join(directory, ".%s.chrony-nts-restore" % os.path.basename(path))
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(entry["link"], tmp)
        os.lchown(tmp, entry["uid"], entry["gid"])
        os.replace(tmp, path)
        _set_selinux(path, entry.get("selinux"))
        return
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".chrony-nts-restore", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chown(tmp, entry["uid"], entry["gid"])
        os.chmod(tmp, entry["mode"])
        os.utime(tmp, ns=(entry["atime_ns"], entry["mtime_ns"]))
        _set_selinux(tmp, entry.get("selinux"))
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def restore_snapshot(snap_dir, check_mode=False, run_id=""):
    """Write the recorded files back; remove files and directories that did not exist at save time."""
    manifest = read_manifest(snap_dir)
    result = {"snapshot": snap_dir, "found": manifest is not None, "restored": [], "removed_dirs": [], "files": []}
    if manifest is None:
        return result
    if run_id and manifest.get("run_id") != run_id:
        raise SnapshotError(
            "the snapshot in %s belongs to run %r, not to this run %r: not restored"
            % (snap_dir, manifest.get("run_id"), run_id),
            snap_dir,
        )
    result["run_id"] = manifest.get("run_id", "")
    result["files"] = _public(manifest["files"])
    dirs_to_remove = []
    for entry in manifest["files"]:
        content = None
        if entry["existed"] and entry["type"] == "file":
            with open(os.path.join(snap_dir, entry["blob"]), "rb") as handle:
                content = handle.read()
            if _sha256(content) != entry["sha256"]:
                raise SnapshotError("snapshot copy of %s is corrupt (checksum mismatch)" % entry["path"], entry["path"])
        for directory in entry.get("missing_parents", []):
            if directory not in dirs_to_remove:
                dirs_to_remove.append(directory)
        if _current_matches(entry, content):
            continue
        result["restored"].append(entry["path"])
        if check_mode:
            continue
        if entry["existed"]:
            _write_back(entry, content)
        else:
            os.unlink(entry["path"])
    # Deepest directories first, and only those that are empty now.
    for directory in sorted(dirs_to_remove, key=lambda d: d.count(os.sep), reverse=True):
        if os.path.isdir(directory) and not os.path.islink(directory):
            remaining = [n for n in os.listdir(directory) if os.path.join(directory, n) not in dirs_to_remove]
            if remaining:
                continue
            result["removed_dirs"].append(directory)
            if not check_mode:
                os.rmdir(directory)
    return result


def discard_snapshot(snap_dir, keep_previous=False, check_mode=False):
    """Delete the pending snapshot, or move it to ``previous`` beside it."""
    manifest = read_manifest(snap_dir)
    result = {"snapshot": snap_dir, "found": manifest is not None}
    if manifest is None:
        return result
    result["run_id"] = manifest.get("run_id", "")
    if check_mode:
        return result
    if keep_previous:
        previous = os.path.join(os.path.dirname(os.path.abspath(snap_dir)), "previous")
        if os.path.lexists(previous):
            shutil.rmtree(previous)
        os.rename(snap_dir, previous)
        result["previous"] = previous
    else:
        shutil.rmtree(snap_dir)
    return result


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
