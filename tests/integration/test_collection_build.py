"""The collection as Galaxy users get it: ``ansible-galaxy collection build`` makes a tarball with the collection's
content and none of the checkout's own (lab, tests, benchmarks, inventories, Molecule, local state); installed into an
empty directory it is found, documented and run from there alone.

Everything after the build runs outside the checkout: a temporary directory as the working directory, an empty
ansible.cfg of its own (not the checkout's), no ANSIBLE_* variable of the caller, ANSIBLE_COLLECTIONS_PATH naming only
the install directory and no collections from the Python installation (the ``ansible`` package's). No chronyd and no
network beyond loopback: the module run probes 127.0.0.1 port 1, which refuses at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Top-level paths of the checkout that must never be in the tarball.
EXCLUDED = (
    "lab",
    "tests",
    "benchmarks",
    "inventories",
    "molecule",
    "tools",
    ".collections",
    ".venv",
    ".cache",
    ".lab",
    ".git",
    ".ci",
    ".pytest_cache",
    ".ruff_cache",
    "reports",
    "nts-report",
    "rollout",
    "Makefile",
    "ansible.cfg",
    "pyproject.toml",
    "requirements.txt",
    "execution-environment.yml",
    "changelogs/.plugin-cache.yaml",
)
REQUIRED = (
    "MANIFEST.json",
    "FILES.json",
    "meta/runtime.yml",
    "README.md",
    "CHANGELOG.rst",
    "changelogs/changelog.yaml",
    "roles/chrony_nts/meta/argument_specs.yml",
    "roles/chrony_nts/tasks/main.yml",
    "roles/chrony_nts_server/meta/argument_specs.yml",
    "plugins/modules/nts_probe.py",
    "plugins/action/nts_probe.py",
    "plugins/module_utils/nts_prober.py",
    "plugins/filter/nts_select.yml",
    "plugins/plugin_utils/catalog_schema.py",
)


def _outside_env(work: Path, collections: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(work / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        PATH="%s:%s" % (BIN, env.get("PATH", "")),
    )
    if collections is not None:
        env.update(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false")
    return env


def _run(args, work: Path, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("collection-user")
    # ansible-core 2.19 refuses ANSIBLE_CONFIG=/dev/null ("unsupported configuration file extension"): an empty one.
    (work / "ansible.cfg").write_text("[defaults]\n")
    return work


@pytest.fixture(scope="module")
def tarball(work) -> Path:
    proc = _run(
        [str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(work / "dist"), str(REPO)],
        work,
        _outside_env(work),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    path = work / "dist" / ("nts-chrony-%s.tar.gz" % version)
    assert path.is_file(), list((work / "dist").iterdir())
    return path


@pytest.fixture(scope="module")
def members(tarball) -> set:
    with tarfile.open(tarball) as tar:
        return {name.removeprefix("./").rstrip("/") for name in tar.getnames()}


@pytest.fixture(scope="module")
def installed(work, tarball) -> Path:
    """The tarball installed into an empty directory (no dependencies: Galaxy is out of reach, none is needed)."""
    collections = work / "collections"
    proc = _run(
        [str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(collections), str(tarball)],
        work,
        _outside_env(work),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (collections / "ansible_collections" / "nts" / "chrony" / "MANIFEST.json").is_file()
    return collections


@pytest.mark.parametrize("path", EXCLUDED)
def test_tarball_leaves_out_the_checkouts_own_content(members, path):
    assert not [m for m in members if m == path or m.startswith(path + "/")], "%s is in the tarball" % path


def test_tarball_leaves_out_caches_and_bytecode(members):
    assert not [m for m in members if "__pycache__" in m or m.endswith((".pyc", ".retry", ".tar.gz"))]


@pytest.mark.parametrize("path", REQUIRED)
def test_tarball_has_the_collection_content(members, path):
    assert path in members


def test_manifest_carries_galaxy_yml(tarball):
    """galaxy.yml itself is never in a built tarball: ansible-galaxy turns it into MANIFEST.json."""
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    with tarfile.open(tarball) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))["collection_info"]
    for key in ("namespace", "name", "version", "dependencies", "license", "repository"):
        assert manifest[key] == galaxy[key], key


def test_installed_collection_is_documented_from_the_install_directory(work, installed):
    env = _outside_env(work, installed)
    listing = _run([str(BIN / "ansible-doc"), "-t", "module", "-l", "nts.chrony"], work, env)
    assert listing.returncode == 0, listing.stderr
    modules = {line.split()[0] for line in listing.stdout.splitlines() if line.startswith("nts.chrony.")}
    assert {"nts.chrony.nts_probe", "nts.chrony.chrony_nts_apply", "nts.chrony.chrony_authdata"} <= modules
    for kind, name in (("module", "nts_probe"), ("filter", "nts_select"), ("role", "chrony_nts")):
        proc = _run([str(BIN / "ansible-doc"), "-t", kind, "--json", "nts.chrony.%s" % name], work, env)
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)["nts.chrony.%s" % name]
        if kind == "role":
            assert doc["entry_points"]["main"]["options"]
            assert Path(doc["path"]).resolve().is_relative_to(installed.resolve()), doc["path"]
        else:
            assert doc["doc"]["short_description"]
            assert Path(doc["doc"]["filename"]).resolve().is_relative_to(installed.resolve()), doc["doc"]["filename"]


def test_fqcn_playbook_passes_syntax_check_with_only_the_installed_collection(work, installed):
    play = work / "site.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "NTS with the installed collection",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "roles": [{"role": "nts.chrony.chrony_nts"}],
                    "tasks": [
                        {
                            "name": "Probe",
                            "nts.chrony.nts_probe": {"servers": [{"host": "127.0.0.1", "ntsport": 1}], "timeout": 1},
                        },
                        {
                            "name": "Select",
                            "ansible.builtin.debug": {
                                "msg": "{{ none | nts.chrony.nts_select({'min_sources': 1, 'count': 1}, []) }}"
                            },
                        },
                    ],
                }
            ],
            sort_keys=False,
        )
    )
    proc = _run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,", str(play)],
        work,
        _outside_env(work, installed),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stderr, proc.stderr


def _adhoc_localhost(work: Path, installed: Path, module: str, args: dict, *extra: str) -> dict:
    """``ansible localhost -m MODULE -a JSON`` outside the checkout; the result of the one host."""
    env = _outside_env(work, installed)
    # The json callback lives in ansible.posix now, which is not installed here: the default ad-hoc output,
    # "localhost | SUCCESS => {JSON}". Arguments as JSON: key=value would split "[{host: 127.0.0.1, ...}]" at spaces.
    env.update(ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    proc = _run(
        [str(BIN / "ansible"), "localhost", "-m", module, "-a", json.dumps(args), *extra], work, env, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, _, body = proc.stdout.rpartition("localhost | ")
    status, _, payload = body.partition(" => ")
    assert status == "SUCCESS", proc.stdout
    result = json.loads(payload)
    assert not result.get("failed"), result
    return result


PROBE_ARGS = {"servers": [{"host": "127.0.0.1", "ntsport": 1}], "timeout": 1, "fail_on_error": False, "min_ok": 0}


def _assert_refused(result: dict) -> None:
    assert result["ok_servers"] == [] and result["failed_servers"] == ["127.0.0.1"], result
    (server,) = result["results"]
    assert server["host"] == "127.0.0.1" and server["port"] == 1 and server["ok"] is False
    assert server["stage"] == "tcp", server
    assert "refused" in server["error"], server


def test_nts_probe_runs_from_the_installed_collection_and_fails_cleanly(work, installed):
    """The probe of a closed loopback port is one failed server, not a failed task. On the controller the action
    plugin runs the probe in-process: plugins/action and module_utils imported from the installed collection."""
    _assert_refused(_adhoc_localhost(work, installed, "nts.chrony.nts_probe", PROBE_ARGS))


def test_nts_probe_runs_as_an_async_module_from_the_installed_collection(work, installed):
    """With async the action plugin hands the task to the module itself (AnsiballZ with its module_utils), wrapped
    as an async job (_supports_async, wrap_async): Ansible gets the job id and polls it to the module's result."""
    _assert_refused(_adhoc_localhost(work, installed, "nts.chrony.nts_probe", PROBE_ARGS, "-B", "30", "-P", "1"))


def test_a_module_runs_through_ansiballz_with_module_utils_from_the_installed_collection(work, installed):
    """chrony_nts_host (read-only; no chronyd is run: its path points nowhere) is packed with module_utils
    chrony_host, chronyc and nts_health from the installed collection and runs on localhost in check mode."""
    result = _adhoc_localhost(
        work,
        installed,
        "nts.chrony.chrony_nts_host",
        {"os_facts": True, "chronyd": str(work / "no-chronyd"), "read": [str(work / "ansible.cfg")]},
        "-C",
    )
    assert result["changed"] is False
    assert result["ansible_facts"]["os_family"], result
    assert result["chronyd"]["present"] is False, result
    assert result["files"] == {str(work / "ansible.cfg"): "[defaults]\n"}
