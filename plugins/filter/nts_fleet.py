# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters behind the playbooks (site, rollout, health, report): the logic that used to be Jinja programs in YAML.

``nts_target_errors``    groups, play hosts, wanted groups, limit, inventory sources -> why the run has no target
``nts_health_lines``     {host: chrony_authdata result} -> one summary line per host (health.yml)
``nts_report_records``   hosts, {host: authdata}, {host: serverstats}, {host: group_names} -> report records
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.errors import AnsibleFilterError


def _inventory_text(sources):
    out = []
    for source in sources or []:
        source = str(source)
        missing = "," not in source and not os.path.exists(source)
        out.append(source + (" (no such file)" if missing else ""))
    return ", ".join(out) or "(none)"


def nts_target_errors(groups, play_hosts, wanted, limit="", inventory_sources=(), required="", need_localhost=False):
    """Sentences saying why a run has nothing to act on (an empty list when it has).

    ``groups`` is Ansible's ``groups``; ``wanted`` the groups the playbook acts on; ``required`` one of them that must
    not be empty in the inventory (``chrony_nts_clients`` for site.yml); ``play_hosts`` what --limit left
    (``ansible_play_hosts_all`` of a play on ``all:localhost``); ``need_localhost`` for playbooks that write their
    record or report on the controller.
    """
    if not isinstance(groups, dict):
        raise AnsibleFilterError("nts_target_errors: groups must be Ansible's groups mapping")
    inventory = _inventory_text(inventory_sources)
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    members = [h for g in wanted for h in groups.get(g, [])]
    errors = []
    hint = (
        ". Name the inventory with -i (the lab NAME's is .lab/NAME/inventory/hosts.yml, the default lab's "
        "inventories/lab/hosts.yml)"
    )
    if required and not groups.get(required):
        errors.append("group %s is empty in the inventory %s%s" % (required, inventory, hint))
    elif not members:
        errors.append("groups %s are empty in the inventory %s%s" % (" and ".join(wanted), inventory, hint))
    elif not [h for h in play_hosts if h in members]:
        errors.append(
            "--limit '%s' leaves no host of %s in the inventory %s" % (limit or "", " or ".join(wanted), inventory)
        )
    if need_localhost and "localhost" not in play_hosts:
        errors.append("--limit left out localhost, where the record is written: add it, e.g. --limit '%s:localhost'"
                      % (limit or "HOSTS"))  # fmt: skip
    return errors


def nts_health_lines(results):
    """``HOST  OK|FAILING  n/m NTS sources healthy  name[* mode=NTS nak=0 cook=8 reach=377 auth=yes] ...`` per host;
    ``UNKNOWN`` with the reason when chronyd gave no report."""
    lines = []
    for host, result in (results or {}).items():
        result = result or {}
        if "sources" not in result:
            lines.append("%-12s UNKNOWN  %s" % (host, result.get("msg", "no answer")))
            continue
        parts = [
            "%s[%s mode=%s nak=%s cook=%s reach=%s auth=%s]"
            % (
                s["name"],
                s["state"],
                s["mode"],
                s["naks"],
                s["cookies"],
                s["reach_octal"],
                "yes" if s["authenticated"] else "no",
            )
            for s in result["sources"]
        ]
        lines.append(
            "%-12s %-8s %d/%d NTS sources healthy  %s"
            % (
                host,
                "OK" if result.get("verified") else "FAILING",
                len(result.get("healthy_sources", [])),
                len(result["sources"]),
                " ".join(parts),
            )
        )
    return lines


def nts_report_records(
    hosts, authdata, serverstats, group_names, report_groups=("chrony_nts_servers", "chrony_nts_clients")
):
    """One record per host for nts_report_build: its groups, the chrony_authdata result (or the error that stood in
    for it: unreachable, no chronyd) and, for NTS servers, the serverstats counters."""
    records = []
    for host in hosts:
        a = (authdata or {}).get(host) or {}
        s = (serverstats or {}).get(host) or {}
        if a.get("unreachable"):
            error = "unreachable: " + str(a.get("msg", ""))
        elif a.get("failed"):
            error = a.get("msg", "chrony_authdata failed")
        else:
            error = None
        records.append(
            {
                "host": host,
                "groups": [g for g in report_groups if g in ((group_names or {}).get(host) or [])],
                "error": error,
                "authdata": a if ("sources" in a and not a.get("failed")) else None,
                "serverstats": s.get("stats") if ("stats" in s and not s.get("failed")) else None,
            }
        )
    return records


class FilterModule:
    """Playbook filters: targets, health lines, report records."""

    def filters(self):
        return {
            "nts_target_errors": nts_target_errors,
            "nts_health_lines": nts_health_lines,
            "nts_report_records": nts_report_records,
        }
