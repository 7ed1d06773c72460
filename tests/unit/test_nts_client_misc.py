"""Argument parsing, certificate name matching, error plumbing and dependency messages of nts_client."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import threading
import time

import pytest
from ansible_collections.nts.chrony.plugins.module_utils import nts_tls
from ansible_collections.nts.chrony.plugins.module_utils.nts_ke import NTSError
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.lib.collection import nts_client


def make_cert(dns=(), ips=(), san=True, days=30):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cn.example.test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days, hours=1))
    )
    if san:
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nts.example.test", ("nts.example.test", 4460)),
        ("nts.example.test:4461", ("nts.example.test", 4461)),
        ("127.0.0.9:99", ("127.0.0.9", 99)),
        ("[::1]:4460", ("::1", 4460)),
        ("[::1]", ("::1", 4460)),
        ("::1", ("::1", 4460)),
    ],
)
def test_parse_hostport(text, expected):
    assert nts_client.parse_hostport(text) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty server specification"),
        ("host:abc", "port 'abc' of server 'host:abc' is not an integer"),
        ("host:0", "port 0 of server 'host:0' is outside 1..65535"),
        ("host:70000", "outside 1..65535"),
        (":4460", "empty host"),
        ("[::1", "unbalanced"),
        ("[::1]x", "unexpected 'x'"),
    ],
)
def test_parse_hostport_errors(text, match):
    with pytest.raises(ValueError, match=match):
        nts_client.parse_hostport(text)


def test_certificate_name_checks():
    cert = make_cert(dns=["nts.example.test", "*.pool.example.test"], ips=["127.8.8.8", "::1"])
    for ok in ("nts.example.test", "NTS.Example.Test.", "a.pool.example.test", "127.8.8.8", "::1"):
        nts_client.check_certificate_name(cert, ok)
    for bad, match in [
        ("other.example.test", "not valid for 'other.example.test'"),
        ("a.b.pool.example.test", "not valid for"),  # a wildcard covers one label only
        ("pool.example.test", "not valid for"),
        ("127.8.8.9", "not valid for IP address 127.8.8.9"),
        ("cn.example.test", "not valid for"),  # no Common Name fallback
    ]:
        with pytest.raises(NTSError, match=match) as err:
            nts_client.check_certificate_name(cert, bad)
        assert err.value.stage == "certificate"


def test_ip_only_in_dns_san_is_not_an_ip_match():
    cert = make_cert(dns=["127.8.8.8"])
    with pytest.raises(NTSError, match="subjectAltName IPs: none"):
        nts_client.check_certificate_name(cert, "127.8.8.8")


def test_certificate_without_san():
    with pytest.raises(NTSError, match="no subjectAltName extension"):
        nts_client.check_certificate_name(make_cert(san=False), "cn.example.test")


def test_certificate_summary():
    summary = nts_client.certificate_summary(make_cert(dns=["a.test"], days=30))
    assert summary["cert_subject"] == "CN=cn.example.test"
    assert summary["cert_issuer"] == "CN=cn.example.test"
    assert summary["cert_days_left"] == 30
    assert summary["cert_not_after"].endswith("Z")


def test_ntserror_requires_known_stage():
    err = NTSError("tcp", "refused", timeout=False)
    assert str(err) == "tcp: refused" and err.stage == "tcp" and err.details == {"timeout": False}
    with pytest.raises(ValueError, match="unknown NTS probe stage 'bogus'"):
        NTSError("bogus", "x")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"host": ""}, "host must be a non-empty string"),
        ({"host": "h", "port": "x"}, "port 'x' of server 'h' is not an integer"),
        ({"host": "h", "port": 0}, "outside 1..65535"),
        ({"host": "h", "address": "not-an-ip"}, "address 'not-an-ip' for server 'h' is not an IP address"),
        ({"host": "h", "timeout": 0}, "timeout must be a positive number"),
        ({"host": "h", "timeout": True}, "timeout must be a positive number"),
        ({"host": "h", "placeholders": 9}, "placeholders must be an integer 0..7"),
    ],
)
def test_probe_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nts_client.probe(**kwargs)


def test_probe_many_argument_errors():
    with pytest.raises(ValueError, match="concurrency must be a positive integer"):
        nts_client.probe_many(["h"], concurrency=0)
    with pytest.raises(ValueError, match="has no 'host'"):
        nts_client.probe_many([{"port": 1}])
    with pytest.raises(ValueError, match="neither a string nor a dict"):
        nts_client.probe_many([42])
    with pytest.raises(ValueError, match="server entry for 'h' has unknown key\\(s\\) provider, stratum"):
        nts_client.probe_many([{"host": "h", "provider": "x", "stratum": 1}])
    with pytest.raises(ValueError, match="'port' 123 and 'ntsport' 4460 disagree"):
        nts_client.probe_many([{"host": "h", "port": 123, "ntsport": 4460}])
    assert nts_client.probe_many([]) == []


def test_missing_dependency_message(monkeypatch):
    monkeypatch.setattr(nts_tls, "_PYOPENSSL_ERROR", ImportError("No module named 'OpenSSL'"))
    with pytest.raises(nts_client.MissingDependencyError, match=r"'pyOpenSSL' >= 17.5 .* No module named 'OpenSSL'"):
        nts_client.probe("h")
    monkeypatch.setattr(nts_tls, "_CRYPTOGRAPHY_ERROR", ImportError("cannot import name 'AESSIV'"))
    with pytest.raises(nts_client.MissingDependencyError, match=r"'cryptography' >= 37 \(for AESSIV\)"):
        nts_client.check_dependencies()


def test_dns_failure_is_a_result_not_an_exception(monkeypatch):
    """The resolver is replaced: tests never send DNS queries (the machine's resolver is not on loopback)."""

    def refuse(host, *_args, **_kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    result = nts_client.probe("nts.example.test", timeout=2)
    assert result["ok"] is False
    assert result["stage"] == "dns"
    assert result["error"] == "cannot resolve 'nts.example.test': [Errno -2] Name or service not known"


def test_dns_timeout_is_bounded(monkeypatch):
    release = threading.Event()

    def hang(*_args, **_kwargs):
        release.wait(10)
        raise socket.gaierror(socket.EAI_AGAIN, "too late")

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    start = time.monotonic()
    try:
        result = nts_client.probe("slow.example.test", timeout=0.3)
    finally:
        release.set()
    assert time.monotonic() - start < 1.5
    assert (result["stage"], result["ok"]) == ("dns", False)
    assert result["error"] == "timed out after 0.3s resolving 'slow.example.test'"


def test_ip_literals_skip_the_resolver(monkeypatch):
    def forbidden(*_args, **_kwargs):
        raise AssertionError("getaddrinfo must not be called for an IP literal")

    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    assert nts_client.resolve("127.0.0.9", 4460, 1) == [(socket.AF_INET, ("127.0.0.9", 4460))]
    assert nts_client.resolve("::1", 4460, 1) == [(socket.AF_INET6, ("::1", 4460, 0, 0))]
