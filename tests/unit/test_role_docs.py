"""chrony_nts: meta/argument_specs.yml, defaults/main.yml and README.md describe the same variables.

argument_specs is the single source: README's variable section is generated from it. After editing argument_specs run
``.venv/bin/python tests/unit/test_role_docs.py --write`` to regenerate the section; the tests fail until you do.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "chrony_nts"
README = ROLE / "README.md"
BEGIN = "<!-- BEGIN VARIABLES (generated from meta/argument_specs.yml by tests/unit/test_role_docs.py --write) -->"
END = "<!-- END VARIABLES -->"
MARKUP = re.compile(r"\b[CVOI]\(([^)]*)\)")


def _specs() -> dict:
    return yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]


def _defaults() -> dict:
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def _plain(text: str) -> str:
    return MARKUP.sub(lambda m: "`%s`" % m.group(1), " ".join(text.split()))


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def render_section() -> str:
    out = [BEGIN, ""]
    for name, spec in _specs().items():
        kind = spec["type"] + ("[%s]" % spec["elements"] if "elements" in spec else "")
        facts = ["type `%s`" % kind, "default `%s`" % _yaml_value(spec.get("default"))]
        if "choices" in spec:
            facts.append("choices: %s" % ", ".join("`%s`" % c for c in spec["choices"]))
        out.append("### `%s`" % name)
        out.append("")
        out.append(", ".join(facts))
        out.append("")
        for paragraph in spec["description"]:
            out.append(_plain(paragraph))
            out.append("")
    out.append(END)
    return "\n".join(out)


def _readme_section() -> str:
    text = README.read_text()
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    return text[start:stop]


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
    assert _readme_section() == render_section(), "run: .venv/bin/python tests/unit/test_role_docs.py --write"
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


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: test_role_docs.py --write   (regenerates the variable section of %s)" % README)
    text = README.read_text()
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    README.write_text(text[:start] + render_section() + text[stop:])
    print("updated", README)
