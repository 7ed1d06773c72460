"""Shared pytest setup: import paths and small generic fixtures for loopback chronyd tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The one place the tests set their import path: the checkout itself (tests.lib) and the collection path that
# `make setup` arranges (.collections/ansible_collections/nts/chrony -> this checkout).
if not (REPO / ".collections" / "ansible_collections" / "nts" / "chrony" / "galaxy.yml").exists():
    raise RuntimeError("the collection path .collections/ansible_collections/nts/chrony is missing: run `make setup`")
for _p in (REPO / ".collections", REPO):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from tests.lib.chronyd import Chronyd, NtsClient, NtsServer  # noqa: E402
from tests.lib.pki import CertificateAuthority, make_shared_dir  # noqa: E402


@pytest.fixture
def pki_dir():
    """A ``root:_chrony 0750`` directory for certificates and keys that chronyd must read (removed afterwards)."""
    import shutil

    path = make_shared_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ca(pki_dir) -> CertificateAuthority:
    """A fresh private EC P-256 CA for this test."""
    return CertificateAuthority(pki_dir, name="test")


@pytest.fixture
def chrony_procs():
    """Register started chronyd runners here (``chrony_procs.append(x)``); all are stopped and verified gone."""
    procs: list[Chronyd] = []
    yield procs
    errors = []
    for proc in reversed(procs):
        try:
            proc.cleanup()
        except Exception as exc:  # keep stopping the others, then report
            errors.append(f"{proc.name}: {exc}")
    if errors:
        raise RuntimeError("chronyd teardown failed: " + "; ".join(errors))


@pytest.fixture
def nts_pair(ca, chrony_procs):
    """A started loopback NTS server and a started client trusting ``ca`` (not yet synchronised)."""
    from tests.lib.chronyd import unique_loopback_address

    addr = unique_loopback_address()
    server = NtsServer.create(ca.issue("server", ips=[addr]), address=addr)
    chrony_procs.append(server)
    server.start()
    client = NtsClient.create([server], trusted_certs=[ca.cert_path])
    chrony_procs.append(client)
    client.start()
    return server, client
