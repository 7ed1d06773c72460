"""Every filter and module of nts.chrony has ansible-doc documentation that renders.

Filters defined in Python without docstrings get theirs from a YAML sidecar, plugins/filter/<filter name>.yml
(DOCUMENTATION, EXAMPLES, RETURN), as plugins/filter/nts_select.yml shows; ``ansible-doc -t filter -l nts.chrony``
lists a filter without one as UNDOCUMENTED. The sidecar's options must also name the filter's real parameters.

ansible-doc runs through the checkout's ansible.cfg (collections_path .collections, made by ``make setup``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DOC = str(Path(sys.executable).with_name("ansible-doc"))
ENV = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}


def _ansible_doc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ANSIBLE_DOC, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120, check=False
    )


@lru_cache(maxsize=None)
def _listing(kind: str) -> dict:
    """``ansible-doc -t KIND -l nts.chrony`` as {FQCN: short description}."""
    proc = _ansible_doc("-t", kind, "-l", "nts.chrony")
    assert proc.returncode == 0, proc.stderr
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("nts.chrony."):
            name, _, text = line.partition(" ")
            out[name] = text.strip()
    return out


def _python_filters() -> dict:
    """Every filter the collection's filter plugins define: {name: function}."""
    out = {}
    for path in sorted((REPO / "plugins" / "filter").glob("*.py")):
        module = importlib.import_module("ansible_collections.nts.chrony.plugins.filter.%s" % path.stem)
        out.update(module.FilterModule().filters())
    return out


FILTERS = sorted(_python_filters())
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if p.stem != "__init__")


@lru_cache(maxsize=None)
def _rendered_together(kind: str) -> tuple:
    """One ansible-doc call for every plugin of a kind (fast path); (returncode, stdout, stderr)."""
    names = FILTERS if kind == "filter" else MODULES
    proc = _ansible_doc("-t", kind, *("nts.chrony.%s" % n for n in names))
    return proc.returncode, proc.stdout, proc.stderr


@lru_cache(maxsize=None)
def _json_docs(kind: str) -> dict:
    """``ansible-doc --json`` of every plugin of a kind that has documentation: {FQCN: entry}."""
    names = ["nts.chrony.%s" % n for n in (FILTERS if kind == "filter" else MODULES)]
    proc = _ansible_doc("-t", kind, "--json", *names)
    if proc.returncode == 0:
        return json.loads(proc.stdout)
    out = {}  # one of them has none: ask for each alone
    for name in names:
        proc = _ansible_doc("-t", kind, "--json", name)
        if proc.returncode == 0:
            out.update(json.loads(proc.stdout))
    return out


def _filter_entry(name: str) -> dict:
    docs = _json_docs("filter")
    assert "nts.chrony.%s" % name in docs, (
        "no documentation for nts.chrony.%s (see plugins/filter/nts_select.yml)" % name
    )
    return docs["nts.chrony.%s" % name]


@pytest.mark.parametrize("kind", ["filter", "module"])
def test_listing_has_no_undocumented_plugin(kind):
    listing = _listing(kind)
    undocumented = sorted(name for name, text in listing.items() if text.startswith("UNDOCUMENTED"))
    assert not undocumented, "write plugins/filter/<name>.yml (see nts_select.yml) for: %s" % ", ".join(undocumented)


def test_listing_shows_every_filter_and_module():
    assert sorted(_listing("filter")) == ["nts.chrony.%s" % n for n in FILTERS]
    assert sorted(_listing("module")) == ["nts.chrony.%s" % n for n in MODULES]


@pytest.mark.parametrize(
    ("kind", "name"), [("filter", n) for n in FILTERS] + [("module", n) for n in MODULES], ids=lambda x: str(x)
)
def test_plugin_doc_renders(kind, name):
    fqcn = "nts.chrony.%s" % name
    rc, stdout, stderr = _rendered_together(kind)
    if rc != 0 or "[ERROR]" in stderr:
        # the fast path failed somewhere: render this one alone for a precise message
        proc = _ansible_doc("-t", kind, fqcn)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    assert rc == 0, stderr
    assert "[ERROR]" not in stderr and "[WARNING]" not in stderr, stderr
    header = "> %s %s " % (kind.upper(), fqcn)
    assert header in stdout, "no '%s' in ansible-doc's output" % header
    section = stdout.split(header, 1)[1].split("\n> %s " % kind.upper(), 1)[0]
    assert "EXAMPLES" in section and "RETURN VALUES" in section, "%s: EXAMPLES or RETURN missing" % fqcn


@pytest.mark.parametrize("name", FILTERS)
def test_filter_sidecar_documents_the_real_parameters(name):
    """The documented options are the filter function's parameters (the first one is _input), in the same order
    for the positional ones, and required exactly when the parameter has no default."""
    doc = _filter_entry(name)["doc"]
    params = list(inspect.signature(_python_filters()[name]).parameters.values())
    options = doc.get("options") or {}
    assert "_input" in options, "%s: no _input option" % name
    assert sorted(set(options) - {"_input"}) == sorted(p.name for p in params[1:]), name
    positional = [p.strip() for p in (doc.get("positional") or "").split(",") if p.strip()]
    assert positional == [p.name for p in params[1:]][: len(positional)], "%s: positional order" % name
    for param in params[1:]:
        required = param.default is inspect.Parameter.empty
        assert bool(options[param.name].get("required")) == required, "%s: %s required" % (name, param.name)


@pytest.mark.parametrize("name", FILTERS)
def test_filter_sidecar_has_examples_and_return(name):
    entry = _filter_entry(name)
    assert entry["doc"]["name"] == name
    assert entry["doc"]["short_description"]
    assert (entry.get("examples") or "").strip(), "%s: no EXAMPLES" % name
    assert "_value" in (entry.get("return") or {}), "%s: RETURN has no _value" % name
