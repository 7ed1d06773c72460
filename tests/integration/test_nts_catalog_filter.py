"""The nts_catalog filters run for real inside ansible-playbook on localhost (connection: local, no facts).

The plays load the shipped catalog with the file lookup, merge inventory-style extras, select with a policy and
site servers (one with a real PEM CA), and print the result through the json stdout callback; bad input must fail
the play with the filter's message. Plugins are the checkout's collection, by FQCN, through ANSIBLE_COLLECTIONS_PATH (
set the way the project runs it), exactly as a user would run the role from a checkout.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
CATALOG_FILE = REPO / "roles" / "chrony_nts" / "files" / "nts_catalog.yml"
PLAYBOOK_BIN = Path(sys.executable).with_name("ansible-playbook")

PLAY = """
- name: NTS source selection
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Select
      ansible.builtin.set_fact:
        selected: >-
          {{ (lookup('ansible.builtin.file', chrony_nts_catalog_file) | from_yaml)
             | nts.chrony.nts_catalog_merge(chrony_nts_catalog_extra, chrony_nts_catalog_replace)
             | nts.chrony.nts_select(chrony_nts_policy, chrony_nts_site_servers) }}
    - name: Check the site CA
      ansible.builtin.debug:
        msg: >-
          {{ (chrony_nts_site_servers[0].ca | nts.chrony.nts_pem_check('chrony_nts_site_servers[0].ca')) | length }}
      when: chrony_nts_site_servers | length > 0 and chrony_nts_site_servers[0].ca is defined
    - name: Show
      ansible.builtin.debug:
        var: selected
"""


def _ca_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "integration site ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def run_play(tmp_path: Path, variables: dict) -> tuple[int, dict, str]:
    """Run PLAY with ``variables`` as an extra-vars file; return (rc, json callback document, raw output)."""
    base = {
        "chrony_nts_catalog_file": str(CATALOG_FILE),
        "chrony_nts_catalog_extra": [],
        "chrony_nts_catalog_replace": False,
        "chrony_nts_policy": {},
        "chrony_nts_site_servers": [],
    }
    base.update(variables)
    (tmp_path / "play.yml").write_text(PLAY, encoding="utf-8")
    (tmp_path / "vars.yml").write_text(yaml.safe_dump(base), encoding="utf-8")
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".collections"),
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
            "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
            "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"),  # do not pick up a stray ansible.cfg
            "ANSIBLE_NOCOLOR": "1",
        }
    )
    proc = subprocess.run(
        [
            str(PLAYBOOK_BIN),
            "-i",
            "localhost,",
            "-e",
            "@" + str(tmp_path / "vars.yml"),
            "-e",
            "ansible_python_interpreter=" + sys.executable,
            str(tmp_path / "play.yml"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        doc = {}
    return proc.returncode, doc, proc.stdout + proc.stderr


def task_results(doc: dict) -> dict[str, dict]:
    return {t["task"]["name"]: t["hosts"]["localhost"] for t in doc["plays"][0]["tasks"]}


@pytest.fixture(scope="module")
def playbook_available():
    if not PLAYBOOK_BIN.exists():
        pytest.fail("ansible-playbook not found next to %s (install requirements.txt in the venv)" % sys.executable)


def test_good_selection_through_ansible_playbook(tmp_path, playbook_available):
    ca = _ca_pem()
    rc, doc, out = run_play(
        tmp_path,
        {
            "chrony_nts_catalog_extra": [
                {
                    "host": "nts.lab.example.net",
                    "provider": "lab",
                    "operator": "Lab",
                    "countries": ["DE"],
                    "region": "europe",
                    "stratum": 1,
                },
                {
                    "host": "ptbtime2.ptb.de",
                    "provider": "ptb",
                    "operator": "PTB",
                    "countries": ["DE"],
                    "region": "europe",
                    "stratum": 1,
                    "notes": "local override",
                    "override": True,
                },
            ],
            "chrony_nts_policy": {
                "count": 5,
                "prefer_countries": ["DE"],
                "providers_allow": ["ptb", "netnod", "lab", "sidn-labs"],
                "min_operators": 4,
                "min_sources": 4,
            },
            "chrony_nts_site_servers": [
                {"host": "10.20.30.40", "port": 11123, "ca": ca, "operator": "corp", "options": ["minpoll 0"]}
            ],
        },
    )
    assert rc == 0, out
    results = task_results(doc)
    assert str(results["Check the site CA"]["msg"]) == str(len(ca))
    selected = results["Show"]["selected"]
    assert [s["host"] for s in selected] == [
        "10.20.30.40",
        "nts.lab.example.net",
        "ptbtime1.ptb.de",
        "nts.netnod.se",
        "ntppool1.time.nl",
    ]
    site = selected[0]
    assert site["site"] is True and site["port"] == 11123 and site["ntsport"] is None
    assert site["certset"] == 1 and site["ca"] == ca and site["options"] == ["minpoll 0"]
    assert all(s["site"] is False and s["port"] is None for s in selected[1:])


def test_bad_policy_fails_the_play_with_the_message(tmp_path, playbook_available):
    rc, doc, out = run_play(tmp_path, {"chrony_nts_policy": {"providers_allow": ["netnood"], "max_stratum": 16}})
    assert rc == 2, out
    msg = task_results(doc)["Select"]["msg"]
    assert "policy: max_stratum 16 is out of range 1-15" in msg
    # an unknown provider is reported after the policy's own values are fixed
    rc, doc, out = run_play(tmp_path, {"chrony_nts_policy": {"providers_allow": ["netnood"]}})
    assert rc == 2, out
    msg = task_results(doc)["Select"]["msg"]
    assert "policy: providers_allow[0] 'netnood' is not a provider id in the catalog (did you mean 'netnod'?)" in msg


def test_duplicate_extra_and_key_as_ca_fail_the_play(tmp_path, playbook_available):
    rc, doc, out = run_play(
        tmp_path,
        {
            "chrony_nts_catalog_extra": [
                {
                    "host": "nts.netnod.se",
                    "provider": "netnod",
                    "operator": "Netnod",
                    "countries": ["SE"],
                    "region": "europe",
                    "stratum": 1,
                }
            ]
        },
    )
    assert rc == 2, out
    assert (
        "catalog_extra[0] (host 'nts.netnod.se'): host is already in the catalog at servers["
        in task_results(doc)["Select"]["msg"]
    )
    key = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        .decode()
    )
    rc, doc, out = run_play(tmp_path, {"chrony_nts_site_servers": [{"host": "ntp.corp.example", "ca": key}]})
    assert rc == 2, out
    msg = task_results(doc)["Select"]["msg"]
    assert "site_servers[0] (host 'ntp.corp.example'): ca: contains a PRIVATE KEY block" in msg
    assert key.splitlines()[1] not in out, "key material must not be echoed"


@pytest.mark.parametrize("name", ["nts_catalog_validate", "nts_catalog_merge", "nts_select", "nts_pem_check"])
def test_filter_documentation_renders(name, tmp_path, playbook_available):
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".collections"),
            "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
            "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"),
            "ANSIBLE_NOCOLOR": "1",
        }
    )
    proc = subprocess.run(
        [str(PLAYBOOK_BIN.with_name("ansible-doc")), "-t", "filter", "--json", f"nts.chrony.{name}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)[f"nts.chrony.{name}"]
    assert doc["doc"]["name"] in (name, f"nts.chrony.{name}")
    assert doc["doc"]["options"]["_input"]["required"] is True
    assert doc["examples"].strip() and doc["return"]["_value"]["description"]
