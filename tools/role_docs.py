#!/usr/bin/env python3
"""Generate the variable section of each role's README.md from its meta/argument_specs.yml.

meta/argument_specs.yml is the single source of a role's inputs; README.md's variable section, between the markers
``<!-- BEGIN VARIABLES ... -->`` and ``<!-- END VARIABLES -->``, is rendered from it: one ``### `name` `` heading per
option with its type, default and choices, then its description paragraphs (Ansible markup such as C(x) becomes
Markdown code).

    tools/role_docs.py --check [ROLE ...]   exit 1 and say which README is stale (CI: make lint)
    tools/role_docs.py --write [ROLE ...]   rewrite the stale sections (markers are added at the end when missing)

Without ROLE names every role under roles/ that has meta/argument_specs.yml is handled. An existing BEGIN marker
line is kept as it is; new markers name this script.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLES = ROOT / "roles"
BEGIN_PREFIX = "<!-- BEGIN VARIABLES"
BEGIN = "<!-- BEGIN VARIABLES (generated from meta/argument_specs.yml by tools/role_docs.py --write) -->"
END = "<!-- END VARIABLES -->"
# C(), V(), O(), I(), M() become Markdown code (RV() and other markup are left alone).
MARKUP = re.compile(r"\b[CVOIM]\(([^)]*)\)")


class RoleDocsError(Exception):
    """A README cannot be checked or written (no README, broken markers)."""


def roles_with_specs(roles_dir: Path | None = None) -> list[Path]:
    """Every role directory that has meta/argument_specs.yml, sorted by name."""
    return sorted(p.parent.parent for p in (roles_dir or ROLES).glob("*/meta/argument_specs.yml"))


def specs(role: Path, entry_point: str = "main") -> dict:
    """The options of the role's entry point, in file order."""
    data = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    return data["argument_specs"][entry_point].get("options") or {}


def plain(text: str) -> str:
    """One paragraph of an argument_specs description as one Markdown line."""
    return MARKUP.sub(lambda m: "`%s`" % m.group(1), " ".join(text.split()))


def yaml_value(value) -> str:
    """A default as YAML flow text: ``[]``, ``''``, ``{a: 1}``, ``null``."""
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def render_body(role: Path) -> str:
    """The generated lines between the markers (starting and ending with an empty line)."""
    out = [""]
    for name, spec in specs(role).items():
        kind = spec["type"] + ("[%s]" % spec["elements"] if "elements" in spec else "")
        facts = ["type `%s`" % kind, "default `%s`" % yaml_value(spec.get("default"))]
        if "choices" in spec:
            facts.append("choices: %s" % ", ".join("`%s`" % c for c in spec["choices"]))
        out += ["### `%s`" % name, "", ", ".join(facts), ""]
        description = spec.get("description") or []
        for paragraph in [description] if isinstance(description, str) else description:
            out += [plain(paragraph), ""]
    return "\n".join(out) + "\n"


def _span(text: str, readme: Path) -> tuple[int, int, int] | None:
    """(start of the BEGIN line, end of the BEGIN line, start of END) or None when there are no markers."""
    start = text.find(BEGIN_PREFIX)
    if start < 0:
        if END in text:
            raise RoleDocsError("%s has %s but no %s ... line" % (readme, END, BEGIN_PREFIX))
        return None
    if text.count(BEGIN_PREFIX) > 1:
        raise RoleDocsError("%s has more than one %s ... line" % (readme, BEGIN_PREFIX))
    begin_end = text.find("\n", start)
    stop = text.find(END, start)
    if begin_end < 0 or stop < 0 or stop <= begin_end:
        raise RoleDocsError("%s: no %s after its %s ... line" % (readme, END, BEGIN_PREFIX))
    return start, begin_end, stop


def render_readme(role: Path) -> str:
    """The role's README.md with the variable section as argument_specs says (markers appended when missing)."""
    readme = role / "README.md"
    if not readme.exists():
        raise RoleDocsError("%s does not exist" % readme)
    text = readme.read_text()
    span = _span(text, readme)
    if span is None:
        head = text.rstrip("\n") + "\n\n## Variables\n\n"
        return head + BEGIN + "\n" + render_body(role) + END + "\n"
    _start, begin_end, stop = span
    return text[:begin_end] + "\n" + render_body(role) + text[stop:]


def section(text: str) -> str:
    """The variable section of README text, markers included (for messages and tests)."""
    span = _span(text, Path("README.md"))
    if span is None:
        return ""
    return text[span[0] : span[2] + len(END)]


def stale(role: Path) -> bool:
    """Whether the role's README differs from what argument_specs says."""
    return (role / "README.md").read_text() != render_readme(role)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _select(names: list[str]) -> list[Path]:
    available = {p.name: p for p in roles_with_specs()}
    unknown = [n for n in names if n not in available]
    if unknown:
        raise RoleDocsError(
            "no role with meta/argument_specs.yml named %s (known: %s)" % (", ".join(unknown), ", ".join(available))
        )
    return [available[n] for n in names] if names else list(available.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="fail when a README's variable section is stale")
    mode.add_argument("--write", action="store_true", help="regenerate the stale variable sections")
    parser.add_argument("roles", nargs="*", metavar="ROLE", help="role names (default: every role with argument_specs)")
    args = parser.parse_args(argv)
    try:
        roles = _select(args.roles)
        failed = False
        for role in roles:
            readme = role / "README.md"
            wanted = render_readme(role)
            if readme.read_text() == wanted:
                print("%s: up to date" % _shown(readme))
            elif args.write:
                readme.write_text(wanted)
                print("%s: variable section regenerated" % _shown(readme))
            else:
                failed = True
                print(
                    "%s: variable section differs from meta/argument_specs.yml; run: tools/role_docs.py --write %s"
                    % (_shown(readme), role.name),
                    file=sys.stderr,
                )
    except (RoleDocsError, OSError, KeyError, yaml.YAMLError) as exc:
        print("role_docs: %s" % exc, file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
