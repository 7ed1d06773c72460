# -*- coding: utf-8 -*-
"""Byte-exact rollback points of a few files: save, restore, discard.

Standard library only, no Ansible imports: used on managed hosts by the ``chrony_nts_snapshot`` and
``chrony_nts_apply`` modules, and unit-tested on its own. A snapshot is a private directory (0700) holding a JSON
manifest (path, existed, mode, owner, group, times, SELinux label, SHA-256) and one blob per regular file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import errno
import grp
import hashlib
import json
import os
import pwd
import shutil
import stat
import tempfile
import time

from ansible_collections.nts.chrony.plugins.module_utils.atomic_write import SELINUX_XATTR, write_atomic

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


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
    entries = [entry for entry, _unused in recorded]
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
    label = base64.b64decode(entry["selinux"]) if entry.get("selinux") else None
    times = (entry["atime_ns"], entry["mtime_ns"])
    owner = (entry["uid"], entry["gid"])
    write_atomic(path, content, entry["mode"], owner=owner, times_ns=times, label=label, suffix=".chrony-nts-restore")


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
