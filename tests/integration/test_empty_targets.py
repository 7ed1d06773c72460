"""A run with nothing to act on is never green. ansible-playbook alone ends a play that matches no host with "skipping:
no hosts matched" and rc 0; site.yml, playbooks/rollout.yml, health.yml and report.yml each start with a play that
fails such a run, naming the group and the inventory, before any host is contacted.

No lab needed: the inventories are made here, and their hosts point at a closed port on loopback. Where a run must get
past the check, `--tags not-a-tag` keeps every other task from running, so no host is contacted either."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
PLAYBOOKS = ["site.yml", "playbooks/rollout.yml", "playbooks/health.yml", "playbooks/report.yml"]
NOWHERE = {"ansible_host": "127.0.0.1", "ansible_port": 9, "ansible_connection": "ssh"}  # never answers


def inventory(tmp_path: Path, clients=(), servers=(), others=()) -> Path:
    path = tmp_path / "hosts.yml"
    groups = {"chrony_nts_clients": clients, "chrony_nts_servers": servers, "web": others}
    children = {group: {"hosts": {h: NOWHERE for h in hosts}} for group, hosts in groups.items()}
    path.write_text(json.dumps({"all": {"children": children}}))
    return path


def play(playbook: str, inv: Path, *args: str) -> tuple[int, str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inv), playbook, *args]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    return res.returncode, " ".join((res.stdout + res.stderr).split())  # one line: messages are folded by width


def contacted(output: str) -> bool:
    return "UNREACHABLE" in output or "port 9" in output


def rollout_args(tmp_path: Path) -> list[str]:
    return ["-e", f"chrony_nts_rollout_dir={tmp_path / 'rollout'}", "-e", f"chrony_nts_report_dir={tmp_path / 'rep'}"]


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_a_missing_inventory_fails_and_names_it(playbook, tmp_path):
    missing = tmp_path / "no-such-lab" / "hosts.yml"
    rc, out = play(playbook, missing, *rollout_args(tmp_path))
    assert rc == 2, out[-3000:]
    group = "group chrony_nts_clients is"
    if playbook == "playbooks/report.yml":
        group = "groups chrony_nts_clients and chrony_nts_servers are"
    assert f"{group} empty in the inventory {missing} (no such file)" in out, out[-3000:]
    assert ".lab/NAME/inventory/hosts.yml" in out
    assert not (tmp_path / "rollout").exists() and not (tmp_path / "rep").exists()  # no record, no report


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_empty_groups_fail(playbook, tmp_path):
    inv = inventory(tmp_path, others=["web1"])
    rc, out = play(playbook, inv, *rollout_args(tmp_path))
    assert rc == 2, out[-3000:]
    assert f"empty in the inventory {inv}. " in out, out[-3000:]
    assert "(no such file)" not in out and not contacted(out)


@pytest.mark.parametrize("playbook", ["site.yml", "playbooks/rollout.yml", "playbooks/health.yml"])
def test_servers_without_clients_fail(playbook, tmp_path):
    inv = inventory(tmp_path, servers=["tier1"])
    rc, out = play(playbook, inv, *rollout_args(tmp_path))
    assert rc == 2, out[-3000:]
    assert f"group chrony_nts_clients is empty in the inventory {inv}. " in out, out[-3000:]
    assert not contacted(out)


def test_a_report_on_servers_only_gets_past_the_check(tmp_path):
    inv = inventory(tmp_path, servers=["tier1"])
    rc, out = play("playbooks/report.yml", inv, "--tags", "not-a-tag", *rollout_args(tmp_path))
    assert rc == 0, out[-3000:]
    assert "Check the playbook's inputs and targets" in out and "failed=0" in out


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_a_limit_that_leaves_no_target_fails(playbook, tmp_path):
    inv = inventory(tmp_path, clients=["client1"], servers=["tier1"], others=["web1"])
    limit = "web1:localhost" if playbook in ("playbooks/rollout.yml", "playbooks/report.yml") else "web1"
    rc, out = play(playbook, inv, "--limit", limit, *rollout_args(tmp_path))
    assert rc == 2, out[-3000:]
    assert f"--limit '{limit}' leaves no host of chrony_nts_clients" in out and f"inventory {inv}" in out, out[-3000:]
    assert not contacted(out)


def test_a_limit_that_matches_nothing_is_refused_by_ansible_itself(tmp_path):
    inv = inventory(tmp_path, clients=["client1"])
    rc, out = play("site.yml", inv, "--limit", "nosuchhost")
    assert rc != 0 and "--limit leaves us with no hosts to target" in out, out[-3000:]


@pytest.mark.parametrize(
    ("playbook", "why"),
    [
        ("playbooks/rollout.yml", "Nothing to roll out (rollout)"),
        ("playbooks/report.yml", "Nothing to report on (report)"),
    ],
)
def test_a_limit_without_localhost_fails_where_the_controller_keeps_a_record(playbook, why, tmp_path):
    inv = inventory(tmp_path, clients=["client1", "client2"])
    rc, out = play(playbook, inv, "--limit", "client2", *rollout_args(tmp_path))
    assert rc == 2, out[-3000:]
    assert (
        f"{why}: --limit left out localhost, where the record is written: add it, e.g. --limit 'client2:localhost'"
        in out
    ), out[-3000:]
    assert not contacted(out)
    assert not (tmp_path / "rollout").exists() and not (tmp_path / "rep").exists()


@pytest.mark.parametrize(
    ("playbook", "limit"),
    [
        ("site.yml", None),
        ("site.yml", "tier1"),  # a server of the tier alone: a legitimate run
        ("playbooks/health.yml", "client2"),  # health needs no localhost
        ("playbooks/rollout.yml", "client2:localhost"),
        ("playbooks/report.yml", None),
    ],
)
def test_runs_with_targets_get_past_the_check(playbook, limit, tmp_path):
    inv = inventory(tmp_path, clients=["client1", "client2"], servers=["tier1"])
    args = ["--tags", "not-a-tag", *rollout_args(tmp_path), *(["--limit", limit] if limit else [])]
    rc, out = play(playbook, inv, *args)
    assert "Nothing to" not in out and "No host to" not in out and "left it out" not in out, out[-3000:]
    assert not contacted(out)
    if playbook == "playbooks/rollout.yml":
        # past the check, the record is started; with every deploy task filtered out no batch ran: not green either
        plan = json.loads(next((tmp_path / "rollout").glob("*/plan.json")).read_text())
        assert plan["hosts"] == ["client2"], plan
        assert rc == 2 and "Rollout incomplete: failed none; untouched client2." in out, out[-3000:]
    else:
        assert rc == 0, out[-3000:]
