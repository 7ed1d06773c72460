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


def molecule(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
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


@pytest.mark.parametrize("scenario", sorted(NEEDS_REGISTRY & set(SCENARIOS)))
def test_registry_scenario_is_well_formed(scenario):
    res = molecule("syntax", "-s", scenario)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
