"""Throw-away PKI for loopback NTS tests.

A :class:`CertificateAuthority` is a private EC P-256 CA created per test run. It issues server certificates with
the DNS names and IP addresses the test needs and with any validity window (expired and not-yet-valid
certificates are how clock/certificate failures are provoked). A second, unrelated CA is simply another
``CertificateAuthority``: a client trusting one CA must reject a server certificate issued by the other.

The certificates themselves come from the lab's CA code (``lab/pki.py``, :class:`Authority`): one implementation of
the extensions an NTS server certificate needs. This module adds the files, modes and validity defaults the loopback
tests want.

Files are written with tight modes. chronyd drops privileges to ``_chrony`` after start, so everything it must
read is group-readable by ``_chrony``: private keys ``0640 root:_chrony``, certificates ``0644``. The directory
the files live in must itself be traversable by ``_chrony`` (see :func:`make_shared_dir`).
"""

from __future__ import annotations

import datetime
import grp
import importlib.util
import ipaddress
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def _lab_pki():
    """lab/pki.py, loaded from its path (``lab`` is not a package, and ``tests.lab`` would shadow the name)."""
    path = Path(__file__).resolve().parents[2] / "lab" / "pki.py"
    spec = importlib.util.spec_from_file_location("chrony_nts_lab_pki", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


Authority = _lab_pki().Authority

CHRONY_GROUP = "_chrony"


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def chrony_gid() -> int:
    """GID of the chrony group; a clear error if the chrony package is not installed."""
    try:
        return grp.getgrnam(CHRONY_GROUP).gr_gid
    except KeyError:
        raise RuntimeError(f"group {CHRONY_GROUP!r} not found: is the chrony package installed?") from None


def make_shared_dir(parent: str | os.PathLike | None = None, prefix: str = "nts-pki-") -> Path:
    """Create a directory ``root:_chrony 0750`` that chronyd (after dropping to ``_chrony``) can traverse.

    pytest's ``tmp_path`` lives under a ``0700`` root directory that ``_chrony`` cannot enter, so files chronyd reads
    must be placed in a directory made with this function (under ``/tmp`` by default).
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chown(path, 0, chrony_gid())
    os.chmod(path, 0o750)  # noqa: S103 - group _chrony must traverse to read certs
    return path


def _write(path: Path, data: bytes, mode: int, gid: int | None = None) -> Path:
    """Write ``data`` to ``path`` so that it never exists with a looser mode than ``mode``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        if gid is not None:
            os.fchown(fd, 0, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return path


@dataclass
class ServerCertificate:
    """An issued server certificate and where its PEM files are."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path
    dns_names: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()


@dataclass
class CertificateAuthority:
    """A private EC P-256 CA whose certificate is written to ``directory/<name>-ca.pem``."""

    directory: Path
    name: str = "nts-test"
    not_before: datetime.datetime | None = None
    not_after: datetime.datetime | None = None
    key: ec.EllipticCurvePrivateKey = field(init=False)
    cert: x509.Certificate = field(init=False)
    cert_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        if not self.name or "/" in self.name:
            raise ValueError(f"CA name must be a non-empty file-name part, got {self.name!r}")
        now = _utcnow()
        self._authority = Authority.create(
            f"{self.name} private test CA",
            not_before=self.not_before or now - datetime.timedelta(days=1),
            not_after=self.not_after or now + datetime.timedelta(days=30),
        )
        self.key, self.cert = self._authority.key, self._authority.cert
        self.cert_path = _write(self.directory / f"{self.name}-ca.pem", self._authority.cert_pem, 0o644)

    def issue(
        self,
        name: str,
        dns_names: tuple[str, ...] | list[str] = (),
        ips: tuple[str, ...] | list[str] = (),
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
        include_chain: bool = False,
    ) -> ServerCertificate:
        """Issue a TLS server certificate with SANs ``dns_names`` and ``ips``.

        ``not_before``/``not_after`` default to yesterday / in 30 days; pass past or future datetimes for expired or
        not-yet-valid certificates. Writes ``<name>.crt`` (0644) and ``<name>.key`` (0640 root:_chrony).
        """
        if not name or "/" in name:
            raise ValueError(f"certificate name must be a non-empty file-name part, got {name!r}")
        dns_names = tuple(dns_names)
        ips = tuple(ips)
        if not dns_names and not ips:
            raise ValueError("a server certificate needs at least one DNS name or IP address in its SAN")
        for ip in ips:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ValueError(f"ips: {ip!r} is not an IP address") from None
        now = _utcnow()
        not_before = not_before or now - datetime.timedelta(days=1)
        not_after = not_after or now + datetime.timedelta(days=30)
        if not_after <= not_before:
            raise ValueError(f"not_after ({not_after.isoformat()}) must be later than not_before ({not_before})")
        key_pem, cert_pem = self._authority.issue(list(dns_names), list(ips), not_before, not_after)
        if include_chain:
            cert_pem += self._authority.cert_pem
        cert_path = _write(self.directory / f"{name}.crt", cert_pem, 0o644)
        key_path = _write(self.directory / f"{name}.key", key_pem, 0o640, gid=chrony_gid())
        key = serialization.load_pem_private_key(key_pem, password=None)
        return ServerCertificate(x509.load_pem_x509_certificate(cert_pem), key, cert_path, key_path, dns_names, ips)
