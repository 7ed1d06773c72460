"""labctl on a real one-client lab of its own: a second checkout is refused at once and told what to do, a host that
does not accept SSH is diagnosed (still booting, sshd down), and `make demo` / `make health` use the lab's inventory."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from tests.lab.conftest import LABCTL, REPO, VENV_BIN, run

pytestmark = pytest.mark.lab

SLOW_BOOT = (
    "[Unit]\nDescription=A slow boot step (test)\nBefore=ssh.service\n"
    "[Service]\nType=oneshot\nExecStart=/bin/sleep 120\n[Install]\nWantedBy=multi-user.target\n"
)


@pytest.fixture(scope="module")
def small_lab():
    name = f"cnts-labctl-{os.getpid() % 100000}"
    res = run([*LABCTL, "up", "--name", name, "--clients", "1"])
    if res.returncode != 0:
        run([*LABCTL, "down", "--name", name])
        pytest.fail(f"lab {name} did not come up:\n{res.stdout}\n{res.stderr}")
    yield name
    if os.environ.get("KEEP_LAB") != "1":
        run([*LABCTL, "down", "--name", name], check=True)


def sh(container: str, script: str) -> None:
    run(["podman", "exec", container, "sh", "-c", script], check=True)


def states(name: str) -> dict[str, str]:
    """{container: (id, state)} of the lab's containers."""
    res = run(["podman", "ps", "-a", "--filter", f"label=io.chrony-nts.lab={name}", "--format", "json"], check=True)
    return {c["Names"][0]: (c["Id"], c["State"]) for c in json.loads(res.stdout)}


def test_a_second_checkout_is_refused_at_once_and_told_what_to_do(small_lab, tmp_path):
    other = tmp_path / "second-clone"
    other.mkdir()
    shutil.copytree(REPO / "lab", other / "lab")
    labctl_there = [str(VENV_BIN / "python"), str(other / "lab" / "labctl.py")]
    before = states(small_lab)
    assert len(before) == 7 and {state for _id, state in before.values()} == {"running"}, before

    for verb in ("up", "down"):
        started = time.monotonic()
        res = run([*labctl_there, verb, "--name", small_lab, "--clients", "1"], cwd=other)
        took = time.monotonic() - started
        err = " ".join(res.stderr.split())
        assert res.returncode == 2, res.stdout + res.stderr
        assert took < 15, took  # not a 90 s wait for SSH
        assert f"lab {small_lab} is already up from another checkout, {REPO} (7 containers" in err, err
        assert f"Use another lab name here (make demo LAB_NAME={small_lab}-2" in err, err
        assert f"cd {REPO} && make lab-down LAB_NAME={small_lab}" in err, err
    assert err.endswith("(nothing was removed)"), err
    assert states(small_lab) == before  # nothing was removed, stopped or added
    assert not (other / ".lab").exists()  # and nothing was made there

    res = run([*labctl_there, "status", "--name", small_lab], cwd=other)
    assert f"made by another checkout, {REPO}: {small_lab}-client1, " in res.stdout, res.stdout
    # this checkout still owns it
    assert run([*LABCTL, "up", "--name", small_lab, "--clients", "1"]).returncode == 0


def test_a_host_still_booting_is_diagnosed(small_lab):
    client = f"{small_lab}-client1"
    sh(client, f"printf '{SLOW_BOOT}' > /etc/systemd/system/slowboot.service && systemctl enable -q slowboot.service")
    try:
        run(["podman", "restart", "-t", "5", client], check=True)
        res = run([*LABCTL, "up", "--name", small_lab, "--clients", "1", "--ssh-wait", "3"])
        assert res.returncode == 2, res.stdout + res.stderr
        lines = res.stderr.splitlines()
        assert lines[0].startswith("lab: error: lab hosts did not accept SSH within ")
        assert "(as set): client1; machine load " in lines[0] and "--ssh-wait SECONDS or LAB_SSH_WAIT" in lines[0]
        assert lines[1].startswith(f"client1: container {client} running, systemd starting, ssh.service inactive")
        assert "Connection refused" in lines[1], lines[1]
        assert lines[2].startswith("    cause: systemd is still booting"), lines[2]
        assert lines[3].startswith("    pending systemd jobs: slowboot.service start running; "), lines[3]
        # a journal tail follows (its last lines: with node_exporter in the image, later units may push the
        # slow step's own "Starting" line out of it)
        assert "    journal:" in res.stderr, res.stderr
    finally:
        # cancel the slow step: the boot goes on and sshd starts
        sh(client, "systemctl stop slowboot.service; systemctl disable -q slowboot.service; "
                   "rm -f /etc/systemd/system/slowboot.service; systemctl reset-failed")  # fmt: skip
    res = run([*LABCTL, "up", "--name", small_lab, "--clients", "1"])  # the default wait
    assert res.returncode == 0, res.stdout + res.stderr


def test_sshd_down_after_the_boot_is_diagnosed(small_lab):
    client = f"{small_lab}-client1"
    for sock in (REPO / ".lab" / small_lab).glob("cp-*"):  # an open SSH master would still answer
        run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "lab"])
    sh(client, "systemctl stop ssh.service ssh.socket")
    try:
        res = run([*LABCTL, "up", "--name", small_lab, "--clients", "1", "--ssh-wait", "2"])
        assert res.returncode == 2, res.stdout + res.stderr
        lines = res.stderr.splitlines()
        assert lines[1].startswith(f"client1: container {client} running, systemd running, ssh.service inactive")
        assert lines[2] == "    cause: ssh.service is inactive although the boot finished (running): see the journal"
        assert "Stopped ssh.service - OpenBSD Secure Shell server." in res.stderr
    finally:
        sh(client, "systemctl start ssh.service")
    assert run([*LABCTL, "up", "--name", small_lab, "--clients", "1"]).returncode == 0


def test_make_demo_and_health_use_the_labs_inventory(small_lab):
    inventory = f".lab/{small_lab}/inventory/hosts.yml"
    res = run(["make", "demo", f"LAB_NAME={small_lab}", "LAB_CLIENTS=1"], cwd=REPO, timeout=900)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
    assert f"\nansible-playbook -i {inventory} site.yml\n" in res.stdout
    assert f"\nansible-playbook -i {inventory} playbooks/health.yml\n" in res.stdout
    assert "client1      OK" in res.stdout, res.stdout[-3000:]

    res = run(["make", "health", f"LAB_NAME={small_lab}"], cwd=REPO)
    assert res.returncode == 0 and "client1      OK" in res.stdout, res.stdout[-3000:]

    absent = f"{small_lab}-absent"
    res = run(["make", "health", f"LAB_NAME={absent}"], cwd=REPO)
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode != 0, out[-3000:]
    missing = f"{REPO}/.lab/{absent}/inventory/hosts.yml (no such file)"
    assert f"group chrony_nts_clients is empty in the inventory {missing}" in out, out[-3000:]
