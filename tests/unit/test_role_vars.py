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
    },
}
# Distribution files only override, and only these keys.
OVERRIDES = {"Ubuntu": "Debian", "Fedora": "RedHat", "CentOS": "RedHat", "Rocky": "RedHat", "AlmaLinux": "RedHat"}


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


@pytest.mark.parametrize("distribution", sorted(OVERRIDES))
def test_distribution_files_only_override_family_keys(distribution):
    data = _load(distribution)
    assert set(data) <= FAMILY_KEYS
    assert set(data) == {"__chrony_nts_distro_sources"}
    assert all(re.match(r"^(pool|server|sourcedir) \S+", line) for line in data["__chrony_nts_distro_sources"])


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
