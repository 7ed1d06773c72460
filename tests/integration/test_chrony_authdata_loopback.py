"""Run the chrony_authdata module for real (``ansible localhost -m chrony_authdata``) against loopback chronyd -x
NTS servers and clients."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.lib.ansible_local import CWD, LOCAL, module_env
from tests.lib.chronyd import NtsClient, NtsServer, ServerSpec, unique_loopback_address
from tests.lib.pki import CertificateAuthority

pytestmark = pytest.mark.loopback

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / ".venv" / "bin" / "ansible"
ENV = module_env()


def run_module(args: str, check: bool = False, wall_limit: float = 120) -> tuple[dict, float]:
    """Run the module through the ansible CLI; return (task result for localhost, wall-clock seconds)."""
    cmd = [str(ANSIBLE), "localhost", *LOCAL, "-m", "nts.chrony.chrony_authdata", "-a", args]
    if check:
        cmd.append("--check")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=wall_limit, cwd=CWD)
    wall = time.monotonic() - t0
    try:
        out = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"ansible printed no JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return out["plays"][0]["tasks"][0]["hosts"]["localhost"], wall


def start_pair(ca, chrony_procs, trusted=None, options="iburst minpoll 0 maxpoll 4"):
    addr = unique_loopback_address()
    server = NtsServer.create(ca.issue(f"srv-{addr}", ips=[addr]), address=addr)
    chrony_procs.append(server)
    server.start()
    client = NtsClient.create([ServerSpec.for_server(server, options=options)], trusted_certs=[trusted or ca.cert_path])
    chrony_procs.append(client)
    client.start()
    return server, client


def test_healthy_source_is_verified(ca, chrony_procs):
    server, client = start_pair(ca, chrony_procs)
    res, _ = run_module(f"socket={client.socket_path} timeout=20 sources={server.address}")
    assert not res.get("failed"), res.get("msg")
    assert res["verified"] is True and res["changed"] is False
    assert isinstance(res["elapsed"], float) and 0 <= res["elapsed"] < 20 and res["polls"] >= 1
    assert res["healthy_sources"] == [server.address] and res["unhealthy_sources"] == []
    (src,) = res["sources"]
    assert (src["mode"], src["aead"], src["key_length"], src["naks"]) == ("NTS", 15, 256, 0)
    assert src["key_id"] >= 1 and src["cookies"] >= 1 and src["reach"] > 0 and src["authenticated"] is True
    assert src["reach_octal"] == format(src["reach"], "o")
    assert res["chrony_version"]["nts"] is True and res["tracking"]["leap_status"] in ("Normal", "Not synchronised")


def test_check_mode_still_verifies(ca, chrony_procs):
    _, client = start_pair(ca, chrony_procs)
    res, _ = run_module(f"socket={client.socket_path} timeout=20 require_selected=true", check=True)
    assert not res.get("failed"), res.get("msg")
    assert res["verified"] is True and res["changed"] is False
    assert res["sources"][0]["state"] in ("*", "+")


def test_untrusted_ca_fails_in_bounded_time_naming_source_and_cause(ca, pki_dir, chrony_procs):
    unrelated = CertificateAuthority(pki_dir, name="unrelated")
    server, client = start_pair(ca, chrony_procs, trusted=unrelated.cert_path)
    res, wall = run_module(f"socket={client.socket_path} timeout=3 interval=0.2")
    assert res["failed"] is True and res["verified"] is False
    assert 3 <= res["elapsed"] < 4.5 and wall < 15
    assert f"{server.address}: NTS key exchange never succeeded" in res["msg"]
    assert res["unhealthy_sources"][0]["name"] == server.address
    assert res["sources"][0]["key_id"] == 0 and res["sources"][0]["last_key_exchange"] is None
    assert "certificate issuer is unknown" in client.log()


def test_saved_cookies_do_not_hide_a_dead_server(ca, chrony_procs):
    # default minpoll: the restarted client spends its saved cookies slowly, so Cook stays > 0 while unreachable
    server, client = start_pair(ca, chrony_procs, options="iburst")
    first, _ = run_module(f"socket={client.socket_path} timeout=20")
    assert first["verified"] is True, first.get("msg")
    server.stop()
    client.restart(keep_cookies=True)
    res, _ = run_module(f"socket={client.socket_path} timeout=2")
    assert res["failed"] is True
    (src,) = res["sources"]
    assert src["cookies"] > 0 and src["key_id"] >= 1 and src["reach"] == 0
    assert src["cause"].startswith("unreachable: no reply on UDP port"), src["cause"]
    assert "during this check (" in src["cause"] and "none answered" in src["cause"]
    assert "unreachable" in res["msg"] and server.address in res["msg"]


def test_required_source_not_configured(ca, chrony_procs):
    _, client = start_pair(ca, chrony_procs)
    res, _ = run_module(f"socket={client.socket_path} timeout=3 sources=ntp.nts-test.invalid")
    assert res["failed"] is True
    causes = {u["name"]: u["cause"] for u in res["unhealthy_sources"]}
    assert causes["ntp.nts-test.invalid"].startswith("not configured in the running chronyd")
    assert res["healthy_sources"] != []  # the configured loopback source itself is fine
    assert "not configured in the running chronyd" in res["msg"]


def test_report_only_mode_does_not_fail(ca, pki_dir, chrony_procs):
    unrelated = CertificateAuthority(pki_dir, name="unrelated2")
    _, client = start_pair(ca, chrony_procs, trusted=unrelated.cert_path)
    res, _ = run_module(f"socket={client.socket_path} timeout=0.5 fail_on_unhealthy=false")
    assert not res.get("failed") and res["verified"] is False
    assert "NTS key exchange never succeeded" in res["msg"]


def test_no_daemon_on_socket_fails_with_hint(pki_dir):
    res, _ = run_module(f"socket={pki_dir}/absent.sock timeout=0.5")
    assert res["failed"] is True and res["polls"] >= 2
    assert "chronyd is not running" in res["msg"] and "become: true" in res["msg"]


def test_dead_server_is_red_without_restart_although_still_selected(ca, chrony_procs):
    """The stale-proof case: chronyd keeps a dead server selected with its reach and cookies; the fresh check is red
    within its timeout, naming the missing replies."""
    server, client = start_pair(ca, chrony_procs, options="iburst")
    first, _ = run_module(f"socket={client.socket_path} timeout=20 sources={server.address}")
    assert first["verified"] is True, first.get("msg")
    client.wait_for(lambda c: c.csv("sources")[0][1] == "*", timeout=20, what="source selected")
    server.stop()
    res, wall = run_module(f"socket={client.socket_path} timeout=4 sources={server.address}")
    assert res["failed"] is True and res["verified"] is False
    (src,) = res["sources"]
    # history still says healthy: selected, reachable, cookies left
    assert src["state"] == "*" and src["reach"] > 0 and src["cookies"] > 0 and src["naks"] == 0
    assert src["cause"].startswith("unreachable: no reply on UDP port"), src["cause"]
    assert res["bursts"] >= 1 and wall < 4 + 10
    # the same history judged the old way is green: what the fresh check exists for
    old, _ = run_module(f"socket={client.socket_path} timeout=1 fresh=false sources={server.address}")
    assert old["verified"] is True


def test_fresh_check_is_fast_with_default_polling(ca, chrony_procs):
    """A converged source at default polling (poll 6: 64 s between requests) is proven in well under a second by
    the burst, and the counter it relies on really moved."""
    server, client = start_pair(ca, chrony_procs, options="iburst")
    client.wait_for(lambda c: c.csv("sources")[0][1] in "*+", timeout=20, what="source selected")
    time.sleep(2.5)  # past the 2 s burst spacing after the last iburst request
    before = int(client.csv("ntpdata")[0][32])
    res, _ = run_module(f"socket={client.socket_path} timeout=10 sources={server.address}")
    assert res["verified"] is True, res.get("msg")
    assert res["elapsed"] < 1.0 and res["bursts"] == 1
    (src,) = res["sources"]
    assert src["total_valid_rx"] > before and src["authenticated"] is True
