# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replace a file atomically: the one helper behind every file the collection writes on a host.

A temporary file in the same directory (its name starts with a dot and does not end like the target, so collectors
such as node_exporter's textfile reader skip it), written, flushed and fsynced, given its owner, mode, times and
SELinux label, then renamed over the target: a reader sees the old file or the new one, never a part. On any error
the temporary file is removed and the target is untouched. Standard library only, no Ansible imports.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional, Tuple

SELINUX_XATTR = "security.selinux"


def selinux_label(path: str) -> Optional[bytes]:
    """The SELinux label of ``path`` (not following a symlink), or None (no SELinux, no label, no file)."""
    try:
        return os.getxattr(path, SELINUX_XATTR, follow_symlinks=False)
    except (OSError, AttributeError):
        return None


def set_selinux_label(path: str, label: Optional[bytes]) -> None:
    """Best effort: a host without SELinux, or a label this kernel refuses, keeps the file as it is."""
    if label is None:
        return
    try:
        os.setxattr(path, SELINUX_XATTR, label, follow_symlinks=False)
    except OSError:
        pass


def write_atomic(
    path: str,
    data: bytes,
    mode: int = 0o644,
    owner: Optional[Tuple[int, int]] = None,
    times_ns: Optional[Tuple[int, int]] = None,
    label: Optional[bytes] = None,
    suffix: str = ".chrony-nts",
) -> None:
    """Put ``data`` at ``path`` atomically with ``mode``, ``owner`` (uid, gid), ``times_ns`` (atime, mtime) and the
    SELinux ``label`` when given. The directory must exist."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if owner is not None:
                os.fchown(handle.fileno(), owner[0], owner[1])
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        if times_ns is not None:
            os.utime(tmp, ns=times_ns)
        set_selinux_label(tmp, label)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
