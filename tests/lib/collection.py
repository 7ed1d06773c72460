"""The collection's Python code as the tests see it: real imports through ``ansible_collections.nts.chrony``.

tests/conftest.py puts the checkout's ``.collections`` directory (made by ``make setup``) on sys.path once. The probe,
the chronyc parsers with the health predicate, the catalog and the report each live in several files split along
their seams; the tests that exercise a whole library get one namespace over its files (read-only: patch the real
module, not these).
"""

from __future__ import annotations

from types import SimpleNamespace

from ansible_collections.nts.chrony.plugins.module_utils import (
    chronyc,
    nts_health,
    nts_ke,
    nts_net,
    nts_ntp,
    nts_prober,
    nts_tls,
)
from ansible_collections.nts.chrony.plugins.plugin_utils import (
    catalog_schema,
    catalog_select,
    fleet_report,
    rollout_summary,
)


def _merge(*modules) -> SimpleNamespace:
    names: dict = {}
    for module in modules:
        names.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    return SimpleNamespace(**names)


cs = _merge(chronyc, nts_health)
nts_client = _merge(nts_ke, nts_ntp, nts_tls, nts_net, nts_prober)
nc = _merge(catalog_schema, catalog_select)
nr = _merge(fleet_report, rollout_summary)
