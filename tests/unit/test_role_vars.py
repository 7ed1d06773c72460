"""chrony_nts: the per-family variable files define every key with the right names and paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

VARS = Path(__file__).resolve().parents[2] / "roles" / "chrony_nts" / "vars"
TASKS = VARS.parent / "tasks"
TEMPLATES = VARS.parent / "templates"

FAMILY_KEYS = {
    "__chrony_nts_packages",
    "__chrony_nts_service",
    "__chrony_nts_config_path",
    "__chrony_nts_user",
    "__chrony_nts_options_file",
    "__chrony_nts_options_var",
    "__chrony_nts_options_default",
    "__chrony_nts_driftfile",
    "__chrony_nts_ntsdumpdir",
    "__chrony_nts_logdir",
    "__chrony_nts_keyfile",
    "__chrony_nts_cert_dir",
    "__chrony_nts_confdir",
    "__chrony_nts_distro_sources",
    "__chrony_nts_distro_nts",
    "__chrony_nts_dumpdir",
    "__chrony_nts_conflicting_services",
}
EXPECTED = {
    "Debian": {
        "__chrony_nts_packages": ["chrony"],
        "__chrony_nts_service": "chrony",
        "__chrony_nts_config_path": "/etc/chrony/chrony.conf",
        "__chrony_nts_user": "_chrony",
        "__chrony_nts_options_file": "/etc/default/chrony",
        "__chrony_nts_options_var": "DAEMON_OPTS",
        "__chrony_nts_options_default": "-F 1",
        "__chrony_nts_driftfile": "/var/lib/chrony/chrony.drift",
        "__chrony_nts_ntsdumpdir": "/var/lib/chrony",
        "__chrony_nts_keyfile": "/etc/chrony/chrony.keys",
        "__chrony_nts_confdir": "/etc/chrony/conf.d",
        "__chrony_nts_dumpdir": "/run/chrony",
        "__chrony_nts_distro_nts": {},
    },
    "RedHat": {
        "__chrony_nts_packages": ["chrony"],
        "__chrony_nts_service": "chronyd",
        "__chrony_nts_config_path": "/etc/chrony.conf",
        "__chrony_nts_user": "chrony",
        "__chrony_nts_options_file": "/etc/sysconfig/chronyd",
        "__chrony_nts_options_var": "OPTIONS",
        "__chrony_nts_options_default": "-F 2",
        "__chrony_nts_driftfile": "/var/lib/chrony/drift",
        "__chrony_nts_ntsdumpdir": "/var/lib/chrony",
        "__chrony_nts_keyfile": "/etc/chrony.keys",
        "__chrony_nts_confdir": "",
        "__chrony_nts_dumpdir": "/run/chrony",
        "__chrony_nts_distro_nts": {},
    },
}
# Distribution (and distribution_major) files only override the family's sources: the unauthenticated ones, and
# the NTS sources a distribution ships (Ubuntu >= 25.10 in Ubuntu.yml; its older releases in Ubuntu_22/24.yml).
OVERRIDES = {"Ubuntu": "Debian", "Fedora": "RedHat", "CentOS": "RedHat", "Rocky": "RedHat", "AlmaLinux": "RedHat"}
RELEASES = {"Ubuntu_22": "Ubuntu", "Ubuntu_24": "Ubuntu"}


def _load(name: str) -> dict:
    return yaml.safe_load((VARS / f"{name}.yml").read_text())


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_family_file_has_every_key_with_the_packaged_names(family):
    data = _load(family)
    assert set(data) == FAMILY_KEYS
    for key, value in EXPECTED[family].items():
        assert data[key] == value, key
    assert all(
        Path(data[k]).is_absolute()
        for k in (
            "__chrony_nts_config_path",
            "__chrony_nts_options_file",
            "__chrony_nts_driftfile",
            "__chrony_nts_cert_dir",
        )
    )
    assert "-x" not in data["__chrony_nts_options_default"].split()


def test_debian_cert_dir_is_inside_the_apparmor_readable_tree():
    assert _load("Debian")["__chrony_nts_cert_dir"].startswith("/etc/chrony/")


def test_supported_families_have_a_vars_file():
    main = _load("main")
    for family in main["__chrony_nts_supported_families"]:
        assert (VARS / f"{family}.yml").exists()
    assert set(main["__chrony_nts_min_distro_major"]) >= set(OVERRIDES) | {"Debian", "RedHat"}


@pytest.mark.parametrize("distribution", sorted(OVERRIDES) + sorted(RELEASES))
def test_distribution_files_only_override_family_keys(distribution):
    data = _load(distribution)
    assert set(data) <= FAMILY_KEYS
    assert set(data) <= {"__chrony_nts_distro_sources", "__chrony_nts_distro_nts"}
    assert all(re.match(r"^(pool|server|sourcedir) \S+", line) for line in data["__chrony_nts_distro_sources"])
    # the unauthenticated sources: no NTS option among them
    assert not any(" nts" in f" {line} " for line in data["__chrony_nts_distro_sources"])


def test_every_vars_file_is_a_family_distribution_or_release_file():
    names = {p.stem for p in VARS.glob("*.yml")}
    assert names == {"main"} | set(EXPECTED) | set(OVERRIDES) | set(RELEASES)
    # Debian 13 and testing need nothing of their own (Debian 13 checked in the lab); see test_role_render.py.
    assert not any(n.startswith("Debian_") for n in names)


def test_ubuntu_releases_with_and_without_nts_sources():
    newest, jammy, noble = _load("Ubuntu"), _load("Ubuntu_22"), _load("Ubuntu_24")
    assert jammy == noble
    assert jammy["__chrony_nts_distro_nts"] == {}
    assert "pool ntp.ubuntu.com iburst maxsources 4" in jammy["__chrony_nts_distro_sources"]
    # >= 25.10: the pools are NTS sources in sources.d; only DHCP stays an unauthenticated distribution source
    assert newest["__chrony_nts_distro_sources"] == ["sourcedir /run/chrony-dhcp"]
    nts = newest["__chrony_nts_distro_nts"]
    assert set(nts) == {"name", "lines", "trust_file", "trust_lines", "certsets", "prefer"}
    assert nts["prefer"] is True  # the pools carry chrony's prefer option (the input check relies on it)
    assert nts["lines"] == ["sourcedir /etc/chrony/sources.d"]
    assert nts["trust_file"].startswith(_load("Debian")["__chrony_nts_confdir"] + "/")
    assert nts["trust_lines"] == ["ntstrustedcerts 1 /etc/chrony/nts-bootstrap-ubuntu.crt"]
    assert nts["certsets"] == [1] and all(f"ntstrustedcerts {n} " in " ".join(nts["trust_lines"]) for n in [1])


def test_every_private_variable_used_is_defined_somewhere():
    defined = set(FAMILY_KEYS) | set(_load("main"))
    used = set()
    for path in list(TASKS.glob("*.yml")) + list(TEMPLATES.glob("*.j2")):
        used |= set(re.findall(r"\b__chrony_nts_[a-z0-9_]*[a-z0-9]\b", path.read_text()))
    # Facts and registered results the tasks create themselves.
    created = set()
    for path in TASKS.glob("*.yml"):
        text = path.read_text()
        created |= set(re.findall(r"register: (__chrony_nts_\w+)", text))
        created |= set(re.findall(r"^\s{4,}(__chrony_nts_\w+):", text, re.MULTILINE))
        created |= set(re.findall(r"index_var: (__chrony_nts_\w+)", text))
    missing = used - defined - created
    assert missing == set()


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_what_is_read_before_the_platform_is_known_covers_every_family(family):
    # set_vars.yml asks chrony_nts_host about these names before the family's own vars are loaded.
    main, data = _load("main"), _load(family)
    assert set(data["__chrony_nts_packages"]) <= set(main["__chrony_nts_host_packages"])
    assert data["__chrony_nts_options_file"] in main["__chrony_nts_host_read"]
    units = {f"{name}.service" for name in data["__chrony_nts_conflicting_services"]}
    assert units <= set(main["__chrony_nts_host_units"])


def test_the_nts_server_role_keeps_its_measurements_through_chrony_nts():
    # chrony recommends dumpdir + chronyd -r (with ntsdumpdir) for near-seamless NTS server restarts: the server role
    # turns on chrony_nts_keep_measurements, which writes both (dumpdir in chrony.conf, -r in the daemon options).
    server = VARS.parents[1] / "chrony_nts_server"
    tasks = yaml.safe_load((server / "tasks" / "main.yml").read_text())
    deploy = [t for t in tasks if t.get("ansible.builtin.include_role", {}).get("name") == "nts.chrony.chrony_nts"]
    assert len(deploy) == 1 and deploy[0]["vars"]["chrony_nts_keep_measurements"] is True
    lines = (server / "vars" / "main.yml").read_text()
    assert "'dumpdir " not in lines  # one dumpdir line, chrony_nts's (the family's run directory)
    assert {_load(f)["__chrony_nts_dumpdir"] for f in EXPECTED} == {"/run/chrony"}
