# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""NTS server catalog: schema validation, merging and the source selection policy.

Pure Python (stdlib only, Python >= 3.9, no Ansible imports) so that it can be used by the
``nts_catalog`` filter plugin on the controller, by modules on targets and by unit tests.

Public API
----------
``validate_catalog(data, source="catalog")``
    Check a catalog mapping ``{version, updated, servers}`` and return a normalized copy
    (defaults filled in, hosts lower-cased). Raises :class:`NtsCatalogError` listing *all*
    problems, each naming the path, the field and the offending value.
``merge_catalog(catalog, extra=None, replace=False)``
    Extend (or replace) a catalog with user entries. An extra entry whose host is already in
    the catalog is an error unless that entry says ``override: true``; ``override: true`` on a
    host that is not in the catalog is an error too (typos must not pass silently).
``select_servers(catalog, policy=None, site_servers=None)``
    Apply the selection policy and return the ordered list of normalized sources for the
    chrony template: site servers first (in the order given), then catalog servers chosen
    round-robin over providers in rank order. Deterministic: no randomness, input order of
    the catalog does not matter.
``check_pem_certificates(text, field="ca")``
    Require >= 1 well-formed PEM CERTIFICATE block and no private key; return the count.
``validate_server_options(options, path)``
    Check extra chrony ``server`` options against the known option table.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import difflib
import ipaddress
import re
from typing import Any

CATALOG_FORMAT_VERSION = 1
DEFAULT_PORT = 123
DEFAULT_NTSPORT = 4460

USAGES = ("public", "distro-only")
REGIONS = (
    "africa",
    "asia",
    "europe",
    "global",
    "middle-east",
    "north-america",
    "oceania",
    "south-america",
)

# ISO 3166-1 alpha-2 officially assigned codes (249).
ISO_3166_ALPHA2 = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
    CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR
    GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT
    JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY
    MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM
    PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ
    UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """.split()
)
# Common non-ISO spellings, to give a helpful hint instead of a bare "unknown".
_COUNTRY_HINTS = {"UK": "GB", "EL": "GR", "EU": None}

# chrony `server` directive options (chrony.conf(5)); kind, minimum, maximum.
# Every option here except ipv4/ipv6/maxunreach is accepted by chrony 4.3 (checked with `chronyd -p`
# in tests/unit/test_nts_catalog.py); ipv4, ipv6 and maxunreach need a newer chronyd (maxunreach: 4.8).
# The role's `chronyd -p` validation of the rendered file catches options the target's chronyd lacks.
SERVER_OPTIONS: dict[str, tuple[str, float | None, float | None]] = {
    "minpoll": ("int", -7, 24),
    "maxpoll": ("int", -7, 24),
    "iburst": ("flag", None, None),
    "burst": ("flag", None, None),
    "maxdelay": ("float", 0.0, 1000.0),
    "maxdelayratio": ("float", 1.0, None),
    "maxdelaydevratio": ("float", 0.0, None),
    "maxdelayquant": ("float", 0.05, 0.95),
    "mindelay": ("float", 0.0, None),
    "asymmetry": ("float", -0.5, 0.5),
    "offset": ("float", None, None),
    "minsamples": ("int", 0, None),
    "maxsamples": ("int", 0, None),
    "filter": ("int", 1, None),
    "offline": ("flag", None, None),
    "auto_offline": ("flag", None, None),
    "prefer": ("flag", None, None),
    "noselect": ("flag", None, None),
    "trust": ("flag", None, None),
    "require": ("flag", None, None),
    "xleave": ("flag", None, None),
    "polltarget": ("int", 6, 60),
    "presend": ("int", -7, 24),
    "minstratum": ("int", 0, 15),
    "version": ("int", 1, 4),
    "copy": ("flag", None, None),
    "extfield": ("hex", None, None),
    "ipv4": ("flag", None, None),
    "ipv6": ("flag", None, None),
    "maxunreach": ("int", 0, None),
}
EXTFIELD_TYPES = ("F323", "F324", "10A")
# Options with a dedicated key, or which make no sense for an NTS source.
_RESERVED_OPTIONS = {
    "port": "set it with the 'port' key",
    "ntsport": "set it with the 'ntsport' key",
    "certset": "set it with the 'certset' key",
    "nts": "NTS is always enabled for these sources",
    "key": "symmetric keys cannot be combined with NTS",
    "maxsources": "it is a pool-only option",
}

_SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$", re.IGNORECASE)
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_FLOAT_RE = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


class NtsCatalogError(ValueError):
    """One or more validation or selection errors; ``errors`` holds each message."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        if len(self.errors) == 1:
            text = self.errors[0]
        else:
            text = "%d errors:\n" % len(self.errors) + "\n".join("- " + e for e in self.errors)
        super().__init__(text)


# --------------------------------------------------------------------------------------------
# small helpers


def _fmt(value: Any) -> str:
    """Render a value for an error message (quoted strings, truncated)."""
    if isinstance(value, str):
        text = str(value)
        if len(text) > 80:
            text = text[:77] + "..."
        return "'%s'" % text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return "%s %s" % (type(value).__name__, text)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _suggest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=3, cutoff=0.6)
    return (" (did you mean %s?)" % ", ".join("'%s'" % c for c in close)) if close else ""


def host_error(host: Any) -> str | None:
    """Return why ``host`` is not a usable NTS-KE server name, or None when it is fine.

    Accepts RFC 1123 host names (labels of letters, digits and inner hyphens, 1-63 characters,
    253 in total, no trailing dot) and IPv4/IPv6 literals (chrony >= 4.1 accepts an IP when it
    is in the certificate's subjectAltName).
    """
    if not isinstance(host, str):
        return "must be a string, got %s" % _fmt(host)
    host = str(host)
    if not host:
        return "must not be empty"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    if addr is not None:
        if "%" in host:
            return "IPv6 zone index is not supported"
        return None
    if ":" in host:
        return "is not a valid IPv6 address"
    if len(host) > 253:
        return "is longer than 253 characters"
    if host.endswith("."):
        return "must not end with a dot"
    labels = host.split(".")
    for label in labels:
        if not label:
            return "has an empty label"
        if not _LABEL_RE.match(label):
            return "label '%s' is not an RFC 1123 label (letters, digits, inner hyphens, 1-63 characters)" % label
    if all(label.isdigit() for label in labels):
        return "is neither a valid IPv4 address nor a host name (all-numeric labels)"
    return None


def _check_int(value: Any, lo: int, hi: int) -> str | None:
    if not _is_int(value):
        return "must be an integer, got %s" % _fmt(value)
    if not lo <= value <= hi:
        return "%s is out of range %d-%d" % (value, lo, hi)
    return None


def _country_error(code: Any) -> str | None:
    if not isinstance(code, str):
        return "must be a string, got %s" % _fmt(code)
    upper = str(code).upper()
    if upper in ISO_3166_ALPHA2:
        return None
    hint = _COUNTRY_HINTS.get(upper, None)
    if hint:
        return "%s is not an ISO 3166-1 alpha-2 code (use '%s')" % (_fmt(code), hint)
    return "%s is not an ISO 3166-1 alpha-2 code" % _fmt(code)


# --------------------------------------------------------------------------------------------
# catalog entries

_ENTRY_REQUIRED = ("host", "provider", "operator", "countries", "region", "stratum")
_ENTRY_DEFAULTS = {
    "anycast": False,
    "virtualised": False,
    "port": DEFAULT_PORT,
    "ntsport": DEFAULT_NTSPORT,
    "usage": "public",
    "notes": "",
}
ENTRY_KEYS = _ENTRY_REQUIRED + tuple(_ENTRY_DEFAULTS)


def _label(path: str, raw: Any) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("host"), str):
        return "%s (host '%s')" % (path, raw["host"])
    return path


def _validate_entry(raw: Any, path: str, allow_override: bool) -> tuple[dict | None, list[str]]:
    """Validate one catalog entry; return (normalized entry or None, errors)."""
    if not isinstance(raw, dict):
        return None, ["%s: must be a mapping, got %s" % (path, _fmt(raw))]
    where = _label(path, raw)
    errors: list[str] = []
    # null optional values mean "default" (Ansible argument specs fill unset suboptions with None)
    raw = {k: v for k, v in raw.items() if v is not None or k in _ENTRY_REQUIRED}
    allowed = set(ENTRY_KEYS) | ({"override"} if allow_override else set())
    for key in sorted(str(k) for k in raw if k not in allowed):
        hint = _suggest(key, sorted(allowed))
        errors.append("%s: unknown key '%s'%s; allowed keys: %s" % (where, key, hint, ", ".join(sorted(allowed))))
    for key in _ENTRY_REQUIRED:
        if key not in raw:
            errors.append("%s: required key '%s' is missing" % (where, key))
    out: dict[str, Any] = {}

    if "host" in raw:
        problem = host_error(raw["host"])
        if problem:
            errors.append("%s: host %s %s" % (where, _fmt(raw["host"]), problem))
        else:
            out["host"] = str(raw["host"]).lower()
    if "provider" in raw:
        prov = raw["provider"]
        if not isinstance(prov, str) or not _SLUG_RE.match(prov) or len(prov) > 63:
            errors.append(
                "%s: provider %s must be a lower-case slug id (letters, digits, inner hyphens, e.g. 'netnod')"
                % (where, _fmt(prov))
            )
        else:
            out["provider"] = str(prov)
    if "operator" in raw:
        op = raw["operator"]
        if not isinstance(op, str) or not op.strip():
            errors.append("%s: operator %s must be a non-empty string" % (where, _fmt(op)))
        else:
            out["operator"] = str(op).strip()
    if "countries" in raw:
        countries = raw["countries"]
        if not _is_list(countries):
            errors.append("%s: countries must be a list of ISO 3166-1 alpha-2 codes, got %s" % (where, _fmt(countries)))
        else:
            norm: list[str] = []
            for i, code in enumerate(countries):
                problem = _country_error(code)
                if problem:
                    errors.append("%s: countries[%d] %s" % (where, i, problem))
                    continue
                code = str(code).upper()
                if code in norm:
                    errors.append("%s: countries[%d] '%s' is listed twice" % (where, i, code))
                    continue
                norm.append(code)
            out["countries"] = norm
    if "region" in raw:
        region = raw["region"]
        if region not in REGIONS:
            errors.append(
                "%s: region %s is not one of %s%s"
                % (where, _fmt(region), ", ".join(REGIONS), _suggest(str(region), list(REGIONS)))
            )
        else:
            out["region"] = str(region)
    if "stratum" in raw:
        problem = _check_int(raw["stratum"], 1, 15)
        if problem:
            errors.append("%s: stratum %s" % (where, problem))
        else:
            out["stratum"] = int(raw["stratum"])
    for key in ("anycast", "virtualised"):
        value = raw.get(key, _ENTRY_DEFAULTS[key])
        if not isinstance(value, bool):
            errors.append("%s: %s must be a boolean (true/false), got %s" % (where, key, _fmt(value)))
        else:
            out[key] = bool(value)
    for key in ("port", "ntsport"):
        value = raw.get(key, _ENTRY_DEFAULTS[key])
        problem = _check_int(value, 1, 65535)
        if problem:
            errors.append("%s: %s %s" % (where, key, problem))
        else:
            out[key] = int(value)
    usage = raw.get("usage", "public")
    if usage not in USAGES:
        errors.append("%s: usage %s is not one of %s" % (where, _fmt(usage), ", ".join(USAGES)))
    else:
        out["usage"] = str(usage)
    notes = raw.get("notes", "")
    if notes is None:
        notes = ""
    if not isinstance(notes, str):
        errors.append("%s: notes must be a string, got %s" % (where, _fmt(notes)))
    else:
        out["notes"] = str(notes)
    if allow_override:
        override = raw.get("override", False)
        if not isinstance(override, bool):
            errors.append("%s: override must be a boolean (true/false), got %s" % (where, _fmt(override)))
        else:
            out["override"] = bool(override)
    return (None if errors else out), errors


def _validate_entries(raw: Any, path: str, allow_override: bool) -> tuple[list[dict], list[str]]:
    """Validate a list of entries incl. case-insensitive host uniqueness."""
    if not _is_list(raw):
        return [], ["%s: must be a list of server entries, got %s" % (path, _fmt(raw))]
    entries: list[dict] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        entry, errs = _validate_entry(item, "%s[%d]" % (path, i), allow_override)
        errors.extend(errs)
        host = item.get("host") if isinstance(item, dict) else None
        if isinstance(host, str):
            key = str(host).lower()
            if key in seen:
                errors.append(
                    "%s[%d] (host '%s'): duplicate host, already listed at %s[%d]" % (path, i, host, path, seen[key])
                )
                entry = None
            else:
                seen[key] = i
        if entry is not None:
            entry["_index"] = i
            entries.append(entry)
    return entries, errors


def _strip_private(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if not k.startswith("_") and k != "override"}


def validate_catalog(data: Any, source: str = "catalog") -> dict:
    """Validate a whole catalog and return it normalized.

    ``data`` is a mapping with ``version`` (int, must be 1), ``updated`` (``YYYY-MM-DD``) and
    ``servers`` (list of entries). Unknown keys anywhere are rejected. Each entry needs host,
    provider, operator, countries, region and stratum; anycast/virtualised default to false,
    port to 123, ntsport to 4460, usage to ``public``, notes to ``""``.
    """
    if not isinstance(data, dict):
        raise NtsCatalogError(
            ["%s: must be a mapping with version, updated and servers, got %s" % (source, _fmt(data))]
        )
    errors: list[str] = []
    allowed = ("version", "updated", "servers")
    for key in sorted(str(k) for k in data if k not in allowed):
        errors.append("%s: unknown top-level key '%s'; allowed keys: %s" % (source, key, ", ".join(allowed)))
    for key in allowed:
        if key not in data:
            errors.append("%s: required top-level key '%s' is missing" % (source, key))
    version = data.get("version")
    if "version" in data and version != CATALOG_FORMAT_VERSION:
        errors.append(
            "%s: version %s is not supported (this code reads version %d)"
            % (source, _fmt(version), CATALOG_FORMAT_VERSION)
        )
    updated = data.get("updated")
    if isinstance(updated, datetime.date):
        updated = updated.isoformat()
    if "updated" in data:
        if not isinstance(updated, str) or not _DATE_RE.match(updated):
            errors.append("%s: updated %s must be a date YYYY-MM-DD" % (source, _fmt(updated)))
        else:
            try:
                datetime.date.fromisoformat(str(updated))
            except ValueError:
                errors.append("%s: updated %s is not a valid date" % (source, _fmt(updated)))
    entries: list[dict] = []
    if "servers" in data:
        entries, errs = _validate_entries(data["servers"], "%s servers" % source, allow_override=False)
        errors.extend(errs)
    if errors:
        raise NtsCatalogError(errors)
    return {
        "version": CATALOG_FORMAT_VERSION,
        "updated": str(updated),
        "servers": [_strip_private(e) for e in entries],
    }


def merge_catalog(catalog: Any, extra: Any = None, replace: bool = False, source: str = "catalog") -> dict:
    """Merge user entries into a catalog without editing the shipped file.

    * ``extra`` (list of entries, same schema as catalog entries plus ``override``): appended.
    * An extra entry with the same host (case-insensitive) as a catalog entry is an ERROR unless
      it carries ``override: true``; then it replaces that entry in place (same position).
    * ``override: true`` on a host that is not in the (shipped) catalog is an error.
    * ``replace: true``: the catalog's servers are dropped and ``extra`` is the whole list
      (``override: true`` is then an error, there is nothing to override).
    All problems of both inputs are reported together.
    """
    if not isinstance(replace, bool):
        raise NtsCatalogError(["catalog_replace must be a boolean (true/false), got %s" % _fmt(replace)])
    errors: list[str] = []
    try:
        base = validate_catalog(catalog, source)
    except NtsCatalogError as exc:
        errors.extend(exc.errors)
        base = None
    extra_entries: list[dict] = []
    if extra is not None:
        extra_entries, errs = _validate_entries(extra, "catalog_extra", allow_override=True)
        errors.extend(errs)
    if base is None:
        raise NtsCatalogError(errors)
    servers = [] if replace else [dict(e) for e in base["servers"]]
    index = {e["host"]: i for i, e in enumerate(servers)}
    appended: list[dict] = []
    for entry in extra_entries:
        where = "catalog_extra[%d] (host '%s')" % (entry["_index"], entry["host"])
        pos = index.get(entry["host"])
        if pos is not None:
            if entry["override"]:
                servers[pos] = _strip_private(entry)
            else:
                errors.append(
                    "%s: host is already in the %s at servers[%d] (provider '%s'); set 'override: true' on this "
                    "entry to replace it" % (where, source, pos, servers[pos]["provider"])
                )
        elif entry["override"]:
            why = " (catalog_replace is true)" if replace else ""
            errors.append("%s: override is true but the %s has no entry with this host%s" % (where, source, why))
        else:
            appended.append(_strip_private(entry))
    if errors:
        raise NtsCatalogError(errors)
    return {"version": base["version"], "updated": base["updated"], "servers": servers + appended}


# --------------------------------------------------------------------------------------------
# PEM and chrony options


def _der_length_ok(der: bytes) -> bool:
    """DER must be one SEQUENCE whose length covers exactly the data, starting with a SEQUENCE."""
    if len(der) < 4 or der[0] != 0x30:
        return False
    first = der[1]
    if first < 0x80:
        length, offset = first, 2
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(der) < 2 + count:
            return False
        length = int.from_bytes(der[2 : 2 + count], "big")
        offset = 2 + count
    if offset + length != len(der) or length < 2:
        return False
    return der[offset] == 0x30  # tbsCertificate is a SEQUENCE too


def _x509_ca_problem(der: bytes, require_ca: bool = True) -> str | None:
    """Why ``der`` cannot serve chronyd as a trust anchor, or None.

    It must parse as an X.509 certificate and be a CA (basicConstraints CA:TRUE) or self-signed (a pinned
    server certificate, which GnuTLS also accepts as a trust anchor). A block that merely frames like DER (a
    SEQUENCE holding a SEQUENCE) is refused here, before any host is touched. Without the ``cryptography``
    package (the controller always has it: ansible-core depends on it) only the DER framing is checked.
    """
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - ansible-core requires cryptography
        return None
    try:
        cert = x509.load_der_x509_certificate(der)
        subject, issuer = cert.subject, cert.issuer
    except Exception as exc:  # cryptography raises ValueError and friends for junk
        return "is not an X.509 certificate (%s)" % (str(exc).split("\n", maxsplit=1)[0] or type(exc).__name__)
    if not require_ca:
        return None
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    except Exception as exc:  # a malformed extension
        return "has unreadable extensions (%s)" % exc
    if not is_ca and subject != issuer:
        return (
            "is not a CA certificate: subject %s was issued by %s and has no basicConstraints CA:TRUE; give the "
            "certificate of the CA that signed the server's certificate"
            % (subject.rfc4514_string(), issuer.rfc4514_string())
        )
    return None


_PEM_BEGIN_RE = re.compile(r"-----BEGIN ([^-\r\n]*)-----")
_PEM_BLOCK_RE = re.compile(r"-----BEGIN ([^-\r\n]*)-----(.*?)-----END ([^-\r\n]*)-----", re.DOTALL)


def check_pem_certificates(text: Any, field: str = "ca", require_ca: bool = True) -> int:
    """Check that ``text`` holds >= 1 well-formed PEM certificate and no private key.

    Each ``-----BEGIN CERTIFICATE-----`` block must have a matching END line, a valid base64
    body and decode to DER starting with a SEQUENCE (whose length covers exactly the data).
    Anything that looks like a private key is refused (its content is never echoed). Each block must parse as an
    X.509 certificate; with ``require_ca`` (trust anchors) it must also be a CA or self-signed, while a server's
    certificate chain (``require_ca=False``) starts with its leaf.
    Explanatory text outside the blocks is tolerated, as OpenSSL does. Returns the number of
    certificates; raises :class:`NtsCatalogError` naming ``field`` otherwise.
    """
    if not isinstance(text, str):
        raise NtsCatalogError(["%s: must be PEM text (a string), got %s" % (field, type(text).__name__)])
    text = str(text)
    if re.search(r"PRIVATE KEY", text, re.IGNORECASE):
        raise NtsCatalogError(
            [
                "%s: contains a PRIVATE KEY block; a CA must hold certificates only. Do not paste private keys "
                "here, and treat this key as exposed" % field
            ]
        )
    begins = _PEM_BEGIN_RE.findall(text)
    blocks = _PEM_BLOCK_RE.findall(text)
    if not begins:
        raise NtsCatalogError(["%s: contains no PEM CERTIFICATE block (-----BEGIN CERTIFICATE-----)" % field])
    if len(blocks) != len(begins):
        raise NtsCatalogError(
            ["%s: has %d BEGIN line(s) but only %d complete PEM block(s)" % (field, len(begins), len(blocks))]
        )
    errors: list[str] = []
    for i, (label, body, end_label) in enumerate(blocks, start=1):
        if label != end_label:
            errors.append("%s: PEM block #%d starts with BEGIN %s but ends with END %s" % (field, i, label, end_label))
            continue
        if label != "CERTIFICATE":
            errors.append("%s: PEM block #%d is '%s', expected 'CERTIFICATE'" % (field, i, label))
            continue
        compact = "".join(body.split())
        try:
            der = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            errors.append("%s: PEM block #%d (CERTIFICATE) body is not valid base64" % (field, i))
            continue
        if not _der_length_ok(der):
            errors.append(
                "%s: PEM block #%d (CERTIFICATE) does not decode to a DER certificate (a SEQUENCE of the stated "
                "length holding a SEQUENCE)" % (field, i)
            )
            continue
        problem = _x509_ca_problem(der, require_ca)
        if problem:
            errors.append("%s: PEM block #%d (CERTIFICATE) %s" % (field, i, problem))
    if errors:
        raise NtsCatalogError(errors)
    return len(blocks)


def validate_server_options(options: Any, path: str) -> tuple[list[str], list[str]]:
    """Validate extra chrony server options; return (normalized option strings, errors).

    Each item is a string ``"name"`` (flag) or ``"name value"``; names come from
    :data:`SERVER_OPTIONS`; values are type- and range-checked. Duplicate options and
    ``minpoll`` > ``maxpoll`` are errors.
    """
    if options is None:
        return [], []
    if not _is_list(options):
        return [], ["%s: options must be a list of strings such as 'minpoll 0', got %s" % (path, _fmt(options))]
    out: list[str] = []
    errors: list[str] = []
    seen: dict[str, Any] = {}
    known = sorted(SERVER_OPTIONS)
    for i, item in enumerate(options):
        where = "%s: options[%d]" % (path, i)
        if not isinstance(item, str) or not item.strip():
            errors.append("%s must be a non-empty string such as 'minpoll 0', got %s" % (where, _fmt(item)))
            continue
        words = str(item).split()
        name = words[0].lower()
        if name in _RESERVED_OPTIONS:
            errors.append("%s %s is not allowed here: %s" % (where, _fmt(item), _RESERVED_OPTIONS[name]))
            continue
        if name not in SERVER_OPTIONS:
            errors.append("%s: unknown chrony server option '%s'%s" % (where, words[0], _suggest(name, known)))
            continue
        kind, lo, hi = SERVER_OPTIONS[name]
        if name in seen:
            errors.append("%s: option '%s' is given more than once" % (where, name))
            continue
        if kind == "flag":
            if len(words) != 1:
                errors.append("%s: option '%s' takes no value, got %s" % (where, name, _fmt(" ".join(words[1:]))))
                continue
            seen[name] = True
            out.append(name)
            continue
        if len(words) != 2:
            errors.append("%s: option '%s' needs exactly one %s value, got %s" % (where, name, kind, _fmt(item)))
            continue
        token = words[1]
        value: Any
        if kind == "int":
            if not _INT_RE.match(token):
                errors.append("%s: option '%s' value %s is not an integer" % (where, name, _fmt(token)))
                continue
            value = int(token)
        elif kind == "float":
            if not _FLOAT_RE.match(token):
                errors.append("%s: option '%s' value %s is not a number" % (where, name, _fmt(token)))
                continue
            value = float(token)
        else:  # hex extension field type
            if token.upper() not in EXTFIELD_TYPES:
                errors.append(
                    "%s: option 'extfield' value %s is not a known type (%s)"
                    % (where, _fmt(token), ", ".join(EXTFIELD_TYPES))
                )
                continue
            value = token.upper()
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            rng = (
                "%s to %s" % (lo, hi)
                if lo is not None and hi is not None
                else (">= %s" % lo if lo is not None else "<= %s" % hi)
            )
            errors.append("%s: option '%s' value %s is out of range %s" % (where, name, token, rng))
            continue
        seen[name] = value
        out.append("%s %s" % (name, value if kind != "float" else token))
    if not errors and "minpoll" in seen and "maxpoll" in seen and seen["minpoll"] > seen["maxpoll"]:
        errors.append("%s: options minpoll %s is greater than maxpoll %s" % (path, seen["minpoll"], seen["maxpoll"]))
    return out, errors


# --------------------------------------------------------------------------------------------
# site servers

SITE_KEYS = ("host", "port", "ntsport", "certset", "ca", "ca_file", "operator", "options")
CERTSET_MAX = 2147483647


def _validate_site_servers(raw: Any) -> tuple[list[dict], list[str]]:
    if raw is None:
        return [], []
    if not _is_list(raw):
        return [], ["site_servers: must be a list of mappings, got %s" % _fmt(raw)]
    out: list[dict] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        path = "site_servers[%d]" % i
        if not isinstance(item, dict):
            errors.append("%s: must be a mapping with at least 'host', got %s" % (path, _fmt(item)))
            continue
        where = _label(path, item)
        errs: list[str] = []
        for key in sorted(str(k) for k in item if k not in SITE_KEYS):
            errs.append(
                "%s: unknown key '%s'%s; allowed keys: %s"
                % (where, key, _suggest(key, list(SITE_KEYS)), ", ".join(SITE_KEYS))
            )
        entry: dict[str, Any] = {}
        if "host" not in item:
            errs.append("%s: required key 'host' is missing" % where)
        else:
            problem = host_error(item["host"])
            if problem:
                errs.append("%s: host %s %s" % (where, _fmt(item["host"]), problem))
            else:
                entry["host"] = str(item["host"]).lower()
                if entry["host"] in seen:
                    errs.append("%s: duplicate host, already listed at site_servers[%d]" % (where, seen[entry["host"]]))
                else:
                    seen[entry["host"]] = i
        for key, default in (("port", DEFAULT_PORT), ("ntsport", DEFAULT_NTSPORT)):
            value = item.get(key, default)
            if value is None:
                value = default
            problem = _check_int(value, 1, 65535)
            if problem:
                errs.append("%s: %s %s" % (where, key, problem))
            else:
                entry[key] = int(value)
        certset = item.get("certset")
        if certset is not None:
            problem = _check_int(certset, 0, CERTSET_MAX)
            if problem:
                errs.append("%s: certset %s" % (where, problem))
            else:
                entry["certset"] = int(certset)
        else:
            entry["certset"] = None
        ca, ca_file = item.get("ca"), item.get("ca_file")
        if ca is not None and ca_file is not None:
            errs.append("%s: give either 'ca' (PEM text) or 'ca_file' (path), not both" % where)
        entry["ca"] = None
        entry["ca_file"] = None
        if ca is not None:
            try:
                check_pem_certificates(ca, "%s: ca" % where)
                entry["ca"] = str(ca)
            except NtsCatalogError as exc:
                errs.extend(exc.errors)
        if ca_file is not None:
            if not isinstance(ca_file, str) or not str(ca_file).startswith("/") or "\n" in ca_file:
                errs.append("%s: ca_file %s must be an absolute path on the managed host" % (where, _fmt(ca_file)))
            else:
                entry["ca_file"] = str(ca_file)
        if (ca is not None or ca_file is not None) and entry.get("certset") == 0:
            errs.append(
                "%s: certset 0 is the default set trusted for every NTS source; a site CA in it would also be "
                "trusted for public servers. Use a certset >= 1 or leave certset unset to get one assigned" % where
            )
        operator = item.get("operator")
        if operator is None:
            operator = "site"
        if not isinstance(operator, str) or not operator.strip():
            errs.append("%s: operator %s must be a non-empty string" % (where, _fmt(operator)))
        else:
            entry["operator"] = str(operator).strip()
        options, opt_errs = validate_server_options(item.get("options"), where)
        errs.extend(opt_errs)
        entry["options"] = options
        errors.extend(errs)
        if not errs:
            out.append(entry)
    if errors:
        return out, errors
    # Assign certsets to site CAs without one: one set per distinct CA, lowest unused id >= 1.
    used = {e["certset"] for e in out if e["certset"] is not None}
    by_ca: dict[tuple[str, str], int] = {}
    next_id = 1
    for entry in out:
        if entry["certset"] is not None or (entry["ca"] is None and entry["ca_file"] is None):
            continue
        key = ("ca", entry["ca"].strip()) if entry["ca"] is not None else ("file", entry["ca_file"])
        if key not in by_ca:
            while next_id in used:
                next_id += 1
            by_ca[key] = next_id
            used.add(next_id)
        entry["certset"] = by_ca[key]
    return out, []
