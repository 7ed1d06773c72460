"""The lab's environment checks: one clear line naming what is missing, exit code 2, never a traceback."""

from __future__ import annotations

import importlib.util
from collections import namedtuple
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("labctl", Path(__file__).resolve().parents[2] / "lab" / "labctl.py")
labctl = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(labctl)

Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def healthy_machine(monkeypatch):
    monkeypatch.setattr(labctl.os, "geteuid", lambda: 0)
    monkeypatch.setattr(labctl.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(labctl.shutil, "disk_usage", lambda path: Usage(100 * 2**30, 0, 50 * 2**30))


def test_a_healthy_machine_passes(healthy_machine):
    labctl.preflight()


def test_not_root_no_podman_and_no_disk_are_each_named_in_one_line(healthy_machine, monkeypatch, capsys):
    monkeypatch.setattr(labctl.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(labctl.shutil, "which", lambda tool: None if tool == "podman" else f"/usr/bin/{tool}")
    monkeypatch.setattr(labctl.shutil, "disk_usage", lambda path: Usage(100 * 2**30, 0, 2**29))
    assert labctl.main(["up", "--name", "unit-test-lab"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "needs root" in err
    assert "`podman` is not installed (apt-get install podman" in err
    assert "0.5 GiB free" in err
    assert "Traceback" not in err


def test_a_bad_lab_name_is_refused_before_anything_runs(capsys):
    assert labctl.main(["status", "--name", "bad name;rm"]) == 2
    err = capsys.readouterr().err
    assert "lab name 'bad name;rm' must be letters, digits and dashes" in err


def test_fault_arguments_are_checked(healthy_machine, capsys):
    assert labctl.main(["fault", "--name", "unit-test-lab", "block", "nts1", "smtp"]) == 2
    assert "fault protocol 'smtp' must be ke, ntp or all" in capsys.readouterr().err
    assert labctl.main(["fault", "--name", "unit-test-lab", "stop", "nts9"]) == 2
    assert "unknown lab server 'nts9'" in capsys.readouterr().err
