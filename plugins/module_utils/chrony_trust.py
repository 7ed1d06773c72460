# -*- coding: utf-8 -*-
"""What each NTS source of a chrony configuration trusts, so a change of trust can be proven with a new key exchange.

Standard library only, no Ansible imports: used by the ``chrony_nts_apply`` module on managed hosts.

chronyd saves each NTS source's cookies and keys in ``ntsdumpdir`` and reloads them at start. After a restart the
source therefore answers with keys from a key exchange made under the *old* settings: a wrong CA, a missing CA file or
a renamed server goes unnoticed until the next key exchange (a NAK, or ``ntsrefresh``, four weeks by default). This
module gives every source a fingerprint of its trust inputs (its name, ports, certificate set, the bytes of the CA
files of that set and ``nosystemcert``); a source whose fingerprint differs from the one last proven gets its saved
cookies removed while chronyd is stopped, and the proof then requires a key exchange made after the start.

Dump files (checked against chrony 4.3): ``<ntsdumpdir>/<NTS-KE server IP>.nts``, first line ``NNC0``, second line
the NTS-KE server name as configured; chronyd ignores a file whose name does not match the source.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ansible_collections.nts.chrony.plugins.module_utils.atomic_write import write_atomic

SOURCE_DIRECTIVES = ("server", "pool", "peer")
# Options of server/pool/peer that take one argument (chrony 4.0-4.9); every other word is a flag.
_OPTIONS_WITH_VALUE = {
    "port",
    "ntsport",
    "certset",
    "minpoll",
    "maxpoll",
    "polltarget",
    "maxdelay",
    "maxdelayratio",
    "maxdelaydevratio",
    "maxdelayquant",
    "mindelay",
    "asymmetry",
    "offset",
    "minsamples",
    "maxsamples",
    "filter",
    "key",
    "version",
    "presend",
    "maxsources",
    "extfield",
}
DUMP_MAGIC = "NNC0"


class TrustError(ValueError):
    """A trust input of the configuration is unusable (for example a CA file that does not exist on the host)."""


def _words(conf_text: str) -> List[List[str]]:
    """Directive lines split into words; chrony's comment lines start with #, %, ; or ! (no trailing comments)."""
    return [line.split() for line in (raw.strip() for raw in conf_text.splitlines()) if line and line[0] not in "#%;!"]


def parse_trust(conf_text: str) -> dict:
    """The NTS sources and the trust directives of a chrony.conf.

    Returns ``{"sources": [{"name", "directive", "args", "port", "ntsport", "certset"}...],
    "trusted": [(set_id, path)...],
    "nosystemcert": bool, "ntsdumpdir": path or None}``. Only sources with the ``nts`` option are listed.
    """
    sources = []
    trusted: List[Tuple[int, str]] = []
    nosystemcert = False
    dumpdir = None
    for words in _words(conf_text):
        directive, args = words[0].lower(), words[1:]
        if directive in SOURCE_DIRECTIVES and args:
            name, opts = args[0], args[1:]
            values: Dict[str, str] = {}
            flags = set()
            i = 0
            while i < len(opts):
                word = opts[i].lower()
                if word in _OPTIONS_WITH_VALUE and i + 1 < len(opts):
                    values[word] = opts[i + 1]
                    i += 2
                else:
                    flags.add(word)
                    i += 1
            if "nts" in flags:
                sources.append(
                    {
                        "name": name,
                        "directive": directive,
                        "args": args,
                        "port": values.get("port", "123"),
                        "ntsport": values.get("ntsport", "4460"),
                        "certset": int(values.get("certset", "0")),
                    }
                )
        elif directive == "ntstrustedcerts" and args:
            if len(args) >= 2 and args[0].isdigit():
                trusted.append((int(args[0]), args[1]))
            else:
                trusted.append((0, args[0]))
        elif directive == "nosystemcert":
            nosystemcert = True
        elif directive == "ntsdumpdir" and args:
            dumpdir = args[0]
    return {"sources": sources, "trusted": trusted, "nosystemcert": nosystemcert, "ntsdumpdir": dumpdir}


def read_trust_path(path: str, pending: Optional[Dict[str, Optional[bytes]]] = None) -> Optional[bytes]:
    """The bytes chronyd would load from an ``ntstrustedcerts`` path: the file, or each ``*.crt`` file of a
    directory (sorted, each prefixed with its name); ``pending`` maps paths about to be written (None: removed) to
    their new content. None when the path does not exist."""
    if pending is not None and path in pending:
        return pending[path]
    if os.path.isdir(path):
        parts = []
        for entry in sorted(os.listdir(path)):
            full = os.path.join(path, entry)
            if entry.endswith(".crt") and os.path.isfile(full):
                with open(full, "rb") as handle:
                    parts.append(entry.encode() + b"\0" + handle.read())
        return b"\0\0".join(parts)
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def trust_problems(parsed: dict, read: Callable[[str], Optional[bytes]]) -> List[str]:
    """One sentence per ``ntstrustedcerts`` path that is missing or holds no PEM certificate, naming the sources
    that rely on it."""
    problems = []
    for set_id, path in parsed["trusted"]:
        users = [s["name"] for s in parsed["sources"] if s["certset"] == set_id]
        who = ("trusted by " + ", ".join(users)) if users else "used by no NTS source"
        data = read(path)
        if data is None:
            problems.append("ntstrustedcerts %d %s does not exist on this host (%s)" % (set_id, path, who))
        elif b"-----BEGIN CERTIFICATE-----" not in data:
            kind = "directory holds no *.crt certificate" if os.path.isdir(path) else "file holds no PEM certificate"
            problems.append("ntstrustedcerts %d %s: the %s (%s)" % (set_id, path, kind, who))
    return problems


def fingerprints(parsed: dict, read: Callable[[str], Optional[bytes]]) -> Dict[str, str]:
    """``{source name: sha256 hex}`` over everything that decides whom the source trusts and where it connects.

    The certificate set counts by content, not by number or file name: the same CAs renumbered (another source
    got a set of its own) are the same trust. Set 0 also trusts the system's CAs unless ``nosystemcert``.
    """
    out = {}
    for source in parsed["sources"]:
        digest = hashlib.sha256()
        for part in (source["directive"], source["name"], source["port"], source["ntsport"]):
            digest.update(part.encode() + b"\0")
        system = source["certset"] == 0 and not parsed["nosystemcert"]
        digest.update(b"system CAs\0" if system else b"no system CAs\0")
        certs = sorted(
            hashlib.sha256(read(path) or b"<missing>").digest()
            for set_id, path in parsed["trusted"]
            if set_id == source["certset"]
        )
        for cert in certs:
            digest.update(cert)
        out[source["name"]] = digest.hexdigest()
    return out


def changed_sources(new: Dict[str, str], proven: Optional[Dict[str, str]]) -> List[str]:
    """Names whose trust fingerprint differs from the one last proven; every name when nothing was proven yet."""
    if proven is None:
        return sorted(new)
    return sorted(name for name, fp in new.items() if proven.get(name) != fp)


def load_proven(path: str) -> Optional[Dict[str, str]]:
    """The fingerprints recorded after the last successful proof, or None (no record, or an unreadable one)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    sources = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
        return None
    return sources


def save_proven(path: str, prints: Dict[str, str], when: float) -> None:
    """Record the fingerprints just proven (root-only file, written atomically)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    data = json.dumps({"proven_at": when, "sources": prints}, sort_keys=True, indent=1).encode("utf-8")
    write_atomic(path, data, 0o600)


def dump_files(dumpdir: Optional[str], names: Sequence[str]) -> List[str]:
    """The cookie files in ``dumpdir`` that chronyd would load for the sources ``names``."""
    if not dumpdir or not names or not os.path.isdir(dumpdir):
        return []
    wanted = set(names)
    found = []
    for entry in sorted(os.listdir(dumpdir)):
        if not entry.endswith(".nts"):
            continue
        path = os.path.join(dumpdir, entry)
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                magic, name = handle.readline().strip(), handle.readline().strip()
        except OSError:
            continue
        if magic == DUMP_MAGIC and name in wanted:
            found.append(path)
    return found
