"""chrony_nts_apply on this machine, up to the point where it would touch a service: the checks that stop it before
any change (version, validation), and check mode with diff. Files live in a temp dir; no service is touched (every
case here ends before the module calls systemctl), and `chronyd -p` only parses.

The change, restart, proof and rollback need systemd hosts: tests/lab/test_site.py and the Molecule scenarios.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.lib.ansible_local import CWD, LOCAL, module_env

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / ".venv" / "bin" / "ansible"
CHRONYD = shutil.which("chronyd") or "/usr/sbin/chronyd"

pytestmark = pytest.mark.skipif(not Path(CHRONYD).exists(), reason="chronyd is not installed on this machine")

GOOD = "server nts1.lab.test iburst nts\nauthselectmode require\ncmdport 0\nport 0\n"


def apply(args: dict, *flags: str) -> dict:
    cmd = [str(ANSIBLE), "localhost", *LOCAL, "-m", "nts.chrony.chrony_nts_apply", "-a", json.dumps(args), *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=module_env(), timeout=120, cwd=CWD)
    try:
        out = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"ansible printed no JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return out["plays"][0]["tasks"][0]["hosts"]["localhost"]


def conf_args(tmp_path: Path, content: str, **extra) -> dict:
    return {
        "service": "chrony-nts-test-never-started",
        "chronyd": CHRONYD,
        "snapshot": str(tmp_path / "state" / "snapshot"),
        "files": [
            {"path": str(tmp_path / "etc" / "chrony.conf"), "content": content, "validate": f"{CHRONYD} -p -f %s"}
        ],
        **extra,
    }


def test_a_file_chronyd_rejects_is_never_written(tmp_path):
    result = apply(conf_args(tmp_path, GOOD + "ntsrefresh notanumber\n"))
    assert result["failed"] is True
    assert "failed validation" in result["msg"] and "nothing was changed" in result["msg"], result["msg"]
    assert "ntsrefresh" in result["msg"]
    assert result["changed"] is False
    assert not (tmp_path / "etc").exists() and not (tmp_path / "state").exists()


def test_a_chronyd_too_old_stops_before_any_change(tmp_path):
    result = apply(conf_args(tmp_path, GOOD, min_version="99.0", min_version_reason="a test needs it"))
    assert result["failed"] is True
    assert "chrony >= 99.0 built with +NTS is required (a test needs it" in result["msg"], result["msg"]
    assert "Nothing was configured" in result["msg"]
    assert not (tmp_path / "etc").exists()


def test_check_mode_reports_the_change_with_a_diff_and_writes_nothing(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "chrony.conf").write_text("pool 2.debian.pool.ntp.org iburst\n")
    args = conf_args(tmp_path, GOOD, verify={"min_sources": 1})
    args["files"].append({"path": str(tmp_path / "etc" / "drop-in.conf"), "state": "absent", "unit": True})
    result = apply(args, "--check", "--diff")
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert result["changed_files"] == [str(tmp_path / "etc" / "chrony.conf")]  # the absent file is absent already
    assert result["diff"][0]["before"] == "pool 2.debian.pool.ntp.org iburst\n" and result["diff"][0]["after"] == GOOD
    assert result["verify"]["skipped"] is True and "would change" in result["verify"]["reason"]
    assert (tmp_path / "etc" / "chrony.conf").read_text() == "pool 2.debian.pool.ntp.org iburst\n"
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"path": "relative/chrony.conf", "content": "x"}, "path must be absolute"),
        ({"path": "/tmp/x.conf"}, "content is required with state=present"),
        ({"path": "/tmp/x.conf", "content": "x", "owner": "no-such-user-here"}, "owner 'no-such-user-here'"),
        ({"path": "/tmp/x.conf", "content": "x", "mode": "rw-r--r--"}, "mode 'rw-r--r--' is not an octal number"),
    ],
)
def test_bad_file_entries_are_named(tmp_path, entry, expected):
    result = apply({"service": "chrony", "chronyd": CHRONYD, "files": [entry]}, "--check")
    assert result["failed"] is True
    assert expected in result["msg"] and "files[0]" in result["msg"], result["msg"]
