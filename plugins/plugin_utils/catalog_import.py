# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Import the community list of public NTS servers into the catalog, as a reviewed diff.

The community list (jauderho/nts-servers ``nts-sources.yml``, and the project's snapshot of it in
``shared/reference/public-nts-servers.yaml``) is a YAML mapping with a ``servers:`` list (a bare list is accepted
too). Each entry names one server:

``host`` (or ``hostname``, ``server``)
    the NTS-KE host name; a Markdown link ``[name](https://...)`` gives its text, ``name:PORT`` an NTS-KE port.
``operator`` (or ``owner``)
    who runs it; Markdown links are dropped when plain text is left ("UNIZG FER REMLAB '[www.ntp.hr](...)'"),
    otherwise the link's text is the name ("[ntp.br](https://ntp.br)").
``location`` (or ``country``, ``countries``)
    a country name or ISO code ("Germany", "UK", "US"), several separated by commas, "/" or "and";
    "All"/"Global" (anycast or everywhere: no country, region ``global``); "Distro" (no country, ``usage:
    distro-only``). A parenthesised qualifier ("Germany (Frankfurt)") is ignored with a warning.
``stratum`` (required), ``vm`` (or ``virtualised``/``virtualized``), ``notes`` (or ``note``, ``comment``),
``port``/``ntp_port`` (NTP), ``ntsport``/``nts_port``/``ke_port`` (NTS-KE), and the catalog's own ``provider``,
``region``, ``anycast`` and ``usage`` when a list states them.

Conversion (:func:`convert_source`) turns each entry into a catalog entry and validates it with
:func:`catalog_schema.validate_catalog`; every problem names the entry (index and host) and the field. The list says
less than the catalog, so the import keeps what the catalog curates unless the list states a different fact:

* provider and operator: a host already in the catalog whose listed operator is the catalog's (equal, or the
  catalog's longer form such as "PTB" for "PTB (Physikalisch-Technische Bundesanstalt)") keeps both. A new host
  whose operator the catalog already knows gets that provider (the report says from which host); otherwise a new
  provider slug is made from the operator's name (the report says so, for review).
* region: kept when the countries are the catalog's, otherwise derived from the first country.
* notes: kept when the listed notes are empty or part of the catalog's (the catalog's may say more).
* anycast, usage, virtualised, port, ntsport: taken from the list when it states them (anycast from the word
  "anycast" in the notes, distro-only from "Distro"), otherwise the catalog's value, otherwise the default.

:func:`diff_catalog` compares the converted list with the catalog: servers added, changed (field by field), not
in the list (kept unless ``prune``, then removed) and unchanged; :func:`render_catalog` writes the merged catalog in
the shipped file's own layout (its header comments kept), so that ``diff -u`` between the two shows only the
changes. Nothing here writes a file: the command line (``bin/nts-catalog import``) does, and never over the
catalog itself without ``--write``.

Stdlib plus PyYAML (an ansible-core dependency) for reading; no Ansible imports.
"""

from __future__ import annotations

import datetime
import difflib
import re
from typing import Any

from ansible_collections.nts.chrony.plugins.plugin_utils import catalog_geo
from ansible_collections.nts.chrony.plugins.plugin_utils.catalog_schema import (
    CATALOG_FORMAT_VERSION,
    DEFAULT_NTSPORT,
    DEFAULT_PORT,
    ENTRY_KEYS,
    NtsCatalogError,
    validate_catalog,
)

# source field aliases: catalog meaning -> the names a list may use (the first is the canonical one)
FIELD_ALIASES = {
    "host": ("host", "hostname", "server"),
    "operator": ("operator", "owner"),
    "location": ("location", "country", "countries"),
    "stratum": ("stratum",),
    "vm": ("vm", "virtualised", "virtualized"),
    "notes": ("notes", "note", "comment", "comments"),
    "port": ("port", "ntp_port"),
    "ntsport": ("ntsport", "nts_port", "ke_port"),
    "provider": ("provider",),
    "region": ("region",),
    "anycast": ("anycast",),
    "usage": ("usage",),
}
_ALIAS_OF = {name: canon for canon, names in FIELD_ALIASES.items() for name in names}

_MD_LINK_RE = re.compile(r"'?\[([^\]]*)\]\(([^)\s]*)\)'?")
_PAREN_RE = re.compile(r"\s*\(([^()]*)\)")
_SLUG_CLEAN_RE = re.compile(r"[^a-z0-9]+")
_BOOL_WORDS = {"true": True, "yes": True, "y": True, "1": True, "false": False, "no": False, "n": False, "0": False}
_ANYCAST_RE = re.compile(r"\banycast\b", re.IGNORECASE)
_DISTRO_RE = re.compile(r"\bdistro(?:s|-only| use only| only)?\b", re.IGNORECASE)


class SourceError(ValueError):
    """The list file cannot be read at all (not YAML, no servers list)."""


# --------------------------------------------------------------------------------------------------------------
# reading


def load_yaml(path: str) -> Any:
    """Parse one YAML file; SourceError names the file for unreadable or malformed input."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except OSError as exc:
        raise SourceError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
    except UnicodeDecodeError as exc:
        raise SourceError("%s is not UTF-8 text: %s" % (path, exc)) from None
    except yaml.YAMLError as exc:
        raise SourceError("%s is not valid YAML: %s" % (path, exc)) from None


def source_entries(data: Any, name: str) -> list:
    """The list of server entries of a community list: ``{servers: [...]}`` or a bare list."""
    if isinstance(data, dict) and "servers" in data:
        data = data["servers"]
    if not isinstance(data, list):
        raise SourceError(
            "%s: expected a mapping with a 'servers' list (or a list of servers), got %s" % (name, type(data).__name__)
        )
    if not data:
        raise SourceError("%s: the servers list is empty" % name)
    return data


# --------------------------------------------------------------------------------------------------------------
# small conversions


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def strip_markdown(text: str) -> tuple[str, list[str]]:
    """(plain text, link texts): plain text with Markdown links removed, or the first link's text if none is left."""
    links = [m.group(1).strip() for m in _MD_LINK_RE.finditer(text)]
    plain = " ".join(_MD_LINK_RE.sub(" ", text).split()).strip(" ,;-'\"")
    if plain:
        return plain, links
    return (links[0] if links else ""), links


def slugify(name: str) -> str:
    """A provider slug from an operator's name: 'Jiří Činčura' -> 'jiri-cincura' (letters, digits, hyphens)."""
    slug = _SLUG_CLEAN_RE.sub("-", catalog_geo.fold(name)).strip("-")
    return slug[:63].rstrip("-")


def _norm_operator(text: str) -> str:
    """Operator names compared without case, accents or punctuation, keeping a trailing '(...)' part apart."""
    text = str(text)
    m = re.match(r"^(.*?)\s*\(([^()]*)\)\s*$", text)
    if m:
        return "%s (%s)" % (catalog_geo.fold(m.group(1)), catalog_geo.fold(m.group(2)))
    return catalog_geo.fold(text)


def same_operator(listed: str, catalog: str) -> bool:
    """True when the catalog's operator is the listed one or its longer form.

    'PTB' ~ 'PTB (Physikalisch-Technische Bundesanstalt)', 'TimeNL' ~ 'SIDN Labs (TimeNL)', 'ntp.br' ~ 'NTP.br
    (NIC.br)'; 'Netnod' is not 'Netnod Internet Exchange' (no guessing beyond a parenthesised part).
    """
    src, cat = _norm_operator(listed), _norm_operator(catalog)
    if not src:
        return False
    if src == cat:
        return True
    m = re.match(r"^(.*) \((.*)\)$", cat)
    return bool(m) and src in (m.group(1), m.group(2))


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.strip().lower()]
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.match(r"^\s*[0-9]+\s*$", value):
        return int(value)
    return None


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return "'%s'" % value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[%s]" % ", ".join(str(v) for v in value)
    return str(value)


# --------------------------------------------------------------------------------------------------------------
# conversion


class Converted:
    """One list entry after conversion: ``entry`` (catalog schema, or None), its problems, warnings and origins."""

    def __init__(self, index: int, label: str) -> None:
        self.index = index
        self.label = label
        self.host: str | None = None
        self.entry: dict | None = None
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.origin: dict[str, str] = {}  # catalog field -> where its value came from (for review)

    def problem(self, field: str, text: str) -> None:
        self.problems.append("%s: field '%s': %s" % (self.label, field, text))

    def warn(self, field: str, text: str) -> None:
        self.warnings.append("%s: field '%s': %s" % (self.label, field, text))


def _fields(raw: dict, conv: Converted) -> dict[str, tuple[str, Any]]:
    """Canonical field -> (the name used in the list, value); duplicates and unknown names reported."""
    out: dict[str, tuple[str, Any]] = {}
    for key, value in raw.items():
        name = str(key)
        canon = _ALIAS_OF.get(name.lower())
        if canon is None:
            hint = difflib.get_close_matches(name.lower(), sorted(_ALIAS_OF), n=1, cutoff=0.75)
            conv.warn(
                name, "not a field of the list format, ignored%s" % (" (did you mean '%s'?)" % hint[0] if hint else "")
            )
            continue
        if canon in out:
            conv.problem(name, "given together with '%s' (the same field twice)" % out[canon][0])
            continue
        out[canon] = (name, value)
    return out


def _parse_host(conv: Converted, fields: dict) -> tuple[str | None, int | None]:
    if "host" not in fields:
        conv.problem("host", "missing (every server needs its host name)")
        return None, None
    name, value = fields["host"]
    if not isinstance(value, str) or not value.strip():
        conv.problem(name, "must be a host name, got %s" % _fmt(value))
        return None, None
    text, links = strip_markdown(value.strip())
    if links and text != value.strip():
        conv.origin["host"] = "link text of %s" % _fmt(value.strip())
    if "://" in text or "/" in text:
        conv.problem(name, "%s is a URL, not a host name" % _fmt(text))
        return None, None
    port = None
    if text.count(":") == 1:
        text, _colon, port_text = text.partition(":")
        port = _int(port_text)
        if port is None:
            conv.problem(name, "port %s after the host name is not a number" % _fmt(port_text))
            return None, None
    return text.strip().rstrip(".").lower(), port


def _parse_location(conv: Converted, fields: dict) -> tuple[list[str] | None, str | None]:
    """(country codes, special) where special is None, 'global' or 'distro'."""
    if "location" not in fields:
        conv.problem("location", "missing (a country, 'All' or 'Distro'; the catalog needs countries and a region)")
        return None, None
    name, value = fields["location"]
    items: list[Any]
    if isinstance(value, list):
        items = list(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        qualifiers = _PAREN_RE.findall(text)
        if qualifiers:
            conv.warn(name, "qualifier(s) %s ignored" % ", ".join("'(%s)'" % q for q in qualifiers))
            text = _PAREN_RE.sub("", text).strip()
        folded = catalog_geo.fold(text)
        if folded in catalog_geo.GLOBAL_LOCATIONS:
            return [], "global"
        if folded in catalog_geo.DISTRO_LOCATIONS:
            return [], "distro"
        if catalog_geo.country_code(text):
            items = [text]
        else:
            items = [p for p in re.split(r"\s*(?:[,;/&+]|\band\b)\s*", text) if p.strip()]
    else:
        conv.problem(name, "must be a country name or a list of them, got %s" % _fmt(value))
        return None, None
    codes: list[str] = []
    bad = False
    for item in items:
        code = catalog_geo.country_code(item) if isinstance(item, str) else None
        if code is None:
            conv.problem(
                name,
                "%s is not a country name or ISO 3166-1 alpha-2 code this import knows "
                "(write the country's English name or its code)" % _fmt(item),
            )
            bad = True
            continue
        if code not in codes:
            codes.append(code)
    return (None if bad else codes), None


def _resolve_operator(conv, fields, host, catalog_entry, learned, catalog_by_provider):
    """(provider, operator) for one entry; records where they came from."""
    if "operator" not in fields:
        conv.problem("operator", "missing (who runs the server)")
        return None, None
    name, value = fields["operator"]
    if not isinstance(value, str) or not value.strip():
        conv.problem(name, "must be the operator's name, got %s" % _fmt(value))
        return None, None
    operator, _links = strip_markdown(value.strip())
    if not operator:
        conv.problem(name, "%s holds no name" % _fmt(value))
        return None, None
    if "provider" in fields:
        pname, provider = fields["provider"]
        if catalog_entry is not None and same_operator(operator, catalog_entry["operator"]):
            operator = catalog_entry["operator"]
        conv.origin["provider"] = "the list's '%s' field" % pname
        return provider, operator
    if catalog_entry is not None and same_operator(operator, catalog_entry["operator"]):
        conv.origin["provider"] = "the catalog's entry for %s" % host
        return catalog_entry["provider"], catalog_entry["operator"]
    known = learned.get(_norm_operator(operator), {})
    if len(known) == 1:
        provider, (display, example) = next(iter(known.items()))
        conv.origin["provider"] = "the catalog's provider of operator %s (as for %s)" % (_fmt(operator), example)
        return provider, display
    if len(known) > 1:
        conv.warn(
            name,
            "operator %s matches several catalog providers (%s); a new provider id is made from the "
            "name: review it" % (_fmt(operator), ", ".join(sorted(known))),
        )
    provider = slugify(operator)
    if not provider:
        conv.problem(name, "no provider id can be made from operator %s (give a 'provider' field)" % _fmt(operator))
        return None, operator
    if provider in catalog_by_provider and not any(
        same_operator(operator, e["operator"]) for e in catalog_by_provider[provider]
    ):
        conv.warn(
            name,
            "the new provider id '%s' is already used in the catalog by operator %s: review it"
            % (provider, _fmt(catalog_by_provider[provider][0]["operator"])),
        )
    conv.origin["provider"] = "NEW provider id made from operator %s" % _fmt(operator)
    return provider, operator


def _learn_operators(raws: list, catalog_by_host: dict) -> dict:
    """normalized listed operator -> {provider: (catalog operator, example host)} from hosts in both files."""
    learned: dict[str, dict[str, tuple[str, str]]] = {}
    for entry in catalog_by_host.values():  # the catalog's own names map to themselves
        learned.setdefault(_norm_operator(entry["operator"]), {}).setdefault(
            entry["provider"], (entry["operator"], entry["host"])
        )
    for raw in raws:
        if not isinstance(raw, dict):
            continue
        host = operator = None
        for key, value in raw.items():
            canon = _ALIAS_OF.get(str(key).lower())
            if canon == "host" and isinstance(value, str):
                host = strip_markdown(value.strip())[0].partition(":")[0].rstrip(".").lower()
            elif canon == "operator" and isinstance(value, str):
                operator = strip_markdown(value.strip())[0]
        cat = catalog_by_host.get(host or "")
        if cat is not None and operator and same_operator(operator, cat["operator"]):
            learned.setdefault(_norm_operator(operator), {}).setdefault(cat["provider"], (cat["operator"], host))
    return learned


def _validate_one(conv: Converted, entry: dict) -> dict | None:
    """catalog_schema's verdict on one converted entry, its messages relabelled with the list entry."""
    try:
        catalog = validate_catalog(
            {"version": CATALOG_FORMAT_VERSION, "updated": "2000-01-01", "servers": [entry]}, source="entry"
        )
    except NtsCatalogError as exc:
        for message in exc.errors:
            text = re.sub(r"^entry servers\[0\](?: \(host '[^']*'\))?: ", "", message)
            field = text.split(" ", 1)[0]
            origin = conv.origin.get(field)
            conv.problems.append(
                "%s: catalog field '%s' %s%s"
                % (conv.label, field, text[len(field) :].strip(), " (from %s)" % origin if origin else "")
            )
        return None
    return catalog["servers"][0]


def _flag(conv: Converted, fields: dict, canon: str, cat: dict | None, key: str, derived: bool = False) -> Any:
    """A boolean the list states (``canon``), else True when ``derived``, else the catalog's ``key``, else false."""
    if canon in fields:
        name, raw = fields[canon]
        value = _bool(raw)
        if value is None:
            conv.problem(name, "must be true or false, got %s" % _fmt(raw))
            return raw
        return value
    if derived:
        return True
    return cat[key] if cat is not None else False


def _region(conv: Converted, fields: dict, countries: list[str] | None, cat: dict | None) -> Any:
    if "region" in fields:
        conv.origin["region"] = "the list's '%s' field" % fields["region"][0]
        return fields["region"][1]
    if countries is None:
        return None
    if cat is not None and countries == cat["countries"]:
        return cat["region"]
    if not countries:
        conv.origin["region"] = "no country in the list's location"
        return "global"
    regions = [catalog_geo.REGION_OF[c] for c in countries]
    conv.origin["region"] = "the region of %s" % countries[0]
    if len(set(regions)) > 1:
        conv.warn(
            fields["location"][0],
            "countries %s lie in several regions (%s); region '%s' (the first country's) is used: review it"
            % (", ".join(countries), ", ".join(sorted(set(regions))), regions[0]),
        )
    return regions[0]


def _notes(conv: Converted, fields: dict, cat: dict | None) -> tuple[str, str]:
    """(the list's notes, the notes to keep): the catalog's when the list's are empty or part of them."""
    listed = ""
    if "notes" in fields:
        name, value = fields["notes"]
        if value is not None and not isinstance(value, (str, int, float)):
            conv.problem(name, "must be text, got %s" % _fmt(value))
        elif value is not None:
            listed = " ".join(strip_markdown(_text(value))[0].split())
    if cat is not None and (not listed or catalog_geo.fold(listed) in catalog_geo.fold(cat["notes"])):
        return listed, cat["notes"]
    return listed, listed


def _ports(conv: Converted, fields: dict, cat: dict | None, host_port: int | None, entry: dict) -> None:
    for canon, default in (("port", DEFAULT_PORT), ("ntsport", DEFAULT_NTSPORT)):
        if canon in fields:
            name, raw = fields[canon]
            value = _int(raw)
            if value is None:
                conv.problem(name, "must be a port number 1-65535, got %s" % _fmt(raw))
            entry[canon] = value if value is not None else raw
        elif canon == "ntsport" and host_port is not None:
            entry[canon] = host_port
            conv.origin["ntsport"] = "the port after the list's host name"
        else:
            entry[canon] = cat[canon] if cat is not None else default
    if "ntsport" in fields and host_port is not None and entry["ntsport"] != host_port:
        text = "%s disagrees with the port %d after the host name" % (_fmt(entry["ntsport"]), host_port)
        conv.problem(fields["ntsport"][0], text)


def _convert_entry(conv: Converted, fields: dict, host: str, host_port, cat, learned, by_provider) -> dict:
    """The catalog entry for one list entry (values may still be invalid: problems are recorded on ``conv``)."""
    entry: dict[str, Any] = {"host": host}
    entry["provider"], entry["operator"] = _resolve_operator(conv, fields, host, cat, learned, by_provider)
    countries, special = _parse_location(conv, fields)
    if "location" in fields:
        conv.origin["countries"] = "the list's '%s' field" % fields["location"][0]
    entry["countries"] = countries
    entry["region"] = _region(conv, fields, countries, cat)
    if "stratum" not in fields:
        conv.problem("stratum", "missing")
        entry["stratum"] = None
    else:
        name, raw = fields["stratum"]
        stratum = _int(raw)
        if stratum is None:
            conv.problem(name, "must be a whole number 1-15, got %s" % _fmt(raw))
        entry["stratum"] = stratum if stratum is not None else raw
    listed_notes, entry["notes"] = _notes(conv, fields, cat)
    says_anycast = bool(_ANYCAST_RE.search(listed_notes))
    entry["anycast"] = _flag(conv, fields, "anycast", cat, "anycast", derived=says_anycast)
    if "anycast" not in fields and says_anycast:
        conv.origin["anycast"] = "the word 'anycast' in the list's notes"
    entry["virtualised"] = _flag(conv, fields, "vm", cat, "virtualised")
    if "usage" in fields:
        entry["usage"] = fields["usage"][1]
    elif special == "distro" or _DISTRO_RE.search(listed_notes):
        entry["usage"] = "distro-only"
        conv.origin["usage"] = "location 'Distro'" if special == "distro" else "'distro' in the list's notes"
    else:
        entry["usage"] = cat["usage"] if cat is not None else "public"
    _ports(conv, fields, cat, host_port, entry)
    return entry


def _entry_label(raw: Any, index: int, source_name: str) -> str:
    label = "%s servers[%d]" % (source_name, index)
    if isinstance(raw, dict):
        for key in FIELD_ALIASES["host"]:
            if isinstance(raw.get(key), str):
                return label + " (host '%s')" % strip_markdown(raw[key].strip())[0]
    return label


def convert_source(entries: list, catalog: dict, source_name: str = "list") -> list[Converted]:
    """Convert every list entry to a catalog entry (see the module docstring); one :class:`Converted` per entry."""
    by_host = {e["host"]: e for e in catalog["servers"]}
    by_provider: dict[str, list[dict]] = {}
    for e in catalog["servers"]:
        by_provider.setdefault(e["provider"], []).append(e)
    learned = _learn_operators(entries, by_host)
    out: list[Converted] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(entries):
        conv = Converted(i, _entry_label(raw, i, source_name))
        out.append(conv)
        if not isinstance(raw, dict):
            conv.problems.append(
                "%s: must be a mapping of fields (host, operator, location, ...), got %s" % (conv.label, _fmt(raw))
            )
            continue
        fields = _fields(raw, conv)
        host, host_port = _parse_host(conv, fields)
        conv.host = host
        if host is None:
            continue
        if host in seen:
            conv.problems.append(
                "%s: field 'host': %s is listed twice (first at servers[%d]); this one is left out"
                % (conv.label, host, seen[host])
            )
            continue
        seen[host] = i
        entry = _convert_entry(conv, fields, host, host_port, by_host.get(host), learned, by_provider)
        if not conv.problems:
            conv.entry = _validate_one(conv, entry)
    return out


# --------------------------------------------------------------------------------------------------------------
# diff and merge


class ImportDiff:
    """The outcome of one import, ready to print or to write."""

    def __init__(self) -> None:
        self.converted: list[Converted] = []
        self.added: list[Converted] = []
        self.changed: list[tuple[dict, Converted, list[tuple[str, Any, Any]]]] = []
        self.unchanged: list[str] = []
        self.missing: list[dict] = []  # in the catalog, not in the list
        self.pruned = False
        self.merged: dict | None = None

    @property
    def problems(self) -> list[str]:
        return [p for c in self.converted for p in c.problems]

    @property
    def warnings(self) -> list[str]:
        return [w for c in self.converted for w in c.warnings]

    @property
    def has_changes(self) -> bool:
        return bool(self.added or self.changed or (self.pruned and self.missing))


def diff_catalog(
    catalog: dict,
    converted: list[Converted],
    prune: bool = False,
    keep: tuple[str, ...] | list[str] = (),
    updated: str | None = None,
) -> ImportDiff:
    """Compare converted list entries with a validated catalog and build the merged catalog.

    Catalog order is kept; an added server goes right after the nearest earlier list entry that is in the catalog
    (so a provider's new host lands beside its others), or at the end. A catalog server the list does not have is
    kept unless ``prune`` (then removed, except the hosts in ``keep``). A list entry with problems changes nothing:
    its host, if the catalog has it, stays as it is. ``updated`` (default: today, UTC) becomes the merged catalog's
    date when anything changed; otherwise the catalog's date stays.
    """
    result = ImportDiff()
    result.converted = converted
    result.pruned = prune
    keep_set = {h.lower() for h in keep}
    by_host = {e["host"]: e for e in catalog["servers"]}
    listed = {c.host for c in converted if c.host}
    merged = [dict(e) for e in catalog["servers"]]
    position = {e["host"]: i for i, e in enumerate(merged)}
    insert_after: dict[str | None, list[dict]] = {}
    anchor: str | None = None
    for conv in converted:
        if conv.entry is None:
            if conv.host in by_host:
                anchor = conv.host
            continue
        new = conv.entry
        old = by_host.get(new["host"])
        if old is None:
            result.added.append(conv)
            insert_after.setdefault(anchor, []).append(new)
            continue
        anchor = new["host"]
        changes = [(k, old.get(k), new.get(k)) for k in ENTRY_KEYS if old.get(k) != new.get(k)]
        if changes:
            result.changed.append((old, conv, changes))
            merged[position[new["host"]]] = new
        else:
            result.unchanged.append(new["host"])
    result.missing = [e for e in catalog["servers"] if e["host"] not in listed]
    dropped = {e["host"] for e in result.missing if prune and e["host"] not in keep_set}
    if prune:
        result.missing = [e for e in result.missing if e["host"] not in keep_set]
    out: list[dict] = list(insert_after.get(None, [])) if not merged else []
    for entry in merged:
        if entry["host"] not in dropped:
            out.append(entry)
        out.extend(insert_after.get(entry["host"], []))
    if merged:
        out.extend(insert_after.get(None, []))
    date = catalog["updated"]
    if result.added or result.changed or dropped:
        date = updated or datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    result.merged = validate_catalog(
        {"version": catalog["version"], "updated": date, "servers": out}, source="merged catalog"
    )
    return result


# --------------------------------------------------------------------------------------------------------------
# output


def _yaml_str(text: str) -> str:
    """A YAML double-quoted scalar (UTF-8 kept as is)."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    return '"%s"' % "".join(out)


def render_entry(entry: dict) -> str:
    """One server in the shipped catalog's layout."""
    lines = ["  - host: %s" % entry["host"]]
    lines.append("    provider: %s" % entry["provider"])
    lines.append("    operator: %s" % _yaml_str(entry["operator"]))
    lines.append("    countries: [%s]" % ", ".join(entry["countries"]))
    lines.append("    region: %s" % entry["region"])
    lines.append("    stratum: %d" % entry["stratum"])
    lines.append("    anycast: %s" % ("true" if entry["anycast"] else "false"))
    lines.append("    virtualised: %s" % ("true" if entry["virtualised"] else "false"))
    if entry["port"] != DEFAULT_PORT:
        lines.append("    port: %d" % entry["port"])
    if entry["ntsport"] != DEFAULT_NTSPORT:
        lines.append("    ntsport: %d" % entry["ntsport"])
    lines.append("    usage: %s" % entry["usage"])
    if entry["notes"]:
        lines.append("    notes: %s" % _yaml_str(entry["notes"]))
    return "\n".join(lines) + "\n"


def catalog_header(text: str) -> str:
    """The lines of a catalog file before its ``version:`` key (document marker and comments), or ``---``."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("version:"):
            head = "".join(lines[:i])
            if all(not ln.strip() or ln.startswith("#") or ln.strip() == "---" for ln in lines[:i]):
                return head
            break
    return "---\n"


def render_catalog(catalog: dict, header: str = "---\n") -> str:
    """A validated catalog as YAML text in the shipped file's layout, ``header`` (comments) first."""
    body = "version: %d\nupdated: %s\nservers:\n" % (catalog["version"], _yaml_str(catalog["updated"]))
    return header + body + "".join(render_entry(e) for e in catalog["servers"])


def report_text(result: ImportDiff, source: str, catalog_path: str, catalog: dict) -> str:
    """The reviewed-diff report: problems, added (all fields), changed (field by field), not listed, summary."""
    out: list[str] = []
    w = out.append
    w(
        "Import of %s (%d entries) into %s (%d servers, updated %s)"
        % (source, len(result.converted), catalog_path, len(catalog["servers"]), catalog["updated"])
    )
    if result.problems:
        w("")
        w("! PROBLEMS (%d): these entries were not converted and change nothing" % len(result.problems))
        out.extend("!   " + p for p in result.problems)
    if result.warnings:
        w("")
        w("? warnings (%d): converted, but review" % len(result.warnings))
        out.extend("?   " + x for x in result.warnings)
    w("")
    w("+ added (%d)" % len(result.added))
    for conv in result.added:
        e = conv.entry
        w("+ %s" % e["host"])
        for key in ENTRY_KEYS[1:]:
            origin = conv.origin.get(key)
            w("+     %-12s %s%s" % (key + ":", _fmt(e[key]), "   <- %s" % origin if origin else ""))
    w("")
    w("~ changed (%d)" % len(result.changed))
    for _old, conv, changes in result.changed:
        w("~ %s" % conv.entry["host"])
        for key, before, after in changes:
            origin = conv.origin.get(key)
            w("~     %-12s %s -> %s%s" % (key + ":", _fmt(before), _fmt(after), "   <- %s" % origin if origin else ""))
    w("")
    if result.pruned:
        w("- removed: not in the list (%d)" % len(result.missing))
        out.extend("- %s  (%s, %s)" % (e["host"], e["provider"], e["operator"]) for e in result.missing)
    else:
        w("= not in the list, kept (%d; --prune removes them)" % len(result.missing))
        out.extend("= %s  (%s, %s)" % (e["host"], e["provider"], e["operator"]) for e in result.missing)
    w("")
    w(
        "Summary: %d added, %d changed, %d %s, %d unchanged, %d problem(s), %d warning(s)"
        % (
            len(result.added),
            len(result.changed),
            len(result.missing),
            "removed" if result.pruned else "not in the list (kept)",
            len(result.unchanged),
            len(result.problems),
            len(result.warnings),
        )
    )
    return "\n".join(out) + "\n"


def report_json(result: ImportDiff, source: str, catalog_path: str) -> dict:
    return {
        "source": source,
        "catalog": catalog_path,
        "problems": result.problems,
        "warnings": result.warnings,
        "added": [dict(c.entry, _origin=c.origin, _source_index=c.index) for c in result.added],
        "changed": [
            {"host": c.entry["host"], "changes": [{"field": k, "old": a, "new": b} for k, a, b in ch]}
            for _old, c, ch in result.changed
        ],
        "missing": [e["host"] for e in result.missing],
        "pruned": result.pruned,
        "unchanged": len(result.unchanged),
        "updated": result.merged["updated"] if result.merged else None,
    }


def unified_diff(old_text: str, new_text: str, old_name: str, new_name: str) -> str:
    return "".join(
        difflib.unified_diff(old_text.splitlines(keepends=True), new_text.splitlines(keepends=True), old_name, new_name)
    )
