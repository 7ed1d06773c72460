# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Select NTS sources from a validated catalog and the site servers, by policy (count, stratum, countries, regions,
providers, operator diversity). Controller-only, standard library only, no Ansible imports.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.nts.chrony.plugins.plugin_utils.catalog_schema import (
    DEFAULT_NTSPORT,
    DEFAULT_PORT,
    REGIONS,
    USAGES,
    NtsCatalogError,
    _check_int,
    _country_error,
    _fmt,
    _is_list,
    _suggest,
    _validate_site_servers,
    validate_catalog,
)

# --------------------------------------------------------------------------------------------
# selection policy

POLICY_DEFAULTS: dict[str, Any] = {
    "count": 4,
    "max_stratum": None,
    "countries": [],
    "prefer_countries": [],
    "prefer_regions": [],
    "providers_allow": [],
    "providers_deny": [],
    "exclude_hosts": [],
    "usage": ["public"],
    "include_anycast": True,
    "include_virtualised": True,
    "min_operators": 1,
    "min_sources": 3,
}


def _str_list(policy: dict, key: str, errors: list[str]) -> list[str]:
    value = policy.get(key, POLICY_DEFAULTS[key])
    if value is None:
        return []
    if isinstance(value, str) or not _is_list(value):
        errors.append("policy: %s must be a list of strings, got %s" % (key, _fmt(value)))
        return []
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            errors.append("policy: %s[%d] must be a non-empty string, got %s" % (key, i, _fmt(item)))
        elif str(item) in out:
            errors.append("policy: %s[%d] %s is listed twice" % (key, i, _fmt(item)))
        else:
            out.append(str(item))
    return out


def validate_policy(policy: Any) -> dict:
    """Validate the selection policy (without catalog cross-checks); return it with defaults."""
    if policy is None:
        policy = {}
    if not isinstance(policy, dict):
        raise NtsCatalogError(["policy: must be a mapping, got %s" % _fmt(policy)])
    # null means "default" (Ansible argument specs fill unset suboptions with None)
    policy = {k: v for k, v in policy.items() if v is not None}
    errors: list[str] = []
    known = sorted(POLICY_DEFAULTS)
    for key in sorted(str(k) for k in policy if k not in POLICY_DEFAULTS):
        errors.append("policy: unknown key '%s'%s; allowed keys: %s" % (key, _suggest(key, known), ", ".join(known)))
    out: dict[str, Any] = {}
    for key, lo, hi in (("count", 1, 64), ("min_operators", 1, 64), ("min_sources", 1, 64)):
        value = policy.get(key, POLICY_DEFAULTS[key])
        problem = _check_int(value, lo, hi)
        if problem:
            errors.append("policy: %s %s" % (key, problem))
        else:
            out[key] = int(value)
    max_stratum = policy.get("max_stratum")
    if max_stratum is not None:
        problem = _check_int(max_stratum, 1, 15)
        if problem:
            errors.append("policy: max_stratum %s" % problem)
    out["max_stratum"] = max_stratum
    for key in ("include_anycast", "include_virtualised"):
        value = policy.get(key, POLICY_DEFAULTS[key])
        if not isinstance(value, bool):
            errors.append("policy: %s must be a boolean (true/false), got %s" % (key, _fmt(value)))
        out[key] = value
    for key in ("countries", "prefer_countries"):
        codes = _str_list(policy, key, errors)
        for i, code in enumerate(codes):
            problem = _country_error(code)
            if problem:
                errors.append("policy: %s[%d] %s" % (key, i, problem))
        out[key] = [c.upper() for c in codes]
    regions = _str_list(policy, "prefer_regions", errors)
    for i, region in enumerate(regions):
        if region not in REGIONS:
            errors.append(
                "policy: prefer_regions[%d] %s is not one of %s%s"
                % (i, _fmt(region), ", ".join(REGIONS), _suggest(region, list(REGIONS)))
            )
    out["prefer_regions"] = regions
    for key in ("providers_allow", "providers_deny"):
        out[key] = [p.lower() for p in _str_list(policy, key, errors)]
    both = sorted(set(out["providers_allow"]) & set(out["providers_deny"]))
    if both:
        errors.append(
            "policy: provider(s) %s are in both providers_allow and providers_deny"
            % ", ".join("'%s'" % p for p in both)
        )
    out["exclude_hosts"] = [h.lower() for h in _str_list(policy, "exclude_hosts", errors)]
    usage = _str_list(policy, "usage", errors)
    if "usage" in policy and not usage and _is_list(policy.get("usage")):
        errors.append("policy: usage must list at least one of %s" % ", ".join(USAGES))
    for i, item in enumerate(usage):
        if item not in USAGES:
            errors.append("policy: usage[%d] %s is not one of %s" % (i, _fmt(item), ", ".join(USAGES)))
    out["usage"] = usage
    if not errors and out["min_sources"] > out["count"]:
        errors.append("policy: min_sources %d is greater than count %d" % (out["min_sources"], out["count"]))
    if not errors and out["min_operators"] > out["count"]:
        errors.append("policy: min_operators %d is greater than count %d" % (out["min_operators"], out["count"]))
    if errors:
        raise NtsCatalogError(errors)
    return out


def _rank_key(entry: dict, policy: dict) -> tuple:
    """Smaller is better: preferred country, preferred region, stratum, anycast, physical, host name.

    Anycast names rank before unicast ones of the same stratum: they are the operators' general-purpose
    entry points (e.g. nts.netnod.se vs. the city-specific Netnod hosts).
    """
    pc = policy["prefer_countries"]
    country_rank = min((pc.index(c) for c in entry["countries"] if c in pc), default=len(pc))
    pr = policy["prefer_regions"]
    region_rank = pr.index(entry["region"]) if entry["region"] in pr else len(pr)
    return (country_rank, region_rank, entry["stratum"], not entry["anycast"], entry["virtualised"], entry["host"])


def _round_robin(entries: list[dict], policy: dict) -> list[dict]:
    """Order entries so providers alternate: round 1 = best entry of every provider, ..."""
    ranked = sorted(entries, key=lambda e: _rank_key(e, policy))
    groups: dict[str, list[dict]] = {}
    for entry in ranked:  # dict keeps insertion order = order of each provider's best entry
        groups.setdefault(entry["provider"], []).append(entry)
    out: list[dict] = []
    depth = 0
    while len(out) < len(ranked):
        for members in groups.values():
            if depth < len(members):
                out.append(members[depth])
        depth += 1
    return out


def _source(entry: dict, site: bool) -> dict:
    port = entry["port"]
    ntsport = entry["ntsport"]
    if site:
        return {
            "host": entry["host"],
            "port": None if port == DEFAULT_PORT else port,
            "ntsport": None if ntsport == DEFAULT_NTSPORT else ntsport,
            "certset": entry["certset"],
            "ca": entry["ca"],
            "ca_file": entry["ca_file"],
            "operator": entry["operator"],
            "provider": "site",
            "stratum": None,
            "countries": [],
            "region": None,
            "anycast": False,
            "virtualised": False,
            "usage": "site",
            "site": True,
            "options": list(entry["options"]),
        }
    return {
        "host": entry["host"],
        "port": None if port == DEFAULT_PORT else port,
        "ntsport": None if ntsport == DEFAULT_NTSPORT else ntsport,
        "certset": None,
        "ca": None,
        "ca_file": None,
        "operator": entry["operator"],
        "provider": entry["provider"],
        "stratum": entry["stratum"],
        "countries": list(entry["countries"]),
        "region": entry["region"],
        "anycast": entry["anycast"],
        "virtualised": entry["virtualised"],
        "usage": entry["usage"],
        "site": False,
        "options": [],
    }


def _diversity_key(source: dict) -> str:
    return "site:" + source["operator"].lower() if source["site"] else source["provider"]


def select_servers(catalog: Any, policy: Any = None, site_servers: Any = None) -> list[dict]:
    """Select NTS sources: site servers first, then catalog servers by policy.

    ``catalog`` is a catalog mapping (validated here) or None to use site servers only.
    ``policy`` keys (all optional) are those of :data:`POLICY_DEFAULTS`. ``count`` is the total
    number of sources wanted *including* site servers (site servers are never dropped, so the
    result can exceed ``count`` when there are more of them). Operator diversity counts catalog
    sources by ``provider`` and site sources by their ``operator``. Filters apply in this order:
    usage, providers_allow, providers_deny, exclude_hosts, countries (an entry matches when one of
    its countries is listed; entries with ``countries: []``, i.e. global anycast, never match),
    max_stratum, include_anycast, include_virtualised. Site servers are never filtered.

    Raises :class:`NtsCatalogError` on any invalid input, an unknown provider id or host in the
    policy, a host present both in ``site_servers`` and the catalog, an empty selection, fewer
    sources than ``min_sources`` or fewer operators than ``min_operators``; selection errors
    report what each filter removed.
    """
    errors: list[str] = []
    try:
        pol = validate_policy(policy)
    except NtsCatalogError as exc:
        errors.extend(exc.errors)
        pol = None
    entries: list[dict] = []
    if catalog is not None:
        try:
            entries = validate_catalog(catalog)["servers"]
        except NtsCatalogError as exc:
            errors.extend(exc.errors)
    sites, site_errors = _validate_site_servers(site_servers)
    errors.extend(site_errors)
    if errors:
        raise NtsCatalogError(errors)
    if pol is None:  # validate_policy raised an NtsCatalogError without messages
        raise NtsCatalogError(["policy: invalid (no details)"])

    # Cross-checks between policy, catalog and site servers.
    providers = sorted({e["provider"] for e in entries})
    hosts = {e["host"]: i for i, e in enumerate(entries)}
    for key in ("providers_allow", "providers_deny"):
        for i, prov in enumerate(pol[key]):
            if prov not in providers:
                errors.append(
                    "policy: %s[%d] '%s' is not a provider id in the catalog%s; known providers: %s"
                    % (key, i, prov, _suggest(prov, providers), ", ".join(providers) or "(catalog is empty)")
                )
    for i, host in enumerate(pol["exclude_hosts"]):
        if host not in hosts:
            errors.append(
                "policy: exclude_hosts[%d] '%s' is not a host in the catalog%s"
                % (i, host, _suggest(host, sorted(hosts)))
            )
    for i, site in enumerate(sites):
        if site["host"] in hosts:
            errors.append(
                "site_servers[%d] (host '%s'): host is also in the catalog at servers[%d]; list it only once "
                "(use catalog_extra with override: true to change a catalog entry)"
                % (i, site["host"], hosts[site["host"]])
            )
    if errors:
        raise NtsCatalogError(errors)

    # Filters, in this order; remember how many each removed for error reports.
    filters = [
        ("usage", "usage not in %s" % ", ".join(pol["usage"]), lambda e: e["usage"] in pol["usage"]),
        (
            "providers_allow",
            "provider not in providers_allow",
            lambda e: not pol["providers_allow"] or e["provider"] in pol["providers_allow"],
        ),
        ("providers_deny", "provider in providers_deny", lambda e: e["provider"] not in pol["providers_deny"]),
        ("exclude_hosts", "host in exclude_hosts", lambda e: e["host"] not in pol["exclude_hosts"]),
        (
            "countries",
            "no country in %s" % ", ".join(pol["countries"]),
            lambda e: not pol["countries"] or bool(set(e["countries"]) & set(pol["countries"])),
        ),
        (
            "max_stratum",
            "stratum above %s" % pol["max_stratum"],
            lambda e: pol["max_stratum"] is None or e["stratum"] <= pol["max_stratum"],
        ),
        ("include_anycast", "anycast excluded", lambda e: pol["include_anycast"] or not e["anycast"]),
        ("include_virtualised", "virtualised excluded", lambda e: pol["include_virtualised"] or not e["virtualised"]),
    ]
    remaining = list(entries)
    removed: list[str] = []
    for name, why, keep in filters:
        kept = [e for e in remaining if keep(e)]
        if len(kept) != len(remaining):
            removed.append("%s removed %d (%s)" % (name, len(remaining) - len(kept), why))
        remaining = kept

    wanted = max(pol["count"] - len(sites), 0)
    ordered = _round_robin(remaining, pol)
    chosen = [_source(e, site=True) for e in sites] + [_source(e, site=False) for e in ordered[:wanted]]

    def breakdown() -> str:
        parts = ["catalog has %d server(s)" % len(entries) if catalog is not None else "catalog not used"]
        parts.extend(removed)
        parts.append(
            "%d catalog server(s) remain from %d provider(s)"
            % (len(remaining), len({e["provider"] for e in remaining}))
        )
        parts.append("%d site server(s)" % len(sites))
        return "; ".join(parts)

    if not chosen:
        raise NtsCatalogError(["no NTS source selected: %s" % breakdown()])
    if len(chosen) < pol["min_sources"]:
        raise NtsCatalogError(
            [
                "only %d NTS source(s) selected but min_sources is %d (count %d): %s"
                % (len(chosen), pol["min_sources"], pol["count"], breakdown())
            ]
        )
    operators = {_diversity_key(s) for s in chosen}
    if len(operators) < pol["min_operators"]:
        available = sorted({e["provider"] for e in remaining} | {"site:" + s["operator"].lower() for s in sites})
        raise NtsCatalogError(
            [
                "only %d distinct operator(s) among the %d selected sources but min_operators is %d: %d operator(s) "
                "available after the filters (%s); raise count or relax the filters: %s"
                % (len(operators), len(chosen), pol["min_operators"], len(available), ", ".join(available), breakdown())
            ]
        )
    return chosen
