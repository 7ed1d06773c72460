"""The new inputs of health.yml and report.yml (the oldest metrics reading that stands for a host) are checked against
the playbooks' argument specs before any host is contacted (nts.chrony.preflight), as their other inputs are."""

from __future__ import annotations

import pytest

from tests.integration.test_empty_targets import contacted, inventory, play, rollout_args

BAD = [
    ("playbooks/health.yml", "chrony_nts_health_max_reading_age=stale", "chrony_nts_health_max_reading_age"),
    ("playbooks/report.yml", "chrony_nts_report_max_reading_age=stale", "chrony_nts_report_max_reading_age"),
]


@pytest.mark.parametrize(("playbook", "extra", "field"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_max_reading_age_is_named_before_any_host_is_contacted(playbook, extra, field, tmp_path):
    inv = inventory(tmp_path, clients=["client1"])
    rc, out = play(playbook, inv, *rollout_args(tmp_path), "-e", extra, "--limit", "client1:localhost")
    assert rc == 2, out[-3000:]
    assert "Validation of arguments failed" in out and field in out, out[-3000:]
    assert not contacted(out)
    assert not (tmp_path / "rep").exists()
