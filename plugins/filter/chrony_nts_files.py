# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Role filters that assemble what the chrony_nts role hands to its modules (logic that used to be Jinja in YAML).

``chrony_nts_apply_files``    parts -> the O(files) list of chrony_nts_apply (CA bundles, extra files, chrony.conf,
                              daemon options file, systemd drop-in)
``chrony_nts_secret_file``    an item of chrony_nts_extra_files with secret=true, chrony user -> a secret_files entry
``chrony_nts_probe_targets``  the play's selections, address map -> the distinct servers the pre-flight gate probes
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

_PARTS = (
    "trusted_certs",
    "extra_files",
    "chrony_user",
    "config_path",
    "config",
    "chronyd",
    "options_file",
    "options_now",
    "options_content",
    "clock_control",
    "dropin_path",
    "dropin",
)


def _extra(item, chrony_user, index):
    if not isinstance(item, dict) or not item.get("path") or item.get("content") is None:
        raise AnsibleFilterError("chrony_nts_extra_files[%d]: needs path and content" % index)
    return {
        "path": str(item["path"]),
        "content": str(item["content"]),
        "mode": str(item.get("mode") or "0644"),
        "owner": "root",
        "group": chrony_user if item.get("chronyd_group") else "root",
    }


def chrony_nts_apply_files(parts):
    """The non-secret files of one chrony_nts_apply call, in the order they are written."""
    if not isinstance(parts, dict):
        raise AnsibleFilterError("chrony_nts_apply_files: expected a dict of parts, got %s" % type(parts).__name__)
    missing = [key for key in _PARTS if key not in parts]
    if missing:
        raise AnsibleFilterError("chrony_nts_apply_files: missing parts %s" % ", ".join(missing))
    files = [
        {"path": cert["path"], "content": cert["content"]}
        for cert in parts["trusted_certs"]
        if cert.get("content") is not None
    ]
    files += [
        _extra(item, parts["chrony_user"], i) for i, item in enumerate(parts["extra_files"]) if not item.get("secret")
    ]
    files.append({"path": parts["config_path"], "content": parts["config"], "validate": parts["chronyd"] + " -p -f %s"})
    # A host without the options file runs chronyd with no options: it is created only when -x must be added.
    if parts["options_now"] is not None or not parts["clock_control"]:
        files.append({"path": parts["options_file"], "content": parts["options_content"]})
    if parts["clock_control"]:
        files.append({"path": parts["dropin_path"], "state": "absent", "unit": True})
    else:
        files.append({"path": parts["dropin_path"], "content": parts["dropin"], "unit": True})
    return files


def chrony_nts_secret_file(item, chrony_user):
    """One secret item of chrony_nts_extra_files as a chrony_nts_apply secret_files entry (mode default 0600)."""
    entry = _extra(item, chrony_user, 0)
    if not item.get("mode"):
        entry["mode"] = "0600"
    return entry


def chrony_nts_probe_targets(selections, resolve=None):
    """Distinct NTS servers of every host's selection, each once, in first-seen order: ``{host, ntsport[, address]
    [, ca_pem]}``. Servers trusted through a ``ca_file`` (a path on the managed host) are left out: the controller
    cannot read their CA."""
    resolve = resolve or {}
    targets = {}
    for selection in selections or []:
        for source in selection or []:
            if source.get("ca_file") or source["host"] in targets:
                continue
            target = {"host": source["host"], "ntsport": source.get("ntsport") or 4460}
            if source["host"] in resolve:
                target["address"] = resolve[source["host"]]
            if source.get("ca"):
                target["ca_pem"] = source["ca"]
            targets[source["host"]] = target
    return list(targets.values())


class FilterModule:
    """chrony_nts role filters: the files and probe targets of a run."""

    def filters(self):
        return {
            "chrony_nts_apply_files": chrony_nts_apply_files,
            "chrony_nts_secret_file": chrony_nts_secret_file,
            "chrony_nts_probe_targets": chrony_nts_probe_targets,
        }
