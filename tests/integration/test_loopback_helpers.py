"""Checks of the shared loopback helpers (tests/lib): safety of the chronyd command line, teardown, PKI."""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

import pytest

from tests.lib.chronyd import NtsClient, NtsServer, ServerSpec, _group_members, build_command, unique_loopback_address
from tests.lib.pki import CertificateAuthority, chrony_gid

pytestmark = pytest.mark.loopback


def test_build_command_always_has_x_and_absolute_config():
    cmd = build_command(Path("/tmp/x.conf"))
    assert cmd[:2] == ["chronyd", "-x"]
    with pytest.raises(ValueError, match="absolute"):
        build_command(Path("x.conf"))
    with pytest.raises(ValueError, match="'-s' is not allowed"):
        build_command(Path("/tmp/x.conf"), ["-s"])


def test_unique_addresses_are_not_127_0_0_1():
    addrs = {unique_loopback_address() for _ in range(20)}
    assert len(addrs) == 20
    assert all(a.startswith("127.") and not a.startswith(("127.0.", "127.1.")) for a in addrs)


def test_pki_modes_and_validity(pki_dir):
    ca = CertificateAuthority(pki_dir, name="modes")
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=10)
    cert = ca.issue(
        "expired",
        dns_names=["nts.test"],
        ips=["127.9.9.9"],
        not_before=past,
        not_after=past + datetime.timedelta(days=1),
    )
    key_st = os.stat(cert.key_path)
    assert stat.S_IMODE(key_st.st_mode) == 0o640 and key_st.st_uid == 0 and key_st.st_gid == chrony_gid()
    assert stat.S_IMODE(os.stat(cert.cert_path).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(pki_dir).st_mode) == 0o750
    assert cert.cert.not_valid_after_utc < datetime.datetime.now(datetime.timezone.utc)
    with pytest.raises(ValueError, match="ips: 'nope' is not an IP address"):
        ca.issue("bad", ips=["nope"])
    with pytest.raises(ValueError, match="at least one DNS name or IP"):
        ca.issue("empty")


def test_nts_pair_synchronises_and_teardown_leaves_nothing(nts_pair):
    server, client = nts_pair
    assert "-x" in server.command and "-x" in client.command
    assert server.process.args == server.command
    st = os.stat(client.state_dir)
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_gid == chrony_gid()

    def authenticated_and_reachable(c):
        auth = c.csv("authdata")
        src = c.csv("sources")
        return auth and int(auth[0][2]) > 0 and int(auth[0][8]) > 0 and int(src[0][5], 8) != 0

    client.wait_for(authenticated_and_reachable, timeout=15, what="NTS key exchange + reply")
    pgid = client.process.pid
    client.stop()
    assert client.process.poll() is not None
    assert _group_members(pgid) == []


def test_untrusted_ca_never_completes_key_exchange(pki_dir, chrony_procs):
    good = CertificateAuthority(pki_dir, name="good")
    other = CertificateAuthority(pki_dir, name="other")
    addr = unique_loopback_address()
    server = NtsServer.create(good.issue("srv", ips=[addr]), address=addr)
    chrony_procs.append(server)
    server.start()
    client = NtsClient.create([ServerSpec.for_server(server)], trusted_certs=[other.cert_path])
    chrony_procs.append(client)
    client.start()
    client.wait_for(lambda c: "certificate" in c.log().lower(), timeout=10, what="TLS failure in log")
    auth = client.csv("authdata")[0]
    assert auth[1:6] == ["NTS", "0", "0", "0", "4294967295"]
