"""The podman lab for tests: one lab per test session, made at the first test that needs it, removed at the end.

Its name is unique to the session (CHRONY_NTS_TEST_LAB overrides it), so it never collides with the demo lab or a
second run. KEEP_LAB=1 leaves it up for debugging.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
LABCTL = [str(VENV_BIN / "python"), str(REPO / "lab" / "labctl.py")]


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(REPO / "lab" / "containers.conf")
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env.setdefault("ANSIBLE_FORCE_COLOR", "0")
    return env


def run(cmd: list[str], timeout: float = 600, check: bool = False, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, env=podman_env(), text=True, capture_output=True, timeout=timeout, check=False, **kw)
    if check and res.returncode != 0:
        tail = f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
        raise AssertionError(f"{shlex.join(cmd)} failed rc={res.returncode}\n{tail}")
    return res


@dataclass
class Lab:
    name: str
    inventory: Path
    data: dict = field(repr=False)

    @property
    def vars(self) -> dict:
        return self.data["all"]["vars"]

    @property
    def clients(self) -> list[str]:
        return list(self.data["all"]["children"]["chrony_nts_clients"]["hosts"])

    def container(self, short: str) -> str:
        return f"{self.name}-{short}"

    def server_address(self, short: str) -> str:
        return self.vars["lab_servers"][short]["address"]

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(["podman", *args], check=check)

    def sh(self, short: str, script: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a shell script inside a lab container (client or server) as root."""
        return self.podman("exec", self.container(short), "sh", "-c", script, check=check)

    def fault(self, *args: str) -> None:
        run([*LABCTL, "fault", "--name", self.name, *args], check=True)

    def playbook(self, playbook: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory), str(REPO / playbook), *args]
        return run(cmd, timeout=timeout, cwd=REPO)


def load_inventory(path: Path) -> dict:
    text = path.read_text()
    return json.loads(text[text.index("{") :])


@pytest.fixture(scope="session")
def lab() -> Lab:
    name = os.environ.get("CHRONY_NTS_TEST_LAB", f"cnts-test-{os.getpid() % 100000}")
    res = run([*LABCTL, "up", "--name", name, "--clients", os.environ.get("CHRONY_NTS_TEST_CLIENTS", "4")])
    if res.returncode != 0:
        run([*LABCTL, "down", "--name", name])
        pytest.fail(f"lab {name} did not come up:\n{res.stdout}\n{res.stderr}")
    inventory = REPO / ".lab" / name / "inventory" / "hosts.yml"
    yield Lab(name, inventory, load_inventory(inventory))
    if os.environ.get("KEEP_LAB") != "1":
        run([*LABCTL, "down", "--name", name], check=True)


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP counters per host: {host: {"ok": n, "changed": n, "failed": n, ...}}."""
    hosts = {}
    for host, fields in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.M):
        hosts[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", fields)}
    return hosts
