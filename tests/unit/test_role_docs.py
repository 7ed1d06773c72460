"""chrony_nts: meta/argument_specs.yml, defaults/main.yml and README.md describe the same variables.

argument_specs is the single source: README's variable section is generated from it by tools/role_docs.py (for every
role that has argument_specs). After editing argument_specs run ``tools/role_docs.py --write``; these tests and
``make lint`` (``tools/role_docs.py --check``) fail until you do.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "chrony_nts"
README = ROLE / "README.md"


def _load_role_docs():
    spec = importlib.util.spec_from_file_location("role_docs", REPO / "tools" / "role_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


role_docs = _load_role_docs()


def _specs() -> dict:
    return role_docs.specs(ROLE)


def _defaults() -> dict:
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def _readme_section() -> str:
    return role_docs.section(README.read_text())


def test_every_option_has_type_default_and_description():
    for name, spec in _specs().items():
        assert name.startswith("chrony_nts_"), name
        assert {"type", "default", "description"} <= set(spec), name
        assert spec["description"] and all(isinstance(p, str) and p.strip() for p in spec["description"]), name
        if spec["type"] == "list":
            assert "elements" in spec, name


def test_defaults_and_argument_specs_list_the_same_variables_with_the_same_values():
    specs, defaults = _specs(), _defaults()
    assert sorted(specs) == sorted(defaults)
    for name, spec in specs.items():
        assert spec["default"] == defaults[name], name
        if "choices" in spec:
            assert defaults[name] in spec["choices"], name


def test_readme_variable_section_is_generated_from_argument_specs():
    assert README.read_text() == role_docs.render_readme(ROLE), "run: tools/role_docs.py --write chrony_nts"
    documented = re.findall(r"^### `(chrony_nts_[a-z0-9_]+)`$", _readme_section(), re.MULTILINE)
    assert sorted(documented) == sorted(_specs())


def test_readme_mentions_no_variable_that_does_not_exist():
    mentioned = set(re.findall(r"\bchrony_nts_[a-z0-9_]*[a-z0-9]\b", README.read_text())) - _filter_and_module_names()
    assert mentioned - set(_specs()) == set()


def _reached_task_files() -> list[Path]:
    """tasks/main.yml and every tasks file it includes or imports, directly or not (files nothing includes do not
    run), plus vars/main.yml, whose lazy values the tasks use."""
    seen: list[Path] = []
    todo = [ROLE / "tasks" / "main.yml"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.append(path)
        for name in re.findall(r"(?:include|import)_tasks: (\S+\.yml)", path.read_text()):
            todo.append(ROLE / "tasks" / name)
    return [*seen, ROLE / "vars" / "main.yml"]


def _filter_and_module_names() -> set:
    import importlib

    names = {p.stem for p in (ROLE.parents[1] / "plugins" / "modules").glob("*.py")}
    names |= {p.name for p in (ROLE.parents[1] / "roles").iterdir()}  # role names are not variables either
    for path in (ROLE.parents[1] / "plugins" / "filter").glob("*.py"):
        mod = importlib.import_module(f"ansible_collections.nts.chrony.plugins.filter.{path.stem}")
        names |= set(mod.FilterModule().filters())
    return names


def test_tasks_and_templates_use_only_documented_public_variables():
    used = set()
    for path in _reached_task_files() + list((ROLE / "templates").glob("*.j2")):
        used |= set(re.findall(r"(?<![_\w])chrony_nts_[a-z0-9_]*[a-z0-9]\b", path.read_text()))
    # Names of the role's filters and of the project's modules are not variables.
    used -= _filter_and_module_names()
    assert used - set(_specs()) == set()
    assert set(_specs()) - used == set(), "documented but never used"


@pytest.mark.parametrize("role", role_docs.roles_with_specs(), ids=lambda p: p.name)
def test_every_role_readme_is_generated_by_tools_role_docs(role):
    """tools/role_docs.py --check passes for every role with argument_specs (chrony_nts_server included)."""
    assert not role_docs.stale(role), "run: tools/role_docs.py --write %s" % role.name
    documented = re.findall(r"^### `([a-z0-9_]+)`$", role_docs.section((role / "README.md").read_text()), re.M)
    assert documented == list(role_docs.specs(role))


def test_role_docs_finds_both_roles():
    assert [p.name for p in role_docs.roles_with_specs()] == ["chrony_nts", "chrony_nts_server"]


def test_role_docs_write_regenerates_a_stale_section_and_adds_missing_markers(tmp_path, capsys):
    """--check fails on a stale section and names the fix; --write repairs it and keeps the BEGIN line; a README
    without markers gets them (and a Variables heading) at its end."""
    roles = tmp_path / "roles"
    for name, readme in (("a", None), ("b", "# b\n\nNo variables section yet.\n")):
        meta = roles / name / "meta"
        meta.mkdir(parents=True)
        (meta / "argument_specs.yml").write_text(
            "argument_specs:\n  main:\n    options:\n      %s_x:\n        type: list\n        elements: str\n"
            "        default: []\n        description:\n          - Hosts, see C(x) and O(y).\n" % name
        )
        (roles / name / "README.md").write_text(
            readme or "# a\n\n<!-- BEGIN VARIABLES (kept as it is) -->\nold text\n<!-- END VARIABLES -->\n\nTail.\n"
        )
    original = (role_docs.ROLES, role_docs.ROOT)
    role_docs.ROLES, role_docs.ROOT = roles, tmp_path
    try:
        assert role_docs.main(["--check"]) == 1
        assert "run: tools/role_docs.py --write a" in capsys.readouterr().err
        assert role_docs.main(["--write"]) == 0
        assert role_docs.main(["--check"]) == 0
        assert role_docs.main(["--check", "nope"]) == 2
    finally:
        role_docs.ROLES, role_docs.ROOT = original
    a = (roles / "a" / "README.md").read_text()
    assert a == (
        "# a\n\n<!-- BEGIN VARIABLES (kept as it is) -->\n\n### `a_x`\n\ntype `list[str]`, default `[]`\n\n"
        "Hosts, see `x` and `y`.\n\n<!-- END VARIABLES -->\n\nTail.\n"
    )
    b = (roles / "b" / "README.md").read_text()
    assert b.startswith("# b\n\nNo variables section yet.\n\n## Variables\n\n%s\n\n### `b_x`" % role_docs.BEGIN)
    assert b.endswith("<!-- END VARIABLES -->\n")
