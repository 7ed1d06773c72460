# -*- coding: utf-8 -*-
"""Role filter: every input problem argument_specs cannot see (ranges, single lines, networks, the platform, the
verification threshold against the selection), as one message per problem naming the variable and its value.

In Python rather than Jinja: the role evaluates it once per host on every run, and a template of this size costs
about four times as much controller time.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

_ZONE = re.compile(r"^[A-Za-z0-9_+/.-]*$")
_TESTING = re.compile(r"^([a-z]+/)?sid$")
_ABSOLUTE = re.compile(r"^/\S*$")
_NETWORK = re.compile(r"^[0-9A-Za-z.:/_-]+$")

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


def chrony_nts_input_errors(inputs):
    """``inputs``: the platform facts (os_family, distribution, distribution_version, distribution_major_version),
    supported_families, min_distro_major, service (None when the family has no vars file), the role variables named
    in _RANGES plus extra_config, allow and serve_ntp (without the chrony_nts_ prefix), selected (host names), kept
    (those that passed the pre-flight probe) and dropped (the probe results of the others).
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
        return {"chrony_nts_input_errors": chrony_nts_input_errors, "chrony_nts_dropped_text": dropped_text}
