"""chrony_nts_server's optional firewall opening, nftables backend, for real: the role's firewall.yml runs against
localhost inside a private network namespace (``unshare --net``: its own nftables ruleset, nothing on the machine's
own firewall changes), with the chain present (rules inserted once, idempotent) and absent (nothing opened, said so)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.loopback

REPO = Path(__file__).resolve().parents[2]
PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    chrony_nts_server_firewall: true
    chrony_nts_server_firewall_backend: auto
    chrony_nts_server_firewall_nft_chain: inet filter input
    chrony_nts_server_ntsport: 4460
  tasks:
    - ansible.builtin.include_role:
        name: nts.chrony.chrony_nts_server
        tasks_from: firewall.yml
"""


def in_netns(tmp_path: Path, setup: str, runs: int = 2) -> subprocess.CompletedProcess:
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    playbook = (
        f"ANSIBLE_CONFIG={REPO / 'ansible.cfg'}"
        f" {REPO / '.venv' / 'bin' / 'ansible-playbook'} -i localhost,"
        f" -e ansible_python_interpreter={sys.executable} {play}"
    )
    script = f"{setup}; " + "; ".join([f"{playbook}; echo RC=$?"] * runs) + "; echo RULESET; nft list ruleset"
    if os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("unshare") is None:
        pytest.fail("needs root, nft and unshare (the project's test machine has them)")
    return subprocess.run(
        ["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300, check=False
    )


def test_nftables_rules_inserted_once(tmp_path):
    setup = "nft add table inet filter && nft 'add chain inet filter input { type filter hook input priority 0; }'"
    res = in_netns(tmp_path, setup)
    runs, ruleset = res.stdout.split("RULESET")
    assert runs.count("RC=0") == 2, res.stdout[-3000:] + res.stderr[-2000:]
    first, second = runs.split("RC=0")[:2]
    assert "changed=1" in first and "changed=0" in second
    assert ruleset.count('tcp dport 4460 accept comment "chrony-nts-tcp-4460"') == 1, ruleset
    assert ruleset.count('udp dport 123 accept comment "chrony-nts-udp-123"') == 1, ruleset


def test_no_firewall_found_opens_nothing(tmp_path):
    res = in_netns(tmp_path, "true", runs=1)
    runs, ruleset = res.stdout.split("RULESET")
    assert "RC=0" in runs and "changed=0" in runs, res.stdout[-3000:]
    said = " ".join(runs.split())  # the YAML callback folds long messages
    assert "no running firewalld, active ufw or nftables chain" in said and "was found: nothing opened." in said
    assert "chrony-nts" not in ruleset
