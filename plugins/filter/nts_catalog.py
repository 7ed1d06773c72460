# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja2 filters for the NTS server catalog and the source selection policy.

Thin wrappers around ``plugin_utils/catalog_schema.py`` and ``catalog_select.py`` (pure Python, no Ansible imports):
every validation or selection problem becomes an ``AnsibleFilterError`` whose message names the
path, the field and the value.

Filters
-------
``nts_catalog_validate``  catalog -> normalized catalog
``nts_catalog_merge``     catalog, extra=[], replace=false -> normalized merged catalog
``nts_select``            catalog (or none), policy={}, site_servers=[] -> ordered list of sources
``nts_pem_check``         PEM text, field='ca', ca=true -> the same text (>= 1 certificate, CAs if ca, no key)

Typical role use::

    chrony_nts_sources: >-
      {{ (lookup('ansible.builtin.file', chrony_nts_catalog_file) | from_yaml)
         | nts_catalog_merge(chrony_nts_catalog_extra, chrony_nts_catalog_replace)
         | nts_select(chrony_nts_policy, chrony_nts_site_servers) }}
"""

from __future__ import annotations

import importlib

from ansible.errors import AnsibleFilterError

_PLUGIN_UTILS = "ansible_collections.nts.chrony.plugins.plugin_utils."


def _schema():
    # Imported on first use: Ansible loads every filter file of the collection in each worker process, from source.
    return importlib.import_module(_PLUGIN_UTILS + "catalog_schema")


def _select():
    return importlib.import_module(_PLUGIN_UTILS + "catalog_select")


def _plain(value):
    """Copy Ansible's (possibly lazy or tagged) containers into plain Python data."""
    if isinstance(value, dict):
        return {str(k) if isinstance(k, str) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


def nts_catalog_validate(catalog, source="catalog"):
    """Validate an NTS catalog mapping (version, updated, servers) and return it normalized.

    Fails with every problem found, e.g.
    ``catalog servers[12] (host 'x.example'): stratum 16 is out of range 1-15``.
    """
    try:
        return _schema().validate_catalog(_plain(catalog), str(source))
    except _schema().NtsCatalogError as exc:
        raise AnsibleFilterError(str(exc)) from None


def nts_catalog_merge(catalog, extra=None, replace=False):
    """Merge user entries (``extra``) into a catalog, or replace its servers when ``replace`` is true.

    An extra entry with the host of a catalog entry is an error unless it says ``override: true``
    (it then replaces that entry in place); ``override: true`` for an unknown host is an error.
    """
    try:
        return _schema().merge_catalog(_plain(catalog), _plain(extra), _plain(replace))
    except _schema().NtsCatalogError as exc:
        raise AnsibleFilterError(str(exc)) from None


def nts_select(catalog, policy=None, site_servers=None):
    """Select NTS sources from ``catalog`` (or none for site servers only) following ``policy``.

    Returns site servers first, then catalog servers round-robin over providers in rank order, as
    dicts with host, port (None for 123), ntsport (None for 4460), certset, ca, ca_file, operator,
    provider, stratum, countries, region, anycast, virtualised, usage, site and options.
    """
    try:
        return _select().select_servers(_plain(catalog), _plain(policy), _plain(site_servers))
    except _schema().NtsCatalogError as exc:
        raise AnsibleFilterError(str(exc)) from None


def nts_pem_check(text, field="ca", ca=True):
    """Return ``text`` unchanged if it holds >= 1 X.509 PEM certificate (CAs with ``ca``) and no private key."""
    try:
        _schema().check_pem_certificates(_plain(text), str(field), bool(ca))
    except _schema().NtsCatalogError as exc:
        raise AnsibleFilterError(str(exc)) from None
    return text


class FilterModule:
    """NTS catalog filters."""

    def filters(self):
        return {
            "nts_catalog_validate": nts_catalog_validate,
            "nts_catalog_merge": nts_catalog_merge,
            "nts_select": nts_select,
            "nts_pem_check": nts_pem_check,
        }
