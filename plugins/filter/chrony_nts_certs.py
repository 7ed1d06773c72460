# -*- coding: utf-8 -*-
"""Role filter: turn the selected NTS sources into the ``ntstrustedcerts`` entries the role writes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError


def chrony_nts_trusted_certs(sources, cert_dir):
    """One entry per private CA: ``{certset, path, content}``.

    * ``ca`` (PEM text) of every source with the same ``certset`` is bundled into one file
      ``<cert_dir>/certset-<N>.pem`` (distinct certificates only, in source order) that the role installs;
    * ``ca_file`` (a path already on the managed host) is referenced as it is (``content`` is None).

    ``certset`` None means the default set 0 (which also includes the system's trusted CAs).
    """
    if not isinstance(sources, list):
        raise AnsibleFilterError("sources must be the list returned by nts_select, got %s" % type(sources).__name__)
    bundles = {}
    order = []
    files = []
    for index, source in enumerate(sources):
        if not isinstance(source, dict) or "host" not in source:
            raise AnsibleFilterError("sources[%d] is not a source returned by nts_select: %r" % (index, source))
        certset = source.get("certset")
        ca, ca_file = source.get("ca"), source.get("ca_file")
        if ca:
            pem = str(ca).strip() + "\n"
            if certset not in bundles:
                bundles[certset] = []
                order.append(certset)
            if pem not in bundles[certset]:
                bundles[certset].append(pem)
        if ca_file:
            entry = {"certset": certset, "path": str(ca_file), "content": None}
            if entry not in files:
                files.append(entry)
    out = []
    for certset in order:
        name = "certset-%d.pem" % (certset if certset is not None else 0)
        out.append(
            {"certset": certset, "path": "%s/%s" % (cert_dir.rstrip("/"), name), "content": "".join(bundles[certset])}
        )
    return out + files


class FilterModule(object):
    """chrony_nts role filters."""

    def filters(self):
        return {"chrony_nts_trusted_certs": chrony_nts_trusted_certs}
