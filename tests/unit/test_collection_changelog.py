"""The changelog: fragments pass ``antsibull-changelog lint``, every fragment is folded into changelogs/changelog.yaml
for the version galaxy.yml names, and CHANGELOG.rst is what antsibull-changelog generates from it.

After adding or editing a fragment under changelogs/fragments/, run ``make changelog``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "PATH": "%s:%s" % (BIN, os.environ["PATH"])}


def _changelog(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "antsibull-changelog"), *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _releases() -> dict:
    return yaml.safe_load((REPO / "changelogs" / "changelog.yaml").read_text())["releases"]


def test_fragments_and_changelog_yaml_pass_antsibull_changelog_lint():
    lint = _changelog("lint")
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
    lint = _changelog("lint-changelog-yaml", "changelogs/changelog.yaml")
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr


def test_galaxy_version_is_a_release_with_a_summary():
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    release = _releases().get(version)
    assert release, "changelogs/changelog.yaml has no release %s: run make changelog" % version
    assert release["changes"].get("release_summary")


def test_every_fragment_is_in_a_release_with_its_current_text():
    released = {}
    for release in _releases().values():
        for name in release.get("fragments") or []:
            released[name] = release
    fragments = sorted(p.name for p in (REPO / "changelogs" / "fragments").glob("*.y*ml"))
    assert fragments, "no changelog fragments"
    assert [f for f in fragments if f not in released] == [], "run make changelog"
    for name in fragments:
        changes = released[name]["changes"]
        for section, entries in yaml.safe_load((REPO / "changelogs" / "fragments" / name).read_text()).items():
            if section == "trivial":
                continue
            entries = entries if isinstance(entries, list) else [entries]
            recorded = changes.get(section)
            recorded = recorded if isinstance(recorded, list) else [recorded]
            for entry in entries:
                assert entry in recorded, "%s: %s entry changed since the release: run make changelog" % (name, section)


def test_changelog_rst_is_generated_from_changelog_yaml(tmp_path):
    out = tmp_path / "CHANGELOG.rst"
    proc = _changelog("generate", "--output", str(out), "--output-format", "rst")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (REPO / "CHANGELOG.rst").read_text() == out.read_text(), "run make changelog"
