"""The playbooks' own inputs are checked against their argument specs (nts.chrony.preflight) before any host is
contacted, with an error naming the variable and what was wrong."""

from __future__ import annotations

import pytest

from tests.integration.test_empty_targets import contacted, inventory, play, rollout_args

BAD = [
    ("playbooks/health.yml", "chrony_nts_health_timeout=soon", "chrony_nts_health_timeout"),
    ("playbooks/report.yml", "chrony_nts_report_fail_on_unhealthy=maybe", "chrony_nts_report_fail_on_unhealthy"),
    ("playbooks/rollout.yml", "chrony_nts_rollout_max_fail_percentage=some", "chrony_nts_rollout_max_fail_percentage"),
]


@pytest.mark.parametrize(("playbook", "extra", "field"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_playbook_input_is_named_before_any_host_is_contacted(playbook, extra, field, tmp_path):
    inv = inventory(tmp_path, clients=["client1"])
    rc, out = play(playbook, inv, *rollout_args(tmp_path), "-e", extra, "--limit", "client1:localhost")
    assert rc == 2, out[-3000:]
    assert "Validation of arguments failed" in out and field in out, out[-3000:]
    assert not contacted(out)
    assert not (tmp_path / "rollout").exists() and not (tmp_path / "rep").exists()
