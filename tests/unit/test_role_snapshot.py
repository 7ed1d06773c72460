"""file_snapshot (chrony_nts_snapshot, chrony_nts_apply): save, restore and discard on real files in a temp dir."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from ansible_collections.nts.chrony.plugins.module_utils import file_snapshot as snap


def _state(path: Path):
    st = os.lstat(path)
    return {
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime_ns": st.st_mtime_ns,
    }


@pytest.fixture
def tree(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    conf = etc / "chrony.conf"
    conf.write_bytes(b"pool 2.debian.pool.ntp.org iburst\n\x00binary\xff tail without newline")
    conf.chmod(0o640)
    opts = etc / "default-chrony"
    opts.write_text('DAEMON_OPTS="-F 1"\n')
    os.utime(opts, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    return {
        "root": tmp_path,
        "conf": conf,
        "opts": opts,
        "dropin": tmp_path / "systemd" / "chrony.service.d" / "50-chrony-nts.conf",
        "snap": tmp_path / "state" / "snapshot",
    }


def _save(tree, run_id="run-1", check_mode=False):
    paths = [str(tree["conf"]), str(tree["opts"]), str(tree["dropin"])]
    return snap.save_snapshot(str(tree["snap"]), paths, run_id, check_mode)


def test_save_then_restore_is_byte_exact_with_metadata(tree):
    before_conf, before_opts = _state(tree["conf"]), _state(tree["opts"])
    os.chown(tree["opts"], 65534, 65534)  # nobody:nogroup, to prove ownership comes back
    before_opts = _state(tree["opts"])

    result = _save(tree)
    assert result["saved"] is True and result["kept"] is False
    assert [f["existed"] for f in result["files"]] == [True, True, False]

    # What a failed role run would do: rewrite both files, add a drop-in in new directories.
    tree["conf"].write_text("server nts1.lab.test iburst nts\n")
    tree["conf"].chmod(0o644)
    tree["opts"].write_text('DAEMON_OPTS=""\n')
    os.chown(tree["opts"], 0, 0)
    tree["dropin"].parent.mkdir(parents=True)
    tree["dropin"].write_text("[Unit]\nConditionCapability=\n")

    restored = snap.restore_snapshot(str(tree["snap"]))
    assert sorted(restored["restored"]) == sorted(str(tree[k]) for k in ("conf", "opts", "dropin"))
    assert _state(tree["conf"]) == before_conf
    assert _state(tree["opts"]) == before_opts
    assert not tree["dropin"].exists()
    # Both directories created after the snapshot are gone again, the pre-existing root stays.
    assert restored["removed_dirs"] == [str(tree["dropin"].parent), str(tree["dropin"].parent.parent)]
    assert not (tree["root"] / "systemd").exists()
    # No restore temp file is left next to the configuration.
    assert sorted(p.name for p in tree["conf"].parent.iterdir()) == ["chrony.conf", "default-chrony"]


def test_restore_when_nothing_changed_touches_nothing(tree):
    _save(tree)
    before = _state(tree["conf"])
    result = snap.restore_snapshot(str(tree["snap"]))
    assert result["found"] is True
    assert result["restored"] == [] and result["removed_dirs"] == []
    assert _state(tree["conf"]) == before


def test_snapshot_directory_is_private_and_holds_copies(tree):
    _save(tree)
    assert stat.S_IMODE(os.stat(tree["snap"]).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tree["snap"].parent).st_mode) == 0o700
    manifest = json.loads((tree["snap"] / "manifest.json").read_text())
    assert manifest["run_id"] == "run-1"
    blob = tree["snap"] / manifest["files"][0]["blob"]
    assert blob.read_bytes() == tree["conf"].read_bytes()
    assert stat.S_IMODE(os.stat(blob).st_mode) == 0o600


def test_pending_snapshot_of_same_run_is_kept(tree):
    original = tree["conf"].read_bytes()
    _save(tree, "run-1")
    tree["conf"].write_text("changed by the first half of the run\n")
    second = _save(tree, "run-1")
    assert second["kept"] is True and second["saved"] is False
    snap.restore_snapshot(str(tree["snap"]))
    assert tree["conf"].read_bytes() == original


def test_stale_snapshot_of_other_run_is_replaced(tree):
    _save(tree, "old-run")
    tree["conf"].write_text("state at the start of the new run\n")
    result = _save(tree, "new-run")
    assert result["saved"] is True and result["replaced_stale"] == "old-run"
    tree["conf"].write_text("broken\n")
    snap.restore_snapshot(str(tree["snap"]))
    assert tree["conf"].read_text() == "state at the start of the new run\n"


def test_check_mode_writes_nothing(tree):
    result = _save(tree, check_mode=True)
    assert result["saved"] is True
    assert not tree["snap"].exists() and not tree["snap"].parent.exists()

    _save(tree)
    tree["conf"].write_text("new\n")
    result = snap.restore_snapshot(str(tree["snap"]), check_mode=True)
    assert result["restored"] == [str(tree["conf"])]
    assert tree["conf"].read_text() == "new\n"
    snap.discard_snapshot(str(tree["snap"]), check_mode=True)
    assert (tree["snap"] / "manifest.json").exists()


def test_symlink_is_restored_as_symlink(tree):
    link = tree["root"] / "etc" / "link.conf"
    link.symlink_to("chrony.conf")
    snap.save_snapshot(str(tree["snap"]), [str(link)], "r")
    link.unlink()
    link.write_text("a regular file now\n")
    snap.restore_snapshot(str(tree["snap"]))
    assert link.is_symlink() and os.readlink(link) == "chrony.conf"


def test_directory_and_relative_paths_are_rejected_with_the_path(tree):
    with pytest.raises(snap.SnapshotError, match="is not a regular file") as err:
        snap.save_snapshot(str(tree["snap"]), [str(tree["root"] / "etc")], "r")
    assert err.value.path == str(tree["root"] / "etc")
    with pytest.raises(snap.SnapshotError, match=r"'etc/chrony\.conf' is not an absolute path"):
        snap.save_snapshot(str(tree["snap"]), ["etc/chrony.conf"], "r")
    with pytest.raises(snap.SnapshotError, match="at least one path"):
        snap.save_snapshot(str(tree["snap"]), [], "r")
    assert not tree["snap"].exists()


def test_corrupt_copy_is_refused_and_live_file_untouched(tree):
    _save(tree)
    manifest = json.loads((tree["snap"] / "manifest.json").read_text())
    (tree["snap"] / manifest["files"][0]["blob"]).write_bytes(b"tampered")
    tree["conf"].write_text("current\n")
    with pytest.raises(snap.SnapshotError, match="corrupt"):
        snap.restore_snapshot(str(tree["snap"]))
    assert tree["conf"].read_text() == "current\n"


def test_unknown_manifest_format_is_refused(tree):
    _save(tree)
    (tree["snap"] / "manifest.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(snap.SnapshotError, match="format 99"):
        snap.restore_snapshot(str(tree["snap"]))


def test_discard_deletes_or_keeps_previous(tree):
    assert snap.discard_snapshot(str(tree["snap"]))["found"] is False
    _save(tree, "r1")
    result = snap.discard_snapshot(str(tree["snap"]), keep_previous=True)
    previous = tree["snap"].parent / "previous"
    assert result["previous"] == str(previous)
    assert not tree["snap"].exists()
    assert json.loads((previous / "manifest.json").read_text())["run_id"] == "r1"
    _save(tree, "r2")
    snap.discard_snapshot(str(tree["snap"]))
    assert not tree["snap"].exists()
    assert json.loads((previous / "manifest.json").read_text())["run_id"] == "r1"


def test_restore_without_snapshot_reports_not_found(tree):
    result = snap.restore_snapshot(str(tree["snap"]))
    assert result == {"snapshot": str(tree["snap"]), "found": False, "restored": [], "removed_dirs": [], "files": []}


def test_restore_refuses_a_snapshot_of_another_run(tree):
    _save(tree, "earlier-run")
    tree["conf"].write_text("current\n")
    with pytest.raises(snap.SnapshotError, match="belongs to run 'earlier-run'"):
        snap.restore_snapshot(str(tree["snap"]), run_id="this-run")
    assert tree["conf"].read_text() == "current\n"
    assert snap.restore_snapshot(str(tree["snap"]), run_id="earlier-run")["restored"] == [str(tree["conf"])]
