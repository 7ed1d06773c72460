"""chrony_nts_server: meta/argument_specs.yml, defaults/main.yml and README.md describe the same variables, and every
documented variable is used by the role's tasks or vars.

argument_specs is the single source: README's variable section is generated from it. After editing argument_specs run
``.venv/bin/python tests/unit/test_nts_server_role.py --write``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "chrony_nts_server"
README = ROLE / "README.md"
BEGIN = (
    "<!-- BEGIN VARIABLES (generated from meta/argument_specs.yml by tests/unit/test_nts_server_role.py --write) -->"
)
END = "<!-- END VARIABLES -->"
MARKUP = re.compile(r"\b[CVOIM]\(([^)]*)\)")


def _specs() -> dict:
    return yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]


def _plain(text: str) -> str:
    return MARKUP.sub(lambda m: "`%s`" % m.group(1), " ".join(text.split()))


def render_section() -> str:
    out = [BEGIN, ""]
    for name, spec in _specs().items():
        kind = spec["type"] + ("[%s]" % spec["elements"] if "elements" in spec else "")
        default = yaml.safe_dump(spec.get("default"), default_flow_style=True, width=1000)
        facts = ["type `%s`" % kind, "default `%s`" % default.strip().removesuffix("...").strip()]
        if "choices" in spec:
            facts.append("choices: %s" % ", ".join("`%s`" % c for c in spec["choices"]))
        out += ["### `%s`" % name, "", ", ".join(facts), ""]
        for paragraph in spec["description"]:
            out += [_plain(paragraph), ""]
    out.append(END)
    return "\n".join(out)


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
    text = README.read_text()
    section = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert section == render_section(), "run: .venv/bin/python tests/unit/test_nts_server_role.py --write"


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
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: test_nts_server_role.py --write   (regenerates the variable section of %s)" % README)
    text = README.read_text()
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    README.write_text(text[:start] + render_section() + text[stop:])
    print("updated", README)
