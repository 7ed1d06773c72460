"""The lab itself: real NTS servers behind a private CA, systemd hosts without clock control, faults on demand,
and a teardown that leaves nothing behind."""

from __future__ import annotations

import json
import socket
import ssl
import time
from pathlib import Path

import nts_client
import pytest

from tests.lab.conftest import LABCTL, REPO, load_inventory, run

pytestmark = pytest.mark.lab

CAP_SYS_TIME_BIT = 25


def tls_session(address: str, name: str, ca_file: str) -> tuple[str, str | None]:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.set_alpn_protocols(["ntske/1"])
    with socket.create_connection((address, 4460), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=name) as tls:
        return tls.version(), tls.selected_alpn_protocol()


@pytest.mark.parametrize("server", ["nts1", "nts2", "nts3", "ntpsec1"])
def test_servers_answer_nts_ke_over_tls13_with_the_private_ca(lab, server):
    info = lab.vars["lab_servers"][server]
    version, alpn = tls_session(info["address"], info["name"], lab.vars["lab_ca_file"])
    assert (version, alpn) == ("TLSv1.3", "ntske/1")
    result = nts_client.probe(info["name"], address=info["address"], ca_file=lab.vars["lab_ca_file"], timeout=5)
    assert result["ok"], result
    assert result["aead"] == 15
    assert result["cookies"] == 8
    assert result["cookie_length"] == (104 if info["kind"] == "ntpsec" else 100)


def test_a_client_that_does_not_trust_the_ca_gets_no_cookies(lab):
    info = lab.vars["lab_servers"]["nts1"]
    result = nts_client.probe(info["name"], address=info["address"], ca_file=lab.vars["lab_rogue_ca_file"], timeout=5)
    assert not result["ok"]
    assert result["stage"] == "certificate"
    assert not result["cookies"]
    # A real chrony client, run one-shot (-Q never touches a clock) from another container of the lab network.
    one_shot = "chronyd -x -Q -t 6 'server {} iburst nts maxsamples 1' {} 2>&1; echo rc=$?"
    distrusting = lab.sh("nts2", one_shot.format(info["name"], ""), check=False).stdout
    assert "rc=0" not in distrusting
    assert "certificate" in distrusting.lower(), distrusting
    trusting = lab.sh("nts2", one_shot.format(info["name"], "'ntstrustedcerts /etc/lab/server.crt'"), check=False)
    assert "rc=0" in trusting.stdout, trusting.stdout


@pytest.mark.parametrize(("server", "reason"), [("nts-badca", "issuer"), ("nts-expired", "expired")])
def test_faulty_certificates_are_refused(lab, server, reason):
    info = lab.vars["lab_servers"][server]
    result = nts_client.probe(info["name"], address=info["address"], ca_file=lab.vars["lab_ca_file"], timeout=5)
    assert not result["ok"]
    assert result["stage"] == "certificate"
    assert reason in result["error"].lower(), result["error"]


def test_every_chronyd_runs_without_clock_control(lab):
    seen = 0
    for short, info in lab.vars["lab_servers"].items():
        if info["kind"] != "chrony":
            continue
        args = lab.sh(short, "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done").stdout
        chronyds = [line for line in args.splitlines() if line.split()[:1] == ["chronyd"]]
        assert chronyds, f"no chronyd in {short}"
        for line in chronyds:
            assert " -x" in f" {line} ", line
            seen += 1
    # ... and none on this machine without -x either (the tests' own loopback daemons included).
    # (read from /proc: a chronyd that is exiting right now has an empty command line, and pgrep would print only its
    # name; such a process steers nothing)
    host = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and Path(argv[0].decode(errors="replace")).name == "chronyd":
            host.append(" ".join(a.decode(errors="replace") for a in argv))
    assert host and all(" -x" in f" {line} " for line in host), host
    assert seen >= 3


def test_no_lab_container_can_set_the_clock(lab):
    names = lab.podman("ps", "--filter", f"label=io.chrony-nts.lab={lab.name}", "--format", "{{.Names}}").stdout.split()
    assert len(names) == len(lab.vars["lab_servers"]) + len(lab.clients)
    for name in names:
        caps = json.loads(lab.podman("inspect", name).stdout)[0]["EffectiveCaps"] or []
        assert "CAP_SYS_TIME" not in caps, name
        status = lab.podman("exec", name, "cat", "/proc/1/status").stdout
        bounding = int(next(x for x in status.splitlines() if x.startswith("CapBnd:")).split()[1], 16)
        assert not bounding & (1 << CAP_SYS_TIME_BIT), name


def test_clients_are_systemd_hosts_that_ansible_reaches_over_ssh(lab):
    res = run(
        [str(REPO / ".venv/bin/ansible"), "-i", str(lab.inventory), "chrony_nts_clients", "-m", "ansible.builtin.ping"],
        cwd=REPO,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(lab.clients)
    for client in lab.clients:
        out = lab.sh(client, "readlink /proc/1/exe; ls /var/cache/apt/archives/ | grep -c '^chrony_'").stdout.split()
        assert out[0].endswith("systemd"), out
        assert out[1] == "1", "chrony's package must be cached in the image for an offline install"


def test_faults_can_be_injected_and_lifted(lab):
    info = lab.vars["lab_servers"]["nts2"]

    def probe():
        return nts_client.probe(info["name"], address=info["address"], ca_file=lab.vars["lab_ca_file"], timeout=2)

    lab.fault("block", "nts2", "ke")
    try:
        blocked = probe()
    finally:
        lab.fault("unblock", "nts2")
    assert not blocked["ok"] and blocked["stage"] == "tcp", blocked
    assert probe()["ok"]

    lab.fault("stop", "nts2")
    try:
        stopped = probe()
    finally:
        lab.fault("start", "nts2")
    assert not stopped["ok"] and stopped["stage"] == "tcp", stopped
    deadline = time.monotonic() + 10
    while not (result := probe())["ok"] and time.monotonic() < deadline:
        time.sleep(0.3)
    assert result["ok"], result


def test_lab_up_is_idempotent_and_down_leaves_nothing_behind(lab):
    name = f"{lab.name}-life"
    labdir = REPO / ".lab" / name
    try:
        run([*LABCTL, "up", "--name", name, "--clients", "1"], check=True)
        ids = lab.podman("ps", "-a", "-q", "--no-trunc", "--filter", f"label=io.chrony-nts.lab={name}").stdout.split()
        inventory = load_inventory(labdir / "inventory" / "hosts.yml")
        run([*LABCTL, "up", "--name", name, "--clients", "1"], check=True)
        again = lab.podman("ps", "-a", "-q", "--no-trunc", "--filter", f"label=io.chrony-nts.lab={name}").stdout.split()
        assert sorted(ids) == sorted(again) and len(ids) == len(lab.vars["lab_servers"]) + 1
        assert load_inventory(labdir / "inventory" / "hosts.yml") == inventory
    finally:
        run([*LABCTL, "down", "--name", name], check=True)
    assert lab.podman("ps", "-a", "-q", "--filter", f"label=io.chrony-nts.lab={name}").stdout.strip() == ""
    assert lab.podman("network", "exists", f"{name}-net", check=False).returncode != 0
    assert not labdir.exists()
    assert run(["pgrep", "-f", f".lab/{name}/"]).stdout.strip() == ""
