"""execution-environment.yml (ansible-builder v3) produces a build context with the collection and the controller-side
requirements in it. No image is built (no registry here): ``ansible-builder create`` only writes the context.

The test works on a copy of the definition in a temporary directory, with the collection tarball built where the
definition expects it (.cache/ee/nts-chrony.tar.gz beside it), so the checkout's .cache is left alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EE_FILE = REPO / "execution-environment.yml"


def _definition() -> dict:
    return yaml.safe_load(EE_FILE.read_text())


def _requirements_txt() -> dict:
    out = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out[req.name.lower()] = req
    return out


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    """The build context ansible-builder writes for a copy of execution-environment.yml."""
    tmp = tmp_path_factory.mktemp("ee")
    shutil.copy(EE_FILE, tmp / EE_FILE.name)
    out = tmp / ".cache" / "ee"
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "PATH": "%s:%s" % (BIN, os.environ["PATH"])}
    subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(REPO)],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (tarball,) = out.glob("nts-chrony-*.tar.gz")
    tarball.rename(out / "nts-chrony.tar.gz")
    proc = subprocess.run(
        [
            str(BIN / "ansible-builder"),
            "create",
            "--file",
            str(tmp / EE_FILE.name),
            "--context",
            str(tmp / "context"),
            "-v",
            "3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No matches" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return tmp / "context"


def test_definition_is_version_3_with_ansible_core_and_runner():
    ee = _definition()
    assert ee["version"] == 3
    deps = ee["dependencies"]
    assert Requirement(deps["ansible_core"]["package_pip"]).name == "ansible-core"
    assert Requirement(deps["ansible_runner"]["package_pip"]).name == "ansible-runner"


def test_python_requirements_are_the_controller_ones_with_the_ranges_of_requirements_txt():
    ee = {Requirement(r).name.lower(): Requirement(r) for r in _definition()["dependencies"]["python"]}
    assert {"cryptography", "pyopenssl", "pyyaml", "jinja2"} <= set(ee)
    declared = _requirements_txt()
    core = Requirement(_definition()["dependencies"]["ansible_core"]["package_pip"])
    assert str(core.specifier) == str(declared["ansible-core"].specifier)
    for name, req in ee.items():
        assert name in declared, "%s is not in requirements.txt" % name
        assert str(req.specifier) == str(declared[name].specifier), name


def test_galaxy_collections_cover_the_collection_and_its_dependencies():
    collections = _definition()["dependencies"]["galaxy"]["collections"]
    names = [c["name"] for c in collections]
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert set(galaxy.get("dependencies") or {}) <= set(names)
    assert "collections/nts-chrony.tar.gz" in names


def test_context_has_a_containerfile_with_ansible_core_and_the_base_image(context):
    containerfile = (context / "Containerfile").read_text()
    assert 'ARG EE_BASE_IMAGE="quay.io/centos/centos:stream9"' in containerfile
    assert "ansible-core>=2.17,<2.20" in containerfile
    assert "ansible-runner" in containerfile
    assert 'ARG PYCMD="/usr/bin/python3.11"' in containerfile
    assert "ansible-galaxy collection install" in containerfile
    assert "introspect.py introspect --user-pip=requirements.txt" in containerfile


def test_context_has_the_python_system_and_galaxy_requirements(context):
    build = context / "_build"
    python = {Requirement(line).name.lower() for line in (build / "requirements.txt").read_text().split()}
    assert {"cryptography", "pyopenssl", "pyyaml", "jinja2"} <= python
    assert "openssh-clients" in (build / "bindep.txt").read_text()
    galaxy = yaml.safe_load((build / "requirements.yml").read_text())
    assert {"ansible.posix", "community.general", "collections/nts-chrony.tar.gz"} <= {
        c["name"] for c in galaxy["collections"]
    }


def test_context_carries_the_collection_tarball(context):
    import tarfile

    tarball = context / "_build" / "collections" / "nts-chrony.tar.gz"
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    assert {"MANIFEST.json", "FILES.json", "meta/runtime.yml", "plugins/modules/nts_probe.py"} <= names
