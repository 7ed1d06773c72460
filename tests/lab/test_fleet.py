"""The fleet on its own lab (2 internal NTS servers, 6 clients): a staged rollout that meets a fault in its second
client batch stops there, rolls the failed host back byte for byte and never touches the later batches; the server
role rolls back a server whose proof fails; the fleet report shows every host.

This module brings up its OWN lab (``labctl.py up --clients 6 --tier 2``, name from FLEET_TEST_LAB or unique per
run) in a module-scoped fixture and removes it at the end (KEEP_LAB=1 keeps it); it does not use the shared
session ``lab`` fixture. Tests run in file order and build on each other's state.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from ansible_collections.nts.chrony.plugins.module_utils.nts_prober import probe

from tests.lab.conftest import LABCTL, REPO, Lab, load_inventory, recap, run

pytestmark = pytest.mark.lab

CLIENTS = [f"client{i}" for i in range(1, 7)]
TIER = ["tier1", "tier2"]
CONF = "/etc/chrony/chrony.conf"
# batches of the client play: client1 (canary), client2+client3, client4..client6
BATCHES = "[1, 2, 3]"


@pytest.fixture(scope="module")
def fleet():
    name = os.environ.get("FLEET_TEST_LAB", f"cnts-fleet-{os.getpid() % 100000}")
    res = run([*LABCTL, "up", "--name", name, "--clients", "6", "--tier", "2"], timeout=900)
    if res.returncode != 0:
        run([*LABCTL, "down", "--name", name])
        pytest.fail(f"lab {name} did not come up:\n{res.stdout}\n{res.stderr}")
    inventory = REPO / ".lab" / name / "inventory" / "hosts.yml"
    yield Lab(name, inventory, load_inventory(inventory))
    if os.environ.get("KEEP_LAB") != "1":
        run([*LABCTL, "down", "--name", name], check=True)


def sha256(fleet: Lab, host: str, path: str = CONF) -> str | None:
    res = fleet.sh(host, f"sha256sum {path}", check=False)
    return res.stdout.split()[0] if res.returncode == 0 else None


def chrony_installed(fleet: Lab, host: str) -> bool:
    res = fleet.sh(host, "dpkg-query -W -f '${Status}' chrony 2>/dev/null", check=False)
    return "install ok installed" in res.stdout


def ansible_run(fleet: Lab, playbook: str, *args: str) -> tuple[int, str]:
    res = fleet.playbook(playbook, *args, timeout=1500)
    return res.returncode, res.stdout + res.stderr


@pytest.fixture(scope="module")
def rollout(fleet, tmp_path_factory):
    """Pre-existing chrony (distribution config) on the first two batches' hosts, a fault on client3 (its resolver
    sends nts1.lab.test to the rogue-CA server: the certificate is untrusted there, while the controller's pre-flight
    probe, which uses the lab's address map, still sees a good nts1), then the rollout."""
    for host in CLIENTS[:3]:
        fleet.sh(host, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q chrony >/dev/null")
    before = {h: sha256(fleet, h) for h in CLIENTS}
    installed_before = {h: chrony_installed(fleet, h) for h in CLIENTS}
    rogue = fleet.server_address("nts-badca")
    fleet.sh("client3", f"cp /etc/hosts /root/hosts.orig && echo '{rogue} nts1.lab.test' >> /etc/hosts")
    out_dir = tmp_path_factory.mktemp("rollout")
    rc, output = ansible_run(
        fleet,
        "playbooks/rollout.yml",
        "-e", f'{{"chrony_nts_rollout_batches": {BATCHES}}}',
        "-e", f"chrony_nts_rollout_dir={out_dir}",
        "-e", "chrony_nts_rollout_id=fault",
        "-e", "chrony_nts_verify_timeout=20",
    )  # fmt: skip
    fleet.sh("client3", "cp /root/hosts.orig /etc/hosts")
    summary = json.loads((out_dir / "fault" / "summary.json").read_text())
    return {
        "rc": rc,
        "output": output,
        "before": before,
        "installed_before": installed_before,
        "summary": summary,
        "dir": out_dir / "fault",
    }


def test_rollout_stops_at_the_failing_batch(rollout):
    s = rollout["summary"]
    assert rollout["rc"] != 0, "a stopped rollout must fail the run"
    assert s["outcome"] == "stopped", rollout["output"][-5000:]
    assert [f["host"] for f in s["failed"]] == ["client3"]
    assert sorted(s["changed"]) == sorted(["tier1", "tier2", "client1", "client2"])
    assert s["untouched"] == ["client4", "client5", "client6"]
    plays = [(b["play"], b["hosts"], b["failed"], b["stopped_rollout"]) for b in s["batches"]]
    assert plays == [
        ("servers", ["tier1"], [], False),
        ("servers", ["tier2"], [], False),
        ("clients", ["client1"], [], False),
        ("clients", ["client2", "client3"], ["client3"], True),
    ]
    assert all(b["wall_time"] > 0 for b in s["batches"])
    records = {r["host"]: r for r in s["hosts"]}
    assert records["tier1"]["installed"] is True and records["client1"]["installed"] is False  # pre-installed
    assert records["client1"]["config_before"] == rollout["before"]["client1"] != records["client1"]["config_after"]
    # why: the untrusted certificate, in chronyd's own words, and the rollback
    reason = s["failed"][0]["reason"]
    assert "nts1.lab.test" in reason and "certificate" in reason.lower() and "Rolled back" in reason
    md = (rollout["dir"] / "summary.md").read_text()
    assert "STOPPED" in md and "client4, client5, client6" in md


def test_failed_host_is_rolled_back_byte_for_byte(fleet, rollout):
    assert rollout["before"]["client3"] is not None  # chrony's distribution config existed before
    assert sha256(fleet, "client3") == rollout["before"]["client3"]
    (failed,) = rollout["summary"]["failed"]
    assert failed["rolled_back"] is True
    assert failed["config_before"] == failed["config_after"] == rollout["before"]["client3"]


def test_later_batches_are_untouched(fleet, rollout):
    for host in ["client4", "client5", "client6"]:
        assert not rollout["installed_before"][host]
        assert not chrony_installed(fleet, host), f"{host} is in a later batch and must not have been touched"
        assert sha256(fleet, host) is None


def test_converted_hosts_use_the_tier(fleet, rollout):
    for host in ["client1", "client2"]:
        conf = fleet.sh(host, f"cat {CONF}").stdout
        assert "server tier1.lab.test " in conf and "server tier2.lab.test " in conf, conf
        assert sha256(fleet, host) != rollout["before"][host]
    for host in TIER:
        conf = fleet.sh(host, f"cat {CONF}").stdout
        assert "ntsserverkey /etc/chrony/nts-server/server.key" in conf and "local stratum 8" in conf
        modes = fleet.sh(host, "stat -c '%n %a %U %G' /etc/chrony/nts-server /etc/chrony/nts-server/*").stdout
        assert "/etc/chrony/nts-server 750 root _chrony" in modes
        assert "/etc/chrony/nts-server/server.key 640 root _chrony" in modes
        assert "/etc/chrony/nts-server/server.crt 644 root _chrony" in modes
        assert "-x" in fleet.sh(host, "cat /proc/$(pidof chronyd | cut -d' ' -f1)/cmdline | tr '\\0' ' '").stdout
        # the key never appears in Ansible's output
        key = Path(fleet.data["all"]["children"]["chrony_nts_servers"]["hosts"][host]["lab_tier_key_file"])
        body = "".join(key.read_text().splitlines()[1:-1])
        assert body[:40] not in rollout["output"]


def test_server_with_a_failing_proof_is_rolled_back(fleet, rollout):
    """A change (new ntsport) whose proof fails (the proof expects a name the certificate does not hold) is undone by
    the same chrony_nts_apply call: chrony.conf byte for byte, and the server serves NTS on its old port again."""
    before = sha256(fleet, "tier1")
    rc, output = ansible_run(
        fleet,
        "site.yml",
        "--limit", "tier1",
        "-e", "chrony_nts_server_ntsport=4461",
        "-e", "chrony_nts_server_name=not-in-the-cert.lab.test",
        "-e", "chrony_nts_server_prove_timeout=3",
    )  # fmt: skip
    assert rc != 0
    # one transaction: the server proof inside chrony_nts_apply failed, and the same call rolled everything back
    assert "chrony_nts failed at verify: the NTS server is not proven" in output, output[-4000:]
    assert "not-in-the-cert.lab.test does not resolve on this host" in output, output[-4000:]
    assert "Rolled back: put back /etc/chrony/chrony.conf" in output
    assert sha256(fleet, "tier1") == before
    tier1 = fleet.data["all"]["children"]["chrony_nts_servers"]["hosts"]["tier1"]
    result = probe(
        tier1["lab_tier_name"], 4460, address=tier1["ansible_host"], ca_file=fleet.vars["lab_ca_file"], timeout=5
    )
    assert result["ok"], result


def chronyd_starts_since(fleet: Lab, host: str, since: str) -> int:
    out = fleet.sh(host, f"journalctl -u chrony --since '{since}' --no-pager -o cat", check=False).stdout
    return sum(1 for line in out.splitlines() if line.startswith("chronyd version") and "starting" in line)


def tier_view(fleet: Lab, host: str, name: str) -> dict:
    """One client's view of tier server `name`: whether the client is synchronised (tracking), and the source's key
    ID, NAK count, cookies (authdata) and valid replies so far (ntpdata, paired with authdata by position)."""
    out = fleet.sh(host, "chronyc -c tracking; echo ==; chronyc -c -N authdata; echo ==; chronyc -c ntpdata").stdout
    tracking, auth, ntp = (part.strip().splitlines() for part in out.split("=="))
    view = {"synchronised": tracking[0].split(",")[13] != "Not synchronised", "at": time.monotonic()}
    for arow, nrow in zip((r.split(",") for r in auth), (r.split(",") for r in ntp)):
        if arow[0] == name:
            view |= {"keyid": int(arow[2]), "naks": int(arow[7]), "cookies": int(arow[8]), "valid_rx": int(nrow[32]),
                     "authenticated": nrow[27] == "Yes"}  # fmt: skip
    return view


class Sampler(threading.Thread):
    """Samples tier_view on some clients every half second until stopped."""

    def __init__(self, fleet: Lab, hosts: list[str], name: str):
        super().__init__(daemon=True)
        self.fleet, self.hosts, self.name = fleet, hosts, name
        self.samples: dict[str, list[dict]] = {h: [] for h in hosts}
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            for host in self.hosts:
                try:
                    self.samples[host].append(tier_view(self.fleet, host, self.name))
                except (AssertionError, IndexError, ValueError) as exc:
                    self.errors.append(f"{host}: {exc}")
            self.halt.wait(0.5)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def test_certificate_rotation_restarts_the_server_once_and_serves_the_new_certificate(fleet, rollout, tmp_path):
    """A new key and certificate (same CA, longer validity) for tier2: one chronyd restart loads them, the probe from
    the controller sees the new certificate, and the next run changes nothing and restarts nothing.

    Continuity: the clients that use tier2 (client1, client2) are sampled every half second through the rotation.
    They stay synchronised in every sample; tier2 keeps answering them with authenticated replies after the
    restart, and their cookies stay valid (no NAK, no new key exchange), because the server reloads its NTS keys
    from ntsdumpdir and its measurements from dumpdir (-r)."""
    sys.path.insert(0, str(REPO / "lab"))
    from pki import Authority

    pki_dir = REPO / ".lab" / fleet.name / "pki"
    ca = Authority.load((pki_dir / "ca.key").read_bytes(), (pki_dir / "ca.pem").read_bytes())
    tier2 = fleet.data["all"]["children"]["chrony_nts_servers"]["hosts"]["tier2"]
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    key, cert = ca.issue([tier2["lab_tier_name"]], [tier2["ansible_host"]], now - datetime.timedelta(hours=2),
                         now + datetime.timedelta(days=20))  # fmt: skip
    (tmp_path / "server.key").write_bytes(key)
    (tmp_path / "server.key").chmod(0o600)
    (tmp_path / "server.crt").write_bytes(cert)
    new = ["-e", f"chrony_nts_server_key_file={tmp_path / 'server.key'}",
           "-e", f"chrony_nts_server_cert_file={tmp_path / 'server.crt'}"]  # fmt: skip

    users = ["client1", "client2"]  # converted by the rollout: they use tier1 and tier2
    name = tier2["lab_tier_name"]
    before = {host: tier_view(fleet, host, name) for host in users}
    assert all(view["synchronised"] and view.get("authenticated") for view in before.values()), before
    sampler = Sampler(fleet, users, name)
    since = fleet.sh("tier2", "date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    time.sleep(1)  # journalctl --since has a one-second resolution
    sampler.start()
    try:
        rc, output = ansible_run(fleet, "site.yml", "--limit", "tier2", *new)
        restarted_at = time.monotonic()
        # after the restart: tier2's valid replies move on again, authenticated, on every client that uses it
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            now_views = {host: sampler.samples[host][-1] for host in users if sampler.samples[host]}
            if len(now_views) == len(users) and all(
                v["at"] > restarted_at and v.get("authenticated") and v["valid_rx"] > before[h]["valid_rx"] + 2
                for h, v in now_views.items()
            ):
                break
            time.sleep(0.5)
    finally:
        sampler.stop()
    assert rc == 0, output[-4000:]
    assert chronyd_starts_since(fleet, "tier2", since) == 1, output[-3000:]
    assert not sampler.errors, sampler.errors
    for host in users:
        samples = sampler.samples[host]
        last = samples[-1]
        print(
            f"{host}: {len(samples)} samples over {samples[-1]['at'] - samples[0]['at']:.1f} s through the rotation; "
            f"synchronised in {sum(v['synchronised'] for v in samples)}; tier2 key ID {before[host]['keyid']} -> "
            f"{last['keyid']}, NAKs {before[host]['naks']} -> {last['naks']}, valid replies "
            f"{before[host]['valid_rx']} -> {last['valid_rx']}"
        )
        assert len(samples) >= 5, samples
        assert all(v["synchronised"] for v in samples), [v for v in samples if not v["synchronised"]]
        assert last["at"] > restarted_at and last["authenticated"], (host, last)
        assert last["valid_rx"] > before[host]["valid_rx"] + 2, (host, before[host], last)
        # the cookies the client held before the restart are still accepted: no NAK, no new key exchange
        assert last["naks"] == before[host]["naks"] and last["keyid"] == before[host]["keyid"], (before[host], last)
    result = probe(
        tier2["lab_tier_name"], 4460, address=tier2["ansible_host"], ca_file=fleet.vars["lab_ca_file"], timeout=5
    )
    assert result["ok"], result
    assert result["cert_not_after"] == (now + datetime.timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ")

    since = fleet.sh("tier2", "date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    time.sleep(1)
    rc, output = ansible_run(fleet, "site.yml", "--limit", "tier2", *new)
    assert rc == 0, output[-4000:]
    assert recap(output)["tier2"]["changed"] == 0, output[-3000:]
    assert chronyd_starts_since(fleet, "tier2", since) == 0


def test_report_shows_every_host(fleet, rollout, tmp_path):
    rc, output = ansible_run(fleet, "playbooks/report.yml", "-e", f"chrony_nts_report_dir={tmp_path}")
    assert rc == 0, output[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    hosts = {h["name"]: h for h in report["hosts"]}
    assert sorted(hosts) == sorted(CLIENTS + TIER)
    for name in [*TIER, "client1", "client2"]:
        h = hosts[name]
        assert h["status"] == "healthy", (name, h["failures"])
        assert h["offset"] is not None and h["synchronised"] is True
        for src in h["sources"]:
            assert src["mode"] == "NTS" and src["cookies"] > 0 and src["naks"] == 0 and src["reach"] > 0
            assert src["last_key_exchange"] is not None
    assert {s["name"] for s in hosts["client1"]["sources"]} >= {"tier1.lab.test", "tier2.lab.test", "nts1.lab.test"}
    for name in TIER:
        assert hosts[name]["server"]["nts_ke_accepted"] >= 1, hosts[name]["server"]
    assert hosts["client3"]["status"] != "healthy" and hosts["client3"]["failures"]
    for name in ["client4", "client5", "client6"]:
        assert hosts[name]["status"] == "unknown" and hosts[name]["failures"]
    summary = report["summary"]
    assert (summary["hosts"], summary["healthy"]) == (8, 4)
    page = (tmp_path / "report.html").read_text()
    assert "<svg" in page and "<script" not in page
    for name in hosts:
        assert f"id='host-{name}'" in page
    svg = ET.parse(tmp_path / "offsets.svg").getroot()  # noqa: S314 - written by this test's report run
    drawn = [g.get("data-host") for g in svg.iter("{http://www.w3.org/2000/svg}g")]
    assert drawn == sorted(hosts)
    assert (tmp_path / "report.md").read_text().count("\n## ") == 8


def test_a_batch_of_unreachable_hosts_is_judged_and_summarised(fleet, rollout, tmp_path):
    """Every host of the batch is down: the run still judges the batch, stops, writes its summary and fails."""
    fleet.podman("stop", "-t", "1", fleet.container("client6"))
    try:
        rc, output = ansible_run(
            fleet,
            "playbooks/rollout.yml",
            "--limit", "client6,localhost",
            "-e", '{"chrony_nts_rollout_batches": [1]}',
            "-e", f"chrony_nts_rollout_dir={tmp_path}",
            "-e", "chrony_nts_rollout_id=lost",
        )  # fmt: skip
    finally:
        fleet.podman("start", fleet.container("client6"))
    assert rc != 0, output[-3000:]
    summary = json.loads((tmp_path / "lost" / "summary.json").read_text())
    assert summary["outcome"] == "stopped" and summary["untouched"] == [], summary  # localhost is not a rollout host
    failed = {f["host"]: f for f in summary["failed"]}
    assert list(failed) == ["client6"], summary
    assert failed["client6"]["reason"].startswith("unreachable"), failed
    batches = json.loads((tmp_path / "lost" / "batches.json").read_text())
    assert batches[-1]["failed"] == ["client6"] and batches[-1]["stopped"] is True, batches
    host = json.loads((tmp_path / "lost" / "hosts" / "client6.json").read_text())
    assert host["status"] == "failed" and host["rolled_back"] is False and host["changed"] is False, host

    # The summary can be rebuilt from the record alone (after an interrupted run): same content, nothing deployed.
    (tmp_path / "lost" / "summary.json").unlink()
    rc, output = ansible_run(
        fleet,
        "playbooks/rollout.yml",
        "--tags", "summary",
        "--limit", "client6,localhost",
        "-e", f"chrony_nts_rollout_dir={tmp_path}",
        "-e", "chrony_nts_rollout_id=lost",
    )  # fmt: skip
    assert rc != 0, output[-3000:]  # still a stopped rollout
    assert "Run the role" not in output
    assert json.loads((tmp_path / "lost" / "summary.json").read_text()) == summary
