# -*- coding: utf-8 -*-
"""Role filter: every input problem argument_specs cannot see (ranges, single lines, networks, the platform, FIPS
mode, options the host's chronyd is too old for, the verification threshold against the selection), as one message
per problem naming the variable and its value; and the private CAs' certificate sets kept clear of the
distribution's.

In Python rather than Jinja: the role evaluates it once per host on every run, and a template of this size costs
about four times as much controller time.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

from ansible.errors import AnsibleFilterError

_ZONE = re.compile(r"^[A-Za-z0-9_+/.-]*$")
_TESTING = re.compile(r"^([a-z]+/)?sid$")
_ABSOLUTE = re.compile(r"^/\S*$")
_NETWORK = re.compile(r"^[0-9A-Za-z.:/_-]+$")
_VERSION = re.compile(r"^\s*(\d+(?:\.\d+)*)")
_FAMILY_OPTION = {"ipv4": "ipv4", "ipv6": "ipv6"}

# (variable suffix, test, what is expected)
_RANGES = (
    ("minsources", lambda v: int(v) >= 1, ">= 1"),
    ("nocerttimecheck", lambda v: int(v) >= 0, ">= 0"),
    ("makestep_threshold", lambda v: float(v) > 0, "> 0"),
    ("makestep_limit", lambda v: int(v) >= -1, ">= -1"),
    ("cmdport", lambda v: 0 <= int(v) <= 65535, "0-65535"),
    ("maxupdateskew", lambda v: float(v) >= 0, ">= 0"),
    ("verify_timeout", lambda v: int(v) >= 1, ">= 1"),
    ("verify_min_sources", lambda v: int(v) >= 0, ">= 0"),
    ("leapsectz", lambda v: isinstance(v, str) and bool(_ZONE.match(v)), "a zone name"),
    ("state_dir", lambda v: isinstance(v, str) and bool(_ABSOLUTE.match(v)), "an absolute path"),
)


def _passes(test, value):
    try:
        return test(value)
    except (TypeError, ValueError):
        return False


def _version(text):
    """(4, 6, 1) for "4.6.1" (or "4.8-pre1" -> (4, 8)); None when unknown."""
    match = _VERSION.match(str(text)) if text else None
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def _host_errors(inputs, facts):
    """The checks that need what chrony_nts_host read (FIPS mode, chronyd's version), the selected sources' own
    options and the distribution's certificate sets. Every key is optional (absent: nothing to check)."""
    errors = []
    family = facts.get("os_family")
    if inputs.get("fips") is True and family in inputs.get("fips_families", ()) and not inputs.get("fips_allow"):
        errors.append(
            "this host runs in FIPS mode (/proc/sys/crypto/fips_enabled is 1) and is of the %s family (%s %s): "
            "chronyd with NTS sources aborts in FIPS mode on RHEL 9 and 10 (the NTS ciphers, AES-SIV, are not "
            "FIPS-approved), which is why ComplianceAsCode dropped its NTS rule from the STIG profiles. Nothing was "
            "changed. Set chrony_nts_fips_allow: true only once this host's chronyd is known to run NTS in FIPS mode "
            "(Red Hat documents GNUTLS_FORCE_FIPS_MODE=0 in /etc/sysconfig/chronyd, which takes chronyd alone out of "
            "FIPS mode; the role keeps that line); a chronyd that still fails is rolled back by the proof."
            % (family, facts.get("distribution"), facts.get("distribution_version"))
        )
    chronyd = inputs.get("chronyd_version")
    have = _version(chronyd)
    minimum = inputs.get("option_min_versions") or {}
    ip_family = inputs.get("ip_family", "any")
    for host, options in sorted((inputs.get("source_options") or {}).items()):
        names = [str(option).split()[0].lower() for option in options or [] if str(option).strip()]
        for name in names:
            need = _version(minimum.get(name))
            if have and need and have < need:
                errors.append(
                    "chrony_nts_site_servers: %s has the server option '%s', which needs chronyd >= %s; this host's "
                    "chronyd is %s. Remove the option%s."
                    % (host, name, minimum[name], chronyd,
                       ", or set chrony_nts_ip_family: %s (chronyd's -%s flag, any version, for every source)"
                       % (name, name[-1]) if name in _FAMILY_OPTION else "")
                )  # fmt: skip
        families = sorted(set(names) & set(_FAMILY_OPTION))
        if len(families) > 1:
            errors.append("chrony_nts_site_servers: %s has both server options ipv4 and ipv6; keep one." % host)
        elif families and ip_family != "any" and families[0] != ip_family:
            errors.append(
                "chrony_nts_site_servers: %s has the server option '%s' but chrony_nts_ip_family is '%s' (chronyd "
                "runs with -%s): the source could never be reached. Remove the option or change the family."
                % (host, families[0], ip_family, ip_family[-1])
            )
    if inputs.get("distro_nts_prefer") and inputs.get("verify_require_selected"):
        errors.append(
            "chrony_nts_verify_require_selected is true but the distribution's NTS sources are kept "
            "(chrony_nts_distro_nts_sources: keep) and carry chrony's prefer option (%s): while they answer, chronyd "
            "selects only them and the role's sources stay selectable but not combined, so every run would fail. "
            "Set chrony_nts_distro_nts_sources: replace, or chrony_nts_verify_require_selected: false."
            % (inputs.get("distro_nts") or "its NTS sources")
        )
    reserved = set(inputs.get("reserved_certsets") or ())
    for index, server in enumerate(inputs.get("site_servers") or []):
        if not isinstance(server, dict) or server.get("certset") is None:
            continue
        if server.get("ca") is None and server.get("ca_file") is None:
            continue  # a site server that uses a set without bringing a CA: the distribution's set is wanted
        if _passes(lambda v: int(v) in reserved, server["certset"]):
            errors.append(
                "chrony_nts_site_servers[%d] (%s): certset %s is filled by the distribution (%s, trusted in it "
                "through its own ntstrustedcerts line): this site CA and the distribution's would each be trusted "
                "for the other's servers. Use another certset, or leave it unset and the role picks a free one."
                % (index, server.get("host"), server["certset"], inputs.get("distro_nts") or "its NTS sources")
            )
    return errors


def chrony_nts_reserve_certsets(sources, reserved, site_servers):
    """``sources`` (the selection of nts_select) with the certificate sets assigned automatically to site CAs moved
    clear of ``reserved`` (the sets the distribution fills, such as Ubuntu's bootstrap set 1).

    nts_select gives each distinct site CA without a ``certset`` of its own the lowest free id >= 1. Those ids, in
    order, become the lowest ids >= 1 that are neither ``reserved`` nor named by a site server in ``site_servers``
    (the role's raw input): with nothing reserved every id stays as it was. Sets named by the user are never moved
    (the input check reports one that collides).
    """
    if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
        raise AnsibleFilterError("sources must be the list of selected sources, got %r" % (sources,))
    explicit = set()
    for server in site_servers or []:
        if isinstance(server, dict) and server.get("certset") is not None and _passes(int, server["certset"]):
            explicit.add(int(server["certset"]))
    blocked = explicit | {int(r) for r in reserved or []}
    automatic = sorted({s["certset"] for s in sources if s.get("certset") is not None and s["certset"] not in explicit})
    free, candidate = [], 1
    while len(free) < len(automatic):
        if candidate not in blocked:
            free.append(candidate)
        candidate += 1
    moved = dict(zip(automatic, free))
    return [dict(s, certset=moved.get(s.get("certset"), s.get("certset"))) for s in sources]


def chrony_nts_input_errors(inputs):
    """``inputs``: the platform facts (os_family, distribution, distribution_version, distribution_major_version),
    supported_families, min_distro_major, service (None when the family has no vars file), the role variables named
    in _RANGES plus extra_config, allow and serve_ntp (without the chrony_nts_ prefix), selected (host names), kept
    (those that passed the pre-flight probe) and dropped (the probe results of the others); optionally (the role
    passes them) fips, fips_allow, fips_families, chronyd_version, option_min_versions, ip_family, source_options,
    site_servers, reserved_certsets, distro_nts, distro_nts_prefer and verify_require_selected (see _host_errors).
    Returns the list of problems, empty when all is well."""
    errors = []
    facts = inputs["facts"]
    family, distro = facts.get("os_family"), facts.get("distribution")
    raw_major = str(facts.get("distribution_major_version") or "")
    try:
        major = int(raw_major or 0)
    except ValueError:
        # Debian testing and unstable have no VERSION_ID; their version is "<codename>/sid" (/etc/debian_version, and
        # Ansible's own facts): newer than any release. chronyd's own version is checked on the host anyway.
        major = 10**6 if distro == "Debian" and _TESTING.match(raw_major) else 0
    minimum = inputs["min_distro_major"]
    if family not in inputs["supported_families"] or inputs["service"] is None or major < minimum.get(distro, 0):
        errors.append(
            "supports the families %s with chrony >= 4.0 (%s); this host is os_family '%s', distribution '%s' '%s'."
            % (
                ", ".join(inputs["supported_families"]),
                ", ".join("%s >= %s" % item for item in minimum.items()),
                family,
                distro,
                facts.get("distribution_version"),
            )
        )
    errors.extend(_host_errors(inputs, facts))
    for name, test, want in _RANGES:
        if not _passes(test, inputs[name]):
            errors.append("out-of-range input: chrony_nts_%s=%s (%s)." % (name, json.dumps(inputs[name]), want))
    for index, item in enumerate(inputs["extra_config"]):
        if not isinstance(item, str) or "\n" in item or "\r" in item or not item.strip():
            errors.append(
                "chrony_nts_extra_config[%d] must be a single non-empty line, got %s." % (index, json.dumps(item))
            )
    for index, item in enumerate(inputs["allow"]):
        if not isinstance(item, str) or not _NETWORK.match(item):
            errors.append(
                "chrony_nts_allow[%d] must be an address, network (CIDR) or host name without spaces, got %s."
                % (index, json.dumps(item))
            )
    if inputs["serve_ntp"] and not inputs["allow"]:
        errors.append(
            "chrony_nts_serve_ntp is true but chrony_nts_allow is empty: chrony would open the NTP port and refuse "
            "every client. List the networks to serve (e.g. ['10.0.0.0/8']) or set chrony_nts_serve_ntp to false."
        )
    selected, kept = inputs["selected"], inputs["kept"]
    if _passes(lambda v: int(v) > len(selected), inputs["verify_min_sources"]):
        errors.append(
            "chrony_nts_verify_min_sources is %s but only %d NTS source(s) are selected (%s)."
            % (inputs["verify_min_sources"], len(selected), ", ".join(selected))
        )
    elif inputs["dropped"]:
        required = max(int(inputs["verify_min_sources"]), 1)  # an integer: the > check above passed without error
        if len(kept) < required:
            errors.append(
                "Only %d selected NTS server(s) passed the pre-flight probe (%s), at least %d required; nothing on "
                "this host was changed. Dropped: %s."
                % (len(kept), ", ".join(kept) or "none", required, dropped_text(inputs["dropped"]))
            )
    return errors


def dropped_text(dropped):
    """``host:port failed at stage (error)`` for each probe result, joined by '; '."""
    return "; ".join("%s:%s failed at %s (%s)" % (r["host"], r["port"], r["stage"], r["error"]) for r in dropped)


class FilterModule(object):
    """chrony_nts role filters: input checks."""

    def filters(self):
        return {
            "chrony_nts_input_errors": chrony_nts_input_errors,
            "chrony_nts_dropped_text": dropped_text,
            "chrony_nts_reserve_certsets": chrony_nts_reserve_certsets,
        }
