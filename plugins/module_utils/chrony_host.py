# -*- coding: utf-8 -*-
"""Read a host's platform and service state for the chrony_nts role, and explain a failed NTS source from the journal.

Standard library only, no Ansible imports: used on managed hosts by the ``chrony_nts_host`` and ``chrony_nts_apply``
modules, unit-tested on its own. Every function takes text and returns plain data, so the tests feed it real
outputs (os-release files, ``systemctl show``, ``dpkg-query``/``rpm``, chronyd's journal) without a host.
"""

from __future__ import annotations

import re
import shlex
from typing import Dict, List, Optional, Sequence

# os-release ID -> (Ansible's `distribution` fact, `os_family` fact), for the distributions the role supports.
# Anything else keeps its own name and a family guessed from ID_LIKE, so the role's preflight names it in its error.
DISTRIBUTIONS = {
    "debian": ("Debian", "Debian"),
    "ubuntu": ("Ubuntu", "Debian"),
    "rhel": ("RedHat", "RedHat"),
    "centos": ("CentOS", "RedHat"),
    "rocky": ("Rocky", "RedHat"),
    "almalinux": ("AlmaLinux", "RedHat"),
    "ol": ("OracleLinux", "RedHat"),
    "fedora": ("Fedora", "RedHat"),
}
FAMILY_LIKE = {"debian": "Debian", "ubuntu": "Debian", "rhel": "RedHat", "fedora": "RedHat", "centos": "RedHat"}


def parse_os_release(text: str) -> Dict[str, str]:
    """KEY=value pairs of an os-release file (shell quoting removed, comments and blank lines skipped)."""
    values: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, raw = line.split("=", 1)
        try:
            words = shlex.split(raw)
        except ValueError:
            words = [raw.strip("\"'")]
        values[key.strip()] = words[0] if words else ""
    return values


def os_facts(os_release: str, debian_version: Optional[str] = None) -> Dict[str, str]:
    """The four facts the role reads, named and valued like Ansible's own ``setup`` module does for these systems.

    ``debian_version`` is the content of /etc/debian_version: Debian's point release (12.7) lives only there.
    """
    info = parse_os_release(os_release)
    ident = info.get("ID", "").lower()
    distribution, family = DISTRIBUTIONS.get(ident, (info.get("NAME", ident or "unknown").split()[0], ""))
    if not family:
        like = [w.lower() for w in info.get("ID_LIKE", "").split()]
        family = next((FAMILY_LIKE[w] for w in like if w in FAMILY_LIKE), distribution)
    version = info.get("VERSION_ID", "")
    if ident == "debian" and debian_version and re.match(r"^\d+(\.\d+)*$", debian_version.strip()):
        version = debian_version.strip()
    elif ident == "debian" and not version and debian_version and re.match(r"^([a-z]+/)?sid$", debian_version.strip()):
        version = debian_version.strip()  # testing or unstable ("forky/sid"), as Ansible's setup reports them
    return {
        "distribution": distribution,
        "distribution_version": version,
        "distribution_major_version": version.split(".")[0] if version else "",
        "os_family": family,
    }


FIPS_ENABLED = "/proc/sys/crypto/fips_enabled"


def fips_enabled(text: Optional[str]) -> Optional[bool]:
    """Whether the kernel runs in FIPS mode, from the content of /proc/sys/crypto/fips_enabled (``1`` or ``0``);
    None when the file does not exist (a kernel without the crypto API's FIPS switch) or says something else.
    Ansible's ``fips`` fact reads the same file."""
    value = (text or "").strip()
    return {"1": True, "0": False}.get(value)


def parse_systemctl_show(stdout: str) -> List[Dict[str, str]]:
    """One dict per unit from ``systemctl show --property=... UNIT...`` (blocks separated by blank lines)."""
    units = []
    for block in stdout.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if props:
            units.append(props)
    return units


def units_to_stop(units: Sequence[Dict[str, str]]) -> List[str]:
    """Names of the units that exist and are running or enabled (the conflicting daemons to stop and disable).

    A unit that is not installed shows ``LoadState=not-found``, a masked one ``LoadState=masked``: both are left alone.
    """
    names = []
    for props in units:
        if props.get("LoadState") != "loaded":
            continue
        running = props.get("ActiveState") in ("active", "activating", "reloading")
        enabled = props.get("UnitFileState") in ("enabled", "enabled-runtime")
        if running or enabled:
            names.append(props["Id"])
    return names


def missing_dpkg_packages(names: Sequence[str], stdout: str) -> List[str]:
    """Packages of ``names`` that ``dpkg-query -W -f '${Package} ${db:Status-Abbrev}\\n' NAMES`` shows not installed.

    Installed packages print ``ii``; removed-but-configured ``rc``, unknown ones nothing (dpkg-query exits 1).
    """
    installed = set()
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].startswith("ii"):
            installed.add(parts[0].split(":")[0])
    return [n for n in names if n not in installed]


def missing_rpm_packages(names: Sequence[str], stdout: str) -> List[str]:
    """Packages of ``names`` that ``rpm -q --qf '%{NAME}\\n' NAMES`` reports as not installed."""
    installed = {line.strip() for line in stdout.splitlines() if line.strip() and " " not in line.strip()}
    return [n for n in names if n not in installed]


# What chronyd logs when an NTS source fails, e.g. "TLS handshake with 10.0.0.5:4460 (nts1.lab.test) failed : The
# certificate issuer is unknown." Lines without one of these words (e.g. "Selected source") explain nothing.
_CAUSE_WORDS = re.compile(r"(?i)fail|could not|error|refused|timed? ?out|unreach|invalid|expired|trusted|NAK")
_START = re.compile(r"^chronyd version .* starting")


def journal_causes(lines: Sequence[str], sources: Sequence[str]) -> Dict[str, str]:
    """The latest log line naming each source in parentheses and a failure word, since chronyd's last start."""
    start = 0
    for index, line in enumerate(lines):
        if _START.search(line):
            start = index
    recent = lines[start:]
    causes = {}
    for name in sources:
        tag = "(%s)" % name
        hits = [line for line in recent if tag in line and _CAUSE_WORDS.search(line)]
        if hits:
            causes[name] = hits[-1]
    return causes


# What a chronyd log line about an NTS source means, from the host's point of view (GnuTLS and chronyd wording, 4.x).
_KINDS = (
    (re.compile(r"(?i)issuer is unknown|NOT trusted|signer not found"), "certificate not trusted: wrong or missing CA"),
    (re.compile(r"(?i)expired certificate|certificate has expired"), "certificate expired"),
    (re.compile(r"(?i)not yet valid|not yet activated"), "certificate not yet valid (is the host's clock behind?)"),
    (re.compile(r"(?i)name in the certificate does not match|does not match the expected"),
     "certificate name does not match the server name"),
    (re.compile(r"(?i)connection refused"), "NTS-KE refused: nothing listens on the NTS-KE port"),
    (re.compile(r"(?i)timed? ?out"), "NTS-KE timed out (TCP 4460 filtered, or the server is down)"),
    (re.compile(r"(?i)could not resolve|name or service not known|temporary failure in name"),
     "the name does not resolve"),
    (re.compile(r"(?i)\bNAK\b"), "NTS NAK: the server rejected the cookies"),
)  # fmt: skip


def cause_kind(line: str) -> Optional[str]:
    """A short label for a chronyd log line about a failing NTS source (certificate, refused, timeout, DNS), or None."""
    for pattern, label in _KINDS:
        if pattern.search(line):
            return label
    return None


def explain_causes(causes: Dict[str, str]) -> Dict[str, str]:
    """``{source: "label: log line"}`` (the line alone when it matches no known kind)."""
    out = {}
    for name, line in causes.items():
        kind = cause_kind(line)
        out[name] = "%s: %s" % (kind, line.strip()) if kind else line.strip()
    return out
