"""Error plumbing of nts_client without a network: plain reasons, CA input checks, the task adapter, the CLI's last
line of defence. (The same paths with real sockets are in tests/integration/test_nts_probe_robust.py.)"""

from __future__ import annotations

import ast
import datetime
import errno
import os
from pathlib import Path

import pytest
import yaml
from ansible_collections.nts.chrony.plugins.module_utils import nts_prober
from ansible_collections.nts.chrony.plugins.module_utils.nts_ke import NTSError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from tests.lib.collection import nts_client

CLI = Path(__file__).resolve().parents[2] / "bin" / "nts-probe"


def ca_pem(cn="unit test CA"):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


# ---------------------------------------------------------------------------------------------------------------
# plain reasons


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "connection reset by peer"),
        (OSError(errno.ENOTCONN, "Transport endpoint is not connected"), "connection closed by peer"),
        (OSError(errno.EAFNOSUPPORT, "x"), "address family not supported by this host"),
        (OSError(errno.EPIPE, "Broken pipe"), "connection closed by peer (broken pipe)"),
        (OSError(errno.EACCES, os.strerror(errno.EACCES)), "permission denied"),
        (SSL.SysCallError(errno.ECONNRESET, "ECONNRESET"), "connection reset by peer"),
        (SSL.SysCallError(-1, "Unexpected EOF"), "connection closed by peer (unexpected EOF)"),
        (SSL.ZeroReturnError(), "connection closed by peer (TLS close_notify)"),
        (
            SSL.Error([("SSL routines", "", "unexpected eof while reading")]),
            "connection closed by peer (unexpected EOF)",
        ),
        (SSL.Error([("SSL routines", "", "tlsv1 alert protocol version")]), "tlsv1 alert protocol version"),
    ],
)
def test_network_reasons_are_plain(exc, reason):
    assert nts_client._network_reason(exc).startswith(reason)
    assert "Errno" not in nts_client._network_reason(exc)


# ---------------------------------------------------------------------------------------------------------------
# CA input


def test_load_ca_pem_accepts_a_bundle():
    certs = nts_client.load_ca_pem(ca_pem("a") + "\n" + ca_pem("b"), "ca_pem for x")
    assert [c.to_cryptography().subject.rfc4514_string() for c in certs] == ["CN=a", "CN=b"]
    assert len(nts_client.load_ca_pem(ca_pem().encode("ascii"), "ca_pem for x")) == 1


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not a PEM certificate (no '-----BEGIN CERTIFICATE-----' block found)"),
        (b"\xff\xfe", "not a PEM certificate (the text is not ASCII)"),
        (42, "must be PEM text, got int"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END X509 CRL-----\n", "starts with BEGIN CERTIFICATE but ends with"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "PEM block #1 is not a valid certificate ("),
        (
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
            "PEM block #1 is 'X509 CRL', expected 'CERTIFICATE'",
        ),
    ],
)
def test_load_ca_pem_errors_name_the_input(text, reason):
    with pytest.raises(NTSError) as err:
        nts_client.load_ca_pem(text, "ca_pem for nts1.example")
    assert err.value.stage == "certificate"
    assert err.value.message.startswith("ca_pem for nts1.example: ")
    assert reason in err.value.message


def test_second_block_is_named():
    text = ca_pem() + "-----BEGIN CERTIFICATE-----\nMIIB!!!!\n-----END CERTIFICATE-----\n"
    with pytest.raises(NTSError, match=r"ca_pem for h: PEM block #2 is not a valid certificate \(bad base64 decode\)"):
        nts_client.load_ca_pem(text, "ca_pem for h")


def test_tls_context_names_the_server_and_the_field(tmp_path):
    with pytest.raises(NTSError, match=r"^certificate: ca_pem for nts1\.example: not a PEM certificate"):
        nts_client.tls_context(ca_pem="garbage", owner="nts1.example")
    bad = tmp_path / "ca.pem"
    bad.write_text("garbage")
    with pytest.raises(NTSError) as err:
        nts_client.tls_context(ca_file=str(bad), owner="nts1.example")
    assert err.value.message == (
        "ca_file %s for nts1.example: not a PEM certificate (no '-----BEGIN CERTIFICATE-----' block found)" % bad
    )
    good = tmp_path / "good.pem"
    good.write_text(ca_pem())
    nts_client.tls_context(ca_file=str(good), owner="nts1.example")
    nts_client.tls_context(ca_pem=ca_pem() * 2, owner="nts1.example")  # the same CA twice is harmless


def test_probe_refuses_ca_file_and_ca_pem_together(tmp_path):
    with pytest.raises(ValueError, match="give ca_file or ca_pem, not both"):
        nts_client.probe("h", ca_file=str(tmp_path / "x.pem"), ca_pem=ca_pem())


def test_run_probe_task_names_ca_pem_and_writes_no_file(tmp_path, monkeypatch):
    """The CA is checked before any packet, so this needs no server; nothing is written to the temp directory."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    params = dict(
        servers=[
            {"host": "nts1.example", "address": "127.0.0.9", "ca_pem": "-----BEGIN CERTIFICATE-----\nxx\n"},
            {"host": "nts2.example", "address": "127.0.0.9", "ca_file": str(tmp_path / "missing.pem")},
        ],
        ca_file=None,
        no_cert_time_check=False,
        timeout=1.0,
        concurrency=4,
        fail_on_error=True,
        min_ok=0,
    )
    out, failure, warnings = nts_client.run_probe_task(params)
    assert warnings == []
    assert out["failed_servers"] == ["nts1.example", "nts2.example"]
    assert [r["stage"] for r in out["results"]] == ["certificate", "certificate"]
    assert out["results"][0]["error"] == (
        "ca_pem for nts1.example: not a PEM certificate (a BEGIN line has no matching END line)"
    )
    assert out["results"][1]["error"] == "ca_file %s for nts2.example: cannot read it (no such file or directory)" % (
        tmp_path / "missing.pem"
    )
    assert "ca_pem for nts1.example" in failure and "nts-probe-ca-" not in failure
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# last lines of defence


def test_unexpected_error_in_a_step_is_that_servers_result(monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(nts_prober, "resolve", broken)
    results = nts_client.probe_many(["a.example", "b.example"], timeout=1)
    for r in results:
        assert (r["ok"], r["stage"]) == (False, "dns"), r
        assert (
            r["error"] == "unexpected RuntimeError during the dns stage: boom (a bug in nts_client, please report it)"
        )


def test_unexpected_os_error_gets_the_stage_in_progress(monkeypatch):
    def reset(*_args, **_kwargs):
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

    monkeypatch.setattr(nts_prober, "tcp_connect", reset)
    r = nts_client.probe("127.0.0.9", 4460, timeout=1)
    assert (r["ok"], r["stage"], r["error"]) == (False, "tcp", "connection reset by peer during the tcp stage")


def load_cli():
    from ansible_collections.nts.chrony.plugins.plugin_utils import probe_cli

    return probe_cli


def test_cli_turns_an_internal_error_into_unknown(monkeypatch, capsys):
    cli = load_cli()

    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli.nts_prober, "probe_many", broken)
    assert cli.run(["a.example"]) == cli.EXIT_UNKNOWN
    err = capsys.readouterr().err
    assert err == "nts-probe: internal error: RuntimeError: boom\n"


def test_cli_help_documents_the_overall_timeout(capsys):
    cli = load_cli()
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert (
        "seconds for the whole probe of one server: DNS, TCP, TLS, NTS-KE and NTP together, not per step" in help_text
    )


def module_documentation():
    """plugins/modules/nts_probe.py's DOCUMENTATION, read without importing the module (it needs Ansible)."""
    tree = ast.parse((CLI.parents[1] / "plugins" / "modules" / "nts_probe.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["DOCUMENTATION"]:
            return yaml.safe_load(node.value.value)
    raise AssertionError("no DOCUMENTATION in nts_probe.py")


def test_module_documents_the_overall_timeout_and_ca_errors():
    doc = module_documentation()
    timeout = " ".join(doc["options"]["timeout"]["description"])
    assert "whole probe of one server" in timeout and "not a per-step limit" in timeout
    assert any("one deadline for the whole probe" in line for line in doc["description"])
    ca_pem = " ".join(doc["options"]["servers"]["suboptions"]["ca_pem"]["description"])
    assert "nothing is written to disk" in ca_pem and "naming C(ca_pem) and the server" in ca_pem
    assert "temporary file" not in ca_pem
