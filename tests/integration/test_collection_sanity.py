"""ansible-test sanity on the collection as Galaxy users get it (tools/sanity.sh: build the tarball, install it into a
scratch ansible_collections tree, run the offline sanity tests there).

Marked ``sanity``; ``pytest -m 'not sanity'`` leaves it out. ansible-test fills its own virtual environments from PyPI
the first time (~/.ansible/test/venv); about a minute and a half on two cores after that. On failure the message
lists each failing sanity test with its errors (path:line:column: code: message).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.sanity

REPO = Path(__file__).resolve().parents[2]
RUNNING = re.compile(r'^Running sanity test "([^"]+)"')


def per_test_errors(output: str) -> dict:
    """{sanity test: [its ERROR lines]} from ansible-test's output, in the order the tests ran."""
    out: dict = {}
    current = None
    for line in output.splitlines():
        match = RUNNING.match(line)
        if match:
            current = match.group(1)
            out[current] = []
        elif current and line.startswith("ERROR: ") and not line.startswith("ERROR: Found "):
            out[current].append(line[len("ERROR: ") :])
    return out


def test_per_test_errors_reads_ansible_test_output():
    text = (
        'Running sanity test "compile" on Python 3.11\n'
        "ERROR: Found 1 compile issue(s) on python 3.11 which need to be resolved:\n"
        "ERROR: bin/x:7:6: SyntaxError: nope\n"
        'Running sanity test "pep8"\n'
    )
    assert per_test_errors(text) == {"compile": ["bin/x:7:6: SyntaxError: nope"], "pep8": []}


def test_ansible_test_sanity_passes_on_the_installed_collection():
    proc = subprocess.run(
        ["bash", str(REPO / "tools" / "sanity.sh")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        errors = per_test_errors(output)
        failed = {name: lines for name, lines in errors.items() if lines}
        report = "\n".join("%s:\n  %s" % (name, "\n  ".join(lines)) for name, lines in failed.items())
        pytest.fail("ansible-test sanity failed (exit %d):\n%s\n\n%s" % (proc.returncode, report, output[-3000:]))
    assert "sanity: ansible-test sanity exited 0" in output, output[-3000:]
