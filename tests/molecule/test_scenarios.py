"""The Molecule scenarios, run as users run them (`molecule test -s NAME`), so their result is part of pytest's."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml"))
# Scenarios that need images from a registry this machine cannot reach: only their syntax is checked here.
NEEDS_REGISTRY = {"rhel"}

pytestmark = pytest.mark.lab


def molecule(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **extra_env)
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}"
    env["CONTAINERS_CONF"] = str(REPO / "lab" / "containers.conf")
    env["NO_COLOR"] = "1"
    env["PY_COLORS"] = "0"
    env.pop("ANSIBLE_CONFIG", None)  # each scenario brings its own settings
    return subprocess.run(
        [str(REPO / ".venv" / "bin" / "molecule"), *args],
        cwd=REPO, env=env, text=True, capture_output=True, timeout=1200, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s not in NEEDS_REGISTRY])
def test_scenario_passes(scenario):
    res = molecule("test", "-s", scenario)
    out = re.sub(r"\x1b\[[0-9;]*m", "", res.stdout + res.stderr)
    assert res.returncode == 0, out[-8000:]
    assert re.search(rf"{scenario}\s*:.*failed=0", out) or "successful" in out.lower(), out[-3000:]


def test_default_scenario_on_debian_13():
    """The default scenario on a Debian 13 host (chrony 4.6.1), against the lab's servers."""
    env = dict(os.environ, CONTAINERS_CONF=str(REPO / "lab" / "containers.conf"))
    build = [str(REPO / ".venv" / "bin" / "python"), str(REPO / "lab" / "labctl.py"), "image", "--release", "13"]
    image = subprocess.run(build, cwd=REPO, env=env, text=True, capture_output=True, check=False)
    assert image.returncode == 0, image.stdout + image.stderr
    debian13 = "localhost/chrony-nts-lab-host-13:latest"
    res = molecule("test", "-s", "default", CHRONY_NTS_MOLECULE_IMAGE=debian13)
    out = re.sub(r"\x1b\[[0-9;]*m", "", res.stdout + res.stderr)
    assert res.returncode == 0, out[-8000:]
    assert "chrony-nts-lab-host-13" in out or "failed=0" in out, out[-3000:]


@pytest.mark.parametrize("scenario", sorted(NEEDS_REGISTRY & set(SCENARIOS)))
def test_registry_scenario_is_well_formed(scenario):
    res = molecule("syntax", "-s", scenario)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
