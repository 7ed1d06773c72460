"""Every module's DOCUMENTATION, EXAMPLES and RETURN are valid YAML (ansible-doc renders nothing otherwise)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

DOC_NAMES = ("DOCUMENTATION", "EXAMPLES", "RETURN")
MODULES = sorted((Path(__file__).resolve().parents[2] / "plugins" / "modules").glob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[p.stem for p in MODULES])
def test_module_docs_parse(path):
    docs = {
        node.targets[0].id: node.value.value
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in DOC_NAMES
    }
    assert set(docs) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}
    doc = yaml.safe_load(docs["DOCUMENTATION"])
    assert doc["module"] == path.stem and doc["short_description"] and doc["options"] is not None
    assert isinstance(yaml.safe_load(docs["EXAMPLES"]), list)
    assert isinstance(yaml.safe_load(docs["RETURN"]), dict)
