"""labctl's wait for the lab hosts: how long it waits (stretched by load, or as set), and what it says when a host is
not ready, read from real command output captured on a lab container (tests/fixtures/labctl/wait_diagnosis.json says
how each case was made)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("labctl", REPO / "lab" / "labctl.py")
labctl = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(labctl)

CAPTURED = json.loads((REPO / "tests" / "fixtures" / "labctl" / "wait_diagnosis.json").read_text())


def res(case: str, what: str) -> tuple[int, str, str]:
    r = CAPTURED[case][what]
    return (r["rc"], r["stdout"], r["stderr"])


def ssh_error(case: str) -> str:
    return CAPTURED[case]["ssh"]["stderr"].strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------------------- the budget
@pytest.mark.parametrize(
    ("load1", "cpus", "running", "seconds"),
    [
        (0.3, 2, 0, 90),  # idle machine: the old fixed 90 s
        (1.9, 2, 7, 90),  # one lab of 7 containers on 2 cores: not loaded yet
        (8.0, 2, 41, 360),  # three labs starting: load 4 per core
        (1.0, 2, 40, 225),  # 40 containers settled: 2.5 x the containers 2 cores allow for
        (200.0, 2, 400, 900),  # never more than the cap
        (3.0, 0, 0, 270),  # no usable core reported: counted as one
    ],
)
def test_the_wait_stretches_with_load(load1, cpus, running, seconds):
    assert labctl.ssh_wait_budget(load1, cpus, running) == pytest.approx(seconds)


def test_the_wait_is_configurable_and_documented(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(labctl.Lab, "up", lambda self: seen.append(self.ssh_wait))
    assert labctl.main(["up", "--name", "unit-test-lab", "--ssh-wait", "300"]) == 0
    monkeypatch.setenv("LAB_SSH_WAIT", "120")
    assert labctl.main(["up", "--name", "unit-test-lab"]) == 0
    monkeypatch.delenv("LAB_SSH_WAIT")
    assert labctl.main(["up", "--name", "unit-test-lab"]) == 0
    assert seen == [300.0, 120.0, None]  # None: stretched by load
    with pytest.raises(SystemExit):
        labctl.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--ssh-wait SECONDS" in text and "LAB_SSH_WAIT" in text and "at most 900 s" in text


# ------------------------------------------------------------------------------------------------------- the diagnosis
def test_a_host_still_booting_is_named_with_what_systemd_is_busy_with():
    lines = labctl.diagnose_host(
        "client1", "emptyt-client1", "running",
        res("booting", "system"), res("booting", "sshd"), res("booting", "jobs"), res("booting", "journal"),
        ssh_error("booting"),
    )  # fmt: skip
    assert lines[0] == (
        "client1: container emptyt-client1 running, systemd starting, ssh.service inactive; "
        "last SSH attempt: ssh: connect to host 10.89.133.11 port 22: Connection refused"
    )
    assert lines[1].startswith("    cause: systemd is still booting") and "--ssh-wait" in lines[1]
    # the running job comes first, then what waits for it
    assert lines[2].startswith("    pending systemd jobs: slowboot.service start running; ")
    assert "ssh.service start waiting" in lines[2]
    assert lines[3] == "    journal:"
    tail = lines[4:]
    assert len(tail) == 12
    assert "Starting slowboot.service - A slow boot step (test)..." in "\n".join(tail)
    assert all(len(line) <= 6 + 200 for line in tail)  # long journal lines are cut


def test_initializing_counts_as_booting():
    lines = labctl.diagnose_host(
        "client1", "x-client1", "running", res("initializing", "system"), res("initializing", "sshd"), None, None, ""
    )
    assert "systemd initializing, ssh.service active; last SSH attempt: none" in lines[0]
    assert "still booting" in lines[1]


def test_sshd_down_after_the_boot_is_the_cause():
    lines = labctl.diagnose_host(
        "client2", "x-client2", "running",
        res("sshd_stopped", "system"), res("sshd_stopped", "sshd"), res("sshd_stopped", "jobs"),
        res("sshd_stopped", "journal"), ssh_error("sshd_stopped"),
    )  # fmt: skip
    assert "systemd running, ssh.service inactive" in lines[0] and "Connection refused" in lines[0]
    assert lines[1] == "    cause: ssh.service is inactive although the boot finished (running): see the journal"
    assert not any("pending systemd jobs" in line for line in lines)  # list-jobs printed nothing
    assert any("Stopped ssh.service - OpenBSD Secure Shell server." in line for line in lines)


def test_a_refused_key_points_at_another_key():
    lines = labctl.diagnose_host(
        "client1", "x-client1", "running",
        res("sshd_stopped", "system"), (0, "active\n", ""), (0, "", ""), None, ssh_error("wrong_key"),
    )  # fmt: skip
    assert "Permission denied (publickey)." in lines[0]
    assert "refuses this lab's key" in lines[1] and "another checkout" in lines[1]


def test_a_stopped_container_is_named_without_exec():
    lines = labctl.diagnose_host(
        "client3", "x-client3", CAPTURED["exec_on_stopped"]["state"]["stdout"].strip(), None, None, None, None, ""
    )
    assert lines == [
        "client3: container x-client3 is exited",
        "    cause: the container is not running: see `podman logs x-client3`; `up` starts it again",
    ]
    assert labctl.diagnose_host("client4", "x-client4", None, None, None, None, None, "")[0] == (
        "client4: container x-client4 does not exist"
    )


def test_a_container_that_stops_while_read_shows_podmans_error():
    lines = labctl.diagnose_host(
        "client1", "x-client1", "running", res("exec_on_stopped", "system"), None, None, (125, "", "Error: boom\n"), ""
    )
    assert "systemd unknown (Error: can only create exec sessions on running containers" in lines[0]
    assert "ssh.service not read" in lines[0]
    assert lines[-1] == "    journal: not read (Error: boom)"


def test_the_failure_message_says_how_long_under_what_load_and_how_to_wait_longer():
    diagnoses = {
        "client2": labctl.diagnose_host("client2", "x-client2", "exited", None, None, None, None, ""),
        "client1": labctl.diagnose_host(
            "client1", "x-client1", "running", res("booting", "system"), res("booting", "sshd"),
            res("booting", "jobs"), res("booting", "journal"), ssh_error("booting"),
        ),
    }  # fmt: skip
    msg = labctl.wait_failure_message(225.4, False, (7.96, 2, 41), diagnoses)
    head, *rest = msg.splitlines()
    assert head == (
        "lab hosts did not accept SSH within 225 s (stretched by load): client1, client2; machine load 8.0 on 2 cores, "
        "41 containers running; wait longer with --ssh-wait SECONDS or LAB_SSH_WAIT=SECONDS"
    )
    assert rest[0].startswith("client1: ") and rest.index("client2: container x-client2 is exited") > 0
    assert "(as set)" in labctl.wait_failure_message(3, True, (0.1, 2, 7), diagnoses).splitlines()[0]
