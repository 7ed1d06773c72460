"""chrony_trust (behind chrony_nts_apply): which NTS sources' trust inputs changed, and their saved cookies."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

from ansible_collections.nts.chrony.plugins.module_utils import chrony_trust as ct  # noqa: E402

CA1 = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CA2 = b"-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"

CONF = """# written by the role
server nts1.lab.test iburst nts certset 1 minpoll 0 maxpoll 4
server nts2.lab.test port 1123 iburst nts ntsport 4461
pool pool.ntp.org iburst
; server commented.example nts
ntstrustedcerts 1 /etc/chrony/nts-certs/site-1.pem
ntstrustedcerts /etc/chrony/extra.pem
nosystemcert
ntsdumpdir /var/lib/chrony
"""


def test_parse_lists_nts_sources_and_trust_directives():
    parsed = ct.parse_trust(CONF)
    assert parsed["sources"] == [
        {
            "name": "nts1.lab.test",
            "directive": "server",
            "args": ["nts1.lab.test", "iburst", "nts", "certset", "1", "minpoll", "0", "maxpoll", "4"],
            "port": "123",
            "ntsport": "4460",
            "certset": 1,
        },
        {
            "name": "nts2.lab.test",
            "directive": "server",
            "args": ["nts2.lab.test", "port", "1123", "iburst", "nts", "ntsport", "4461"],
            "port": "1123",
            "ntsport": "4461",
            "certset": 0,
        },
    ]
    assert parsed["trusted"] == [(1, "/etc/chrony/nts-certs/site-1.pem"), (0, "/etc/chrony/extra.pem")]
    assert parsed["nosystemcert"] is True and parsed["ntsdumpdir"] == "/var/lib/chrony"


def _reader(files):
    return lambda path: files.get(path)


def test_fingerprint_changes_only_for_the_source_whose_ca_changed():
    parsed = ct.parse_trust(CONF)
    files = {"/etc/chrony/nts-certs/site-1.pem": CA1, "/etc/chrony/extra.pem": CA1}
    before = ct.fingerprints(parsed, _reader(files))
    files["/etc/chrony/nts-certs/site-1.pem"] = CA2  # a CA rotation gone wrong for set 1
    after = ct.fingerprints(parsed, _reader(files))
    assert ct.changed_sources(after, before) == ["nts1.lab.test"]
    assert ct.changed_sources(after, after) == []
    assert ct.changed_sources(after, None) == ["nts1.lab.test", "nts2.lab.test"]  # no record: all exercised


def test_fingerprint_follows_name_ports_certset_and_nosystemcert():
    files = {"/etc/chrony/nts-certs/site-1.pem": CA1, "/etc/chrony/extra.pem": CA1, "/etc/chrony/other.pem": CA2}
    base = ct.fingerprints(ct.parse_trust(CONF), _reader(files))
    variants = {
        "ntsport": CONF.replace("ntsport 4461", "ntsport 4462"),
        "port": CONF.replace("port 1123", "port 1124"),
        # nts1 moved to a set with other bytes
        "certset": CONF.replace("nts certset 1", "nts certset 2") + "ntstrustedcerts 2 /etc/chrony/other.pem\n",
        "nosystemcert": CONF.replace("nosystemcert\n", ""),
    }
    changed = {
        k: ct.changed_sources(ct.fingerprints(ct.parse_trust(v), _reader(files)), base) for k, v in variants.items()
    }
    assert changed == {
        "ntsport": ["nts2.lab.test"],
        "port": ["nts2.lab.test"],
        "certset": ["nts1.lab.test"],
        "nosystemcert": ["nts2.lab.test"],  # set 0 sources trust the system CAs again
    }
    # the same CA bytes under another set number and file name: the same trust
    renumbered = CONF.replace("certset 1", "certset 2").replace(
        "ntstrustedcerts 1 /etc/chrony/nts-certs/site-1.pem", "ntstrustedcerts 2 /etc/chrony/nts-certs/site-2.pem"
    )
    files2 = {**files, "/etc/chrony/nts-certs/site-2.pem": CA1}
    assert ct.changed_sources(ct.fingerprints(ct.parse_trust(renumbered), _reader(files2)), base) == []
    renamed = ct.fingerprints(ct.parse_trust(CONF.replace("nts1.lab.test", "nts9.lab.test")), _reader(files))
    assert ct.changed_sources(renamed, base) == ["nts9.lab.test"]


def test_missing_or_junk_trust_files_name_the_path_and_the_sources():
    parsed = ct.parse_trust(CONF)
    problems = ct.trust_problems(parsed, _reader({"/etc/chrony/extra.pem": b"not a certificate"}))
    assert problems == [
        "ntstrustedcerts 1 /etc/chrony/nts-certs/site-1.pem does not exist on this host (trusted by nts1.lab.test)",
        "ntstrustedcerts 0 /etc/chrony/extra.pem: the file holds no PEM certificate (trusted by nts2.lab.test)",
    ]
    assert (
        ct.trust_problems(parsed, _reader({"/etc/chrony/nts-certs/site-1.pem": CA1, "/etc/chrony/extra.pem": CA2}))
        == []
    )


def test_read_trust_path_prefers_pending_content_and_reads_directories(tmp_path):
    (tmp_path / "b.crt").write_bytes(CA2)
    (tmp_path / "a.crt").write_bytes(CA1)
    (tmp_path / "notes.txt").write_bytes(b"ignored")
    data = ct.read_trust_path(str(tmp_path))
    assert data.index(b"a.crt") < data.index(b"b.crt") and b"ignored" not in data
    assert ct.read_trust_path(str(tmp_path / "absent.pem")) is None
    assert ct.read_trust_path("/x.pem", {"/x.pem": CA1}) == CA1
    assert ct.read_trust_path(str(tmp_path / "a.crt"), {str(tmp_path / "a.crt"): None}) is None


def test_dump_files_match_the_configured_name_inside_the_file(tmp_path):
    # Layout of a cookie file written by chronyd 4.3 (ntsdumpdir/<NTS-KE server IP>.nts); keys shortened.
    real = "NNC0\n127.26.152.62\n1796127608.4\n127.26.152.62 42775\n1 15 A26B F105\nF88A\n"
    (tmp_path / "127.26.152.62.nts").write_text(real)
    (tmp_path / "10.89.0.5.nts").write_text("NNC0\nnts1.lab.test\n1796127608.4\n10.89.0.5 123\n1 15 AA BB\nCC\n")
    (tmp_path / "10.89.0.6.nts").write_text("NNC0\nnts2.lab.test\n1796127608.4\n10.89.0.6 123\n1 15 AA BB\nCC\n")
    (tmp_path / "ntskeys").write_text("server keys, not a client dump\n")
    found = ct.dump_files(str(tmp_path), ["nts1.lab.test", "127.26.152.62"])
    assert [os.path.basename(p) for p in found] == ["10.89.0.5.nts", "127.26.152.62.nts"]
    assert ct.dump_files(str(tmp_path), []) == [] and ct.dump_files(None, ["nts1.lab.test"]) == []


def test_proven_record_round_trip_and_tight_mode(tmp_path):
    path = tmp_path / "state" / "trust.json"
    assert ct.load_proven(str(path)) is None
    ct.save_proven(str(path), {"nts1.lab.test": "ab" * 32}, 1796127608.0)
    assert ct.load_proven(str(path)) == {"nts1.lab.test": "ab" * 32}
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text(json.dumps({"sources": {"x": 1}}))
    assert ct.load_proven(str(path)) is None  # unreadable record: treated as none, so every source is exercised
