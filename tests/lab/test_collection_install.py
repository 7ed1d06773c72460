"""The collection as users get it: the built tarball installed into an empty directory, a playbook written outside
the checkout (FQCN names only, its own ansible.cfg and inventory, not the checkout's) deploying NTS to a lab host.
The run is green and the proof ran on the host."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.lab.conftest import recap

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
HOST = "client4"


def outside_env(cfg: Path | None = None) -> dict[str, str]:
    """The environment of a user's shell: none of the checkout's ANSIBLE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    if cfg:
        env["ANSIBLE_CONFIG"] = str(cfg)
    return env


def run(cmd, cwd, env, timeout=600):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("users-project")
    env = outside_env()
    build = run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(work), str(REPO)], work, env)
    assert build.returncode == 0, build.stdout + build.stderr
    (tarball,) = work.glob("nts-chrony-*.tar.gz")
    collections = work / "collections"
    install = [str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "-p", str(collections), str(tarball)]
    inst = run(install, work, env)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    assert (collections / "ansible_collections" / "nts" / "chrony" / "roles" / "chrony_nts").is_dir()
    return work, collections


def test_installed_collection_deploys_nts_to_a_lab_host_from_outside_the_checkout(lab, installed):
    work, collections = installed
    all_vars = lab.data["all"]["vars"]
    host_vars = lab.data["all"]["children"]["chrony_nts_clients"]["hosts"][HOST]
    inventory = {
        "all": {"hosts": {HOST: {**host_vars, **{k: v for k, v in all_vars.items() if k.startswith("ansible_")}}}}
    }
    (work / "inventory.yml").write_text(json.dumps(inventory))
    ca = Path(lab.vars["lab_ca_file"]).read_text()
    servers = [{"host": f"{s}.lab.test", "ca": ca, "options": ["minpoll 0", "maxpoll 4"]} for s in ("nts1", "nts2")]
    playbook = [
        {
            "name": "A user's own playbook: NTS with the installed nts.chrony collection",
            "hosts": "all",
            "become": True,
            "gather_facts": False,
            "vars": {
                "ansible_managed": "Managed by a user's project",
                "ansible_python_interpreter": "/usr/bin/python3",
                "chrony_nts_use_catalog": False,
                "chrony_nts_site_servers": servers,
                "chrony_nts_policy": {"count": 2, "min_sources": 2},
                "chrony_nts_verify_min_sources": 2,
                "chrony_nts_clock_control": False,  # lab containers have no CAP_SYS_TIME: chronyd -x
                "chrony_nts_package_update_cache": False,
                "chrony_nts_probe_gate": False,  # the lab names do not resolve on the controller
            },
            "roles": [{"role": "nts.chrony.chrony_nts"}],
            "post_tasks": [
                {
                    "name": "Read NTS health with the collection's module",
                    "nts.chrony.chrony_authdata": {"timeout": 20, "min_sources": 2},
                    "register": "health",
                },
                {"name": "Show it", "ansible.builtin.debug": {"msg": "verified={{ health.verified }}"}},
            ],
        }
    ]
    (work / "site.yml").write_text(yaml.safe_dump(playbook, sort_keys=False))
    (work / "ansible.cfg").write_text(
        f"[defaults]\ncollections_path = {collections}\ninventory = inventory.yml\nhost_key_checking = False\n"
        "[ssh_connection]\npipelining = True\n"
    )
    res = run([str(BIN / "ansible-playbook"), "site.yml"], work, outside_env(work / "ansible.cfg"), timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert str(REPO) not in out.replace(str(REPO / ".lab"), ""), "the run must not use the checkout"
    assert "nts.chrony.chrony_nts : Configure chrony" in out
    assert "NTS verified in" in out and "verified=True" in out, out[-4000:]
    assert recap(out)[HOST]["failed"] == 0
