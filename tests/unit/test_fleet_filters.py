"""The playbook and role filters that replaced Jinja programs: targets, health lines, report records, files."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.nts.chrony.plugins.filter.chrony_nts_files import (
    chrony_nts_apply_files,
    chrony_nts_probe_targets,
    chrony_nts_secret_file,
)
from ansible_collections.nts.chrony.plugins.filter.nts_fleet import (
    nts_health_lines,
    nts_report_records,
    nts_target_errors,
)

GROUPS = {"all": ["c1", "c2", "t1"], "chrony_nts_clients": ["c1", "c2"], "chrony_nts_servers": ["t1"]}


def test_targets_ok_and_each_way_to_have_none(tmp_path):
    inv = str(tmp_path / "hosts.yml")
    both = ["chrony_nts_clients", "chrony_nts_servers"]
    assert nts_target_errors(GROUPS, ["c1", "localhost"], both, "c1:localhost", [inv], "chrony_nts_clients", True) == []
    (err,) = nts_target_errors({"all": []}, [], both, "", [inv], "chrony_nts_clients")
    assert err.startswith(f"group chrony_nts_clients is empty in the inventory {inv} (no such file). Name the")
    (err,) = nts_target_errors(GROUPS, ["web1"], both, "web1", [inv], "chrony_nts_clients")
    assert err.startswith("--limit 'web1' leaves no host of chrony_nts_clients or chrony_nts_servers")
    (err,) = nts_target_errors(GROUPS, ["c1"], both, "c1", [inv], "", True)
    assert err.startswith(
        "--limit left out localhost, where the record is written: add it, e.g. --limit 'c1:localhost'"
    )
    with pytest.raises(AnsibleFilterError):
        nts_target_errors(["not", "a", "mapping"], [], both)


def test_health_lines():
    src = {
        "name": "nts1",
        "state": "*",
        "mode": "NTS",
        "naks": 0,
        "cookies": 8,
        "reach_octal": "377",
        "authenticated": True,
    }
    lines = nts_health_lines({"c1": {"verified": True, "sources": [src], "healthy_sources": ["nts1"]},
                              "c2": {"msg": "chronyd is not running"}})  # fmt: skip
    assert lines[0].split()[:5] == ["c1", "OK", "1/1", "NTS", "sources"]
    assert lines[0].endswith("healthy  live  nts1[* mode=NTS nak=0 cook=8 reach=377 auth=yes]")
    assert lines[1] == "c2           UNKNOWN  live  chronyd is not running"  # without readings every result is live


def test_report_records_errors_groups_and_serverstats():
    records = nts_report_records(
        ["t1", "c1", "c2"],
        {"t1": {"sources": []}, "c1": {"unreachable": True, "msg": "ssh: timeout"}, "c2": {"failed": True}},
        {"t1": {"stats": {"nts_ke_accepted": 3}}},
        {"t1": ["chrony_nts_servers"], "c1": ["chrony_nts_clients", "web"]},
    )
    assert records[0] == {"host": "t1", "groups": ["chrony_nts_servers"], "error": None, "authdata": {"sources": []},
                          "serverstats": {"nts_ke_accepted": 3},
                          "reading": {"source": "live", "age": 0, "checked_at": None, "why_live": None}}  # fmt: skip
    assert records[1]["error"] == "unreachable: ssh: timeout" and records[1]["groups"] == ["chrony_nts_clients"]
    assert records[2]["error"] == "chrony_authdata failed" and records[2]["authdata"] is None
    assert records[1]["reading"] is None  # nothing was read


PARTS = {
    "trusted_certs": [{"path": "/etc/chrony/nts-certs/certset-1.pem", "content": "CA"},
                      {"path": "/x.pem", "content": None}],
    "extra_files": [{"path": "/k", "content": "KEY", "secret": True, "chronyd_group": True},
                    {"path": "/c", "content": "CERT", "mode": "0644", "chronyd_group": True}],
    "chrony_user": "_chrony", "config_path": "/etc/chrony/chrony.conf", "config": "server x nts\n",
    "chronyd": "/usr/sbin/chronyd", "options_file": "/etc/default/chrony", "options_now": None,
    "options_content": 'DAEMON_OPTS="-x"\n', "clock_control": True, "dropin_path": "/etc/d.conf", "dropin": None,
}  # fmt: skip


def test_apply_files_keep_secrets_out_and_follow_clock_control():
    files = chrony_nts_apply_files(PARTS)
    assert [f["path"] for f in files] == ["/etc/chrony/nts-certs/certset-1.pem", "/c", "/etc/chrony/chrony.conf",
                                          "/etc/d.conf"]  # fmt: skip
    assert "KEY" not in str(files)
    assert files[1]["group"] == "_chrony" and files[2]["validate"] == "/usr/sbin/chronyd -p -f %s"
    assert files[3] == {"path": "/etc/d.conf", "state": "absent", "unit": True}
    without = chrony_nts_apply_files({**PARTS, "clock_control": False, "dropin": "[Service]\n"})
    assert without[-2]["path"] == "/etc/default/chrony" and without[-1]["content"] == "[Service]\n"
    assert chrony_nts_secret_file(PARTS["extra_files"][0], "_chrony") == {
        "path": "/k", "content": "KEY", "mode": "0600", "owner": "root", "group": "_chrony"}  # fmt: skip
    with pytest.raises(AnsibleFilterError, match="missing parts"):
        chrony_nts_apply_files({"config": ""})


def test_probe_targets_are_distinct_and_skip_host_side_ca_files():
    sel = [[{"host": "a", "ntsport": None, "ca": "PEM"}, {"host": "b", "ntsport": 4461, "ca_file": "/ca.pem"}],
           [{"host": "a", "ntsport": None}, {"host": "c", "ntsport": None}]]  # fmt: skip
    assert chrony_nts_probe_targets(sel, {"c": "10.0.0.3"}) == [
        {"host": "a", "ntsport": 4460, "ca_pem": "PEM"},
        {"host": "c", "ntsport": 4460, "address": "10.0.0.3"},
    ]
