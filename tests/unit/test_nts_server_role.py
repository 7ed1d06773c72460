"""chrony_nts_server: meta/argument_specs.yml, defaults/main.yml and README.md describe the same variables, and every
documented variable is used by the role's tasks or vars.

argument_specs is the single source: README's variable section is generated from it by tools/role_docs.py, the same
generator as for every role. After editing argument_specs run ``tools/role_docs.py --write chrony_nts_server``.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "chrony_nts_server"
README = ROLE / "README.md"


def _load_role_docs():
    spec = importlib.util.spec_from_file_location("role_docs", REPO / "tools" / "role_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


role_docs = _load_role_docs()


def _specs() -> dict:
    return role_docs.specs(ROLE)


def test_defaults_and_argument_specs_agree():
    specs = _specs()
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert sorted(specs) == sorted(defaults)
    for name, spec in specs.items():
        assert name.startswith("chrony_nts_server_"), name
        assert {"type", "default", "description"} <= set(spec), name
        assert spec["default"] == defaults[name], name
        if "choices" in spec:
            assert defaults[name] in spec["choices"], name


def test_readme_variable_section_is_generated_from_argument_specs():
    section = role_docs.section(README.read_text())
    assert section, "%s has no variable section markers" % README
    wanted = role_docs.section(role_docs.render_readme(ROLE))
    assert section == wanted, "run: tools/role_docs.py --write chrony_nts_server"


def test_every_documented_variable_is_used_and_every_used_one_documented():
    code = "".join(p.read_text() for p in [*(ROLE / "tasks").glob("*.yml"), ROLE / "vars" / "main.yml"])
    used = set(re.findall(r"(?<![_\w])chrony_nts_server_[a-z0-9_]*[a-z0-9]\b", code))
    assert used == set(_specs())


def test_server_lines_reach_chrony_nts_through_its_documented_inputs():
    main = (ROLE / "tasks" / "main.yml").read_text()
    for name in ("chrony_nts_serve_ntp", "chrony_nts_allow", "chrony_nts_extra_config"):
        assert re.search(r"^\s+%s: " % name, main, re.M), name
    chrony_nts = yaml.safe_load((ROLE.parent / "chrony_nts" / "meta" / "argument_specs.yml").read_text())
    assert {"chrony_nts_serve_ntp", "chrony_nts_allow", "chrony_nts_extra_config", "chrony_nts_probe_gate"} <= set(
        chrony_nts["argument_specs"]["main"]["options"]
    )


if __name__ == "__main__":
    # Kept for the README marker that still names this script: the same as tools/role_docs.py --write for this role.
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: test_nts_server_role.py --write   (the same as: tools/role_docs.py --write chrony_nts_server)")
    sys.exit(role_docs.main(["--write", ROLE.name]))
