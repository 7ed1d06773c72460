"""Day-2 assurance end to end: the role's check timer -> node_exporter's textfile collector -> Prometheus with the
shipped alert rules -> the right alert fires for each fault, and nothing fires on a healthy lab or on a server key
rotation.

The lab: this module's OWN small lab (``labctl.py up --clients 2 --tier 1``: client1, client2, tier1; name from
MONITORING_TEST_LAB or unique per run; KEEP_LAB=1 keeps it), converged with site.yml and
``chrony_nts_monitor_interval=5``. Debian's prometheus-node-exporter comes with the lab's host image (enabled,
:9100, textfile directory /var/lib/prometheus/node-exporter: Debian's built-in default). Clients use nts1, nts2,
ntpsec1 and tier1; tier1 uses nts1 and nts2. Every host therefore depends on nts1.

Prometheus: Debian's ``prometheus`` binary of the controller, run by this module as a child process (never as the
machine's service) with its own configuration and TSDB in a temporary directory, listening on 127.0.0.1 and a free
port, scraping only the lab hosts' node_exporter at their lab addresses on :9100 (``collect[]=textfile``: only the
check's metrics) every 2 s, evaluating rules every 2 s; it is killed at teardown.

Its rules are a copy of monitoring/prometheus/chrony-nts-alerts.yml in which ONLY these change (``shorten_rules``; the
expressions, labels and annotations are the shipped ones, asserted):

- every ``for:`` is scaled by INTERVAL / 60 (the check runs every 5 s here instead of 60 s, so an alert still needs
  the same NUMBER of consecutive failing checks as in production): 5m -> 25 s, 10m -> 50 s, 15m -> 75 s, 1h -> 300 s;
- the staleness threshold of ChronyNtsCheckStale, ``3 * 60`` s, becomes ``3 * INTERVAL + CHECK_TIMEOUT`` = 35 s: a
  check with a dead source takes its whole 20 s timeout, a third of the production interval (3 x 60 = 180 s covers
  that gap of 80 s) but four times the test's, so three test intervals alone would call a slow check stale.

What each case proves (DETECT, SLACK and the other bounds are the constants below; every measured time is printed at
the end of the module, with -s):

- healthy lab, HEALTHY_WINDOW = 90 s (longer than every scaled ``for:`` but the certificate warning's 300 s): no
  alert fired, and every check of every host in the window was green (min_over_time of the verdict and of each
  source's authenticated_now is 1, about 15 checks per host), which is stronger than "nothing fired"; pending alerts,
  if any, are printed;
- nts1 stopped (``fault block nts1 all``): ChronyNtsSourceUnauthenticated{source="nts1.lab.test"} fires on every
  host using nts1 (client1, client2, tier1) within its ``for:`` + DETECT + SLACK; only per-source alerts of nts1
  fire and ChronyNtsNoAuthenticatedTime is not even pending (every host keeps other authenticated sources). After
  the unblock every alert resolves once chronyd makes its next key exchange: chronyd spaces failed ones (connection
  timed out) 2^(4 + attempts - 1) s apart, so the bound is that, with the attempts read from authdata at the unblock,
  + DETECT + SLACK;
- key rotation on nts1 (its ntskeys removed, container restarted: the clients' cookies no longer decrypt, the
  server answers them with an NTS NAK and the clients make a new key exchange): no alert fires (none seen by
  /api/v1/alerts polled every second, none in ALERTS over the whole window), from the rotation until every host
  using nts1 has made a new key exchange (its key-exchange counter went up in Prometheus), nothing is pending, every
  check is green, and two more check intervals passed. With the lab's 1 s polling chronyd gets the NAK and keys
  again within about a second, so a check may never see the NAK: the NAK and unauthenticated readings the checks
  did see are printed;
- tier1 re-deployed with a certificate from the lab CA valid for 2 days: ChronyNtsServerCertificateExpiringCritical
  fires for tier1 within its ``for:`` + DETECT + SLACK after the run, and ChronyNtsServerCertificateExpiring is
  pending (its scaled ``for:`` of 300 s is not waited for: same expression form, 4 more minutes); site.yml with
  tier1's baseline certificate again: both resolve;
- UDP 123 dropped on nts1 (``fault block nts1 ntp``): the same alert fires as for the stopped server. It does NOT
  resolve by itself soon after the unblock, and rightly so: the hosts' cookies ran out on requests nobody answered,
  their key exchange with nts1 succeeded (TCP 4460 open) but no valid NTP reply followed, and chronyd then waits
  2^(10 + attempts - 1) s (>= 1024 s, NKE_RETRY_FACTOR2_TLS) before the next one. The test checks the alert still
  fires 30 s after the unblock with no cookie for nts1 on any host (and prints when chronyd's next key exchange is
  due), then restarts chronyd on the three hosts (the operator's remedy once the network is fixed) and the alerts
  resolve within DETECT + SLACK. (Left alone, the lab recovered 1024 s after that key exchange, to the second.)

The baseline certificate of tier1 is one from the lab CA valid for 20 days, not the lab's own (lab/pki.py issues
server certificates for 7 days, inside the shipped 14-day warning: with it, a healthy lab would warn).
"""

from __future__ import annotations

import ctypes
import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.lab.conftest import LABCTL, REPO, Lab, load_inventory, run

pytestmark = pytest.mark.lab

INTERVAL = 5  # s, chrony_nts_monitor_interval in this lab (production default 60)
CHECK_TIMEOUT = 20  # s, the check's own timeout (nts_check's default; the role passes it unchanged)
SCALE = INTERVAL / 60
SCRAPE = 2  # s, Prometheus' scrape and rule evaluation interval
# The longest a failing check takes to show as a rule result: the next timer run, the check's whole timeout (a dead
# source), a scrape and an evaluation.
DETECT = INTERVAL + CHECK_TIMEOUT + 2 * SCRAPE
SLACK = 30  # s, for a loaded 2-core machine (systemd timers, podman exec and Prometheus share it)
# Back to quiet after a change that needs no new key exchange to recover (or one chronyd makes at once): DETECT twice
RESOLVE_BOUND = 2 * DETECT + SLACK
HEALTHY_WINDOW = 90  # s
RULES = REPO / "monitoring" / "prometheus" / "chrony-nts-alerts.yml"
HOSTS = ["client1", "client2", "tier1"]
NTS1 = "nts1.lab.test"
# The alerts a dead (or deaf) source may legitimately raise: all per source, all for that source.
SOURCE_ALERTS = {"ChronyNtsSourceUnauthenticated", "ChronyNtsSourceNoCookies", "ChronyNtsKeyExchangeFailing",
                 "ChronyNtsSourceNak"}  # fmt: skip
TIMINGS: dict[str, dict] = {}


# ------------------------------------------------------------------------------------------------- the test's rules
def seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)([smhd])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


def shorten_rules(shipped: str) -> tuple[str, dict]:
    """The shipped rules with every ``for:`` scaled by SCALE and the staleness threshold shortened; returns the YAML
    and {alert: (shipped for, test for)}."""
    doc = yaml.safe_load(shipped)
    changes = {}
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                new = max(1, round(seconds(rule["for"]) * SCALE))
                changes[rule["alert"]] = (rule["for"], f"{new}s")
                rule["for"] = f"{new}s"
            if rule.get("alert") == "ChronyNtsCheckStale":
                stale = "time() - chrony_nts_last_check_timestamp_seconds > 3 * 60"
                assert rule["expr"] == stale, rule["expr"]  # the shipped threshold this test shortens
                rule["expr"] = stale.replace("3 * 60", f"({3 * INTERVAL} + {CHECK_TIMEOUT})")
    return yaml.safe_dump(doc, sort_keys=False, width=1000), changes


def test_the_test_rules_change_only_for_and_the_staleness_threshold(tmp_path):
    shipped = RULES.read_text()
    text, changes = shorten_rules(shipped)
    old, new = yaml.safe_load(shipped), yaml.safe_load(text)
    for g_old, g_new in zip(old["groups"], new["groups"]):
        assert len(g_old["rules"]) == len(g_new["rules"])
        for r_old, r_new in zip(g_old["rules"], g_new["rules"]):
            if r_old["alert"] == "ChronyNtsCheckStale":
                assert r_new["expr"] == r_old["expr"].replace("3 * 60", f"({3 * INTERVAL} + {CHECK_TIMEOUT})")
            else:
                assert r_new["expr"] == r_old["expr"]
            assert {k: v for k, v in r_new.items() if k not in ("for", "expr")} == {
                k: v for k, v in r_old.items() if k not in ("for", "expr")
            }
            assert seconds(r_new["for"]) == max(1, round(seconds(r_old["for"]) * SCALE))
    assert changes["ChronyNtsSourceUnauthenticated"] == ("10m", "50s")
    (tmp_path / "rules.yml").write_text(text)
    promtool = shutil.which("promtool")
    if promtool:
        res = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr


# ---------------------------------------------------------------------------------------------------- Prometheus
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when pytest dies (prctl PR_SET_PDEATHSIG), so no Prometheus outlives it."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class Prometheus:
    """Debian's prometheus binary as a child process: own config, TSDB and port, on 127.0.0.1 only."""

    def __init__(self, workdir: Path, targets: dict[str, str], rules_text: str):
        self.dir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "rules.yml").write_text(rules_text)
        config = {
            "global": {"scrape_interval": f"{SCRAPE}s", "scrape_timeout": f"{SCRAPE}s",
                       "evaluation_interval": f"{SCRAPE}s"},
            "rule_files": [str(workdir / "rules.yml")],
            "scrape_configs": [{
                "job_name": "node",
                "params": {"collect[]": ["textfile"]},
                "static_configs": [{"targets": [address], "labels": {"instance": host}}
                                   for host, address in targets.items()],
            }],
        }  # fmt: skip
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        cmd = [binary, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'tsdb'}",
               f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=2h"]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdout=self.log.open("w"), stderr=subprocess.STDOUT, cwd=self.dir, preexec_fn=die_with_parent
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:  # noqa: S310 (http://127.0.0.1)
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not become ready:\n{self.log_tail()}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""

    def api(self, path: str, **params) -> dict | list:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as resp:  # noqa: S310
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[tuple, float]:
        """An instant query: {(instance, source or ''): value}."""
        out = {}
        for item in self.api("query", query=expr)["result"]:
            labels = item["metric"]
            out[(labels.get("instance", ""), labels.get("source", ""))] = float(item["value"][1])
        return out

    def alerts(self) -> dict[tuple, str]:
        """Active alerts: {(alertname, instance, source or ''): 'pending' | 'firing'}."""
        return {
            (a["labels"]["alertname"], a["labels"].get("instance", ""), a["labels"].get("source", "")): a["state"]
            for a in self.api("alerts")["alerts"]
        }


@dataclass
class Watch:
    """Polls Prometheus' active alerts every second from t0 and keeps, per alert, when it was first seen pending and
    firing and when it was last seen (seconds after t0)."""

    prom: Prometheus
    t0: float = field(default_factory=time.monotonic)
    pending: dict = field(default_factory=dict)
    firing: dict = field(default_factory=dict)
    last: dict = field(default_factory=dict)
    current: dict = field(default_factory=dict)

    def poll(self) -> dict:
        now = time.monotonic() - self.t0
        self.current = self.prom.alerts()
        for key, state in self.current.items():
            self.pending.setdefault(key, now)
            if state == "firing":
                self.firing.setdefault(key, now)
            self.last[key] = now
        return self.current

    def until(self, done, bound: float, what: str) -> float:
        """Poll until done(self) is true; returns the seconds since t0; fails after `bound` seconds since t0."""
        while True:
            self.poll()
            if done(self):
                return round(time.monotonic() - self.t0, 1)
            if time.monotonic() - self.t0 > bound:
                raise AssertionError(f"{what}: not within {bound} s; {self.report()}\n{self.prom.log_tail(10)}")
            time.sleep(1)

    def report(self) -> str:
        rows = [f"{'/'.join(filter(None, key))}: pending at {self.pending[key]:.0f} s"
                + (f", firing at {self.firing[key]:.0f} s" if key in self.firing else "")
                + f", last seen {self.last[key]:.0f} s" for key in sorted(self.pending)]  # fmt: skip
        return "alerts seen: " + ("; ".join(rows) if rows else "none") + f"; active now: {self.current}"


def firing_keys(watch: Watch) -> set[tuple]:
    return set(watch.firing)


# ------------------------------------------------------------------------------------------------------ the lab
@dataclass
class Monitored:
    lab: Lab
    prom: Prometheus
    tier_cert: dict[str, Path]  # the baseline certificate of tier1 (20 days): key, cert
    pki_dir: Path
    workdir: Path

    def site(self, *args: str, cert: dict[str, Path] | None = None, timeout: float = 900):
        cert = cert or self.tier_cert
        extra = {"chrony_nts_monitor_interval": INTERVAL, "chrony_nts_server_key_file": str(cert["key"]),
                 "chrony_nts_server_cert_file": str(cert["cert"])}  # fmt: skip
        t0 = time.monotonic()
        res = self.lab.playbook("site.yml", "-e", json.dumps(extra), *args, timeout=timeout)
        assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
        return round(time.monotonic() - t0, 1)

    def issue_tier_cert(self, name: str, days: float) -> dict[str, Path]:
        sys.path.insert(0, str(REPO / "lab"))
        from pki import Authority

        ca = Authority.load((self.pki_dir / "ca.key").read_bytes(), (self.pki_dir / "ca.pem").read_bytes())
        tier1 = self.lab.data["all"]["children"]["chrony_nts_servers"]["hosts"]["tier1"]
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        key, cert = ca.issue([tier1["lab_tier_name"]], [tier1["ansible_host"]], now - datetime.timedelta(hours=1),
                             now + datetime.timedelta(days=days))  # fmt: skip
        out = {"key": self.workdir / f"{name}.key", "cert": self.workdir / f"{name}.crt"}
        out["key"].write_bytes(key)
        out["key"].chmod(0o600)
        out["cert"].write_bytes(cert + ca.cert_pem)
        return out

    def all_green(self) -> bool:
        """Prometheus' latest readings: every host verified, every source authenticated now."""
        verified = self.prom.query("chrony_nts_verified")
        auth = self.prom.query("chrony_nts_source_authenticated_now")
        return (
            {i for i, _ in verified} == set(HOSTS)
            and all(v == 1 for v in verified.values())
            and all(v == 1 for v in auth.values())
        )

    def wait_quiet(self, bound: float = RESOLVE_BOUND) -> float:
        """Until every check is green and no alert is active (pending or firing)."""
        return Watch(self.prom).until(lambda w: not w.current and self.all_green(), bound, "lab back to quiet")


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    t_start = time.monotonic()
    name = os.environ.get("MONITORING_TEST_LAB", f"cnts-mon-{os.getpid() % 100000}")
    res = run([*LABCTL, "up", "--name", name, "--clients", "2", "--tier", "1"], timeout=900)
    if res.returncode != 0:
        run([*LABCTL, "down", "--name", name])
        pytest.fail(f"lab {name} did not come up:\n{res.stdout}\n{res.stderr}")
    inventory = REPO / ".lab" / name / "inventory" / "hosts.yml"
    lab = Lab(name, inventory, load_inventory(inventory))
    workdir = tmp_path_factory.mktemp("prometheus")
    prom = None
    try:
        hosts = {**lab.data["all"]["children"]["chrony_nts_clients"]["hosts"],
                 **lab.data["all"]["children"]["chrony_nts_servers"]["hosts"]}  # fmt: skip
        assert sorted(hosts) == sorted(HOSTS), hosts
        targets = {host: f"{hosts[host]['ansible_host']}:9100" for host in HOSTS}
        # safety: Prometheus scrapes only this lab's own hosts
        subnet = ipaddress.ip_network(f"{lab.server_address('nts1')}/24", strict=False)
        assert all(ipaddress.ip_address(t.split(":")[0]) in subnet for t in targets.values()), targets
        mon = Monitored(lab, None, {}, REPO / ".lab" / name / "pki", workdir)  # type: ignore[arg-type]
        mon.tier_cert = mon.issue_tier_cert("tier1-baseline", days=20)
        TIMINGS["lab up"] = round(time.monotonic() - t_start, 1)
        TIMINGS["converge (site.yml)"] = mon.site()
        rules_text, changes = shorten_rules(RULES.read_text())
        TIMINGS["for: (shipped -> test)"] = changes
        prom = mon.prom = Prometheus(workdir, targets, rules_text)
        prom.start()
        yield mon
    finally:
        if prom is not None:
            prom.stop()
        print("\nmonitoring lab timings (s):\n" + json.dumps(TIMINGS, indent=1), flush=True)
        if os.environ.get("KEEP_LAB") != "1":
            run([*LABCTL, "down", "--name", name], check=True)


# ------------------------------------------------------------------------------------------------------ the cases
def test_node_exporter_serves_the_check_on_every_host(monitored):
    lab, prom = monitored.lab, monitored.prom
    for host in HOSTS:
        units = "prometheus-node-exporter; systemctl is-active prometheus-node-exporter chrony-nts-check.timer"
        state = lab.sh(host, f"systemctl is-enabled {units}").stdout.split()
        assert state == ["enabled", "active", "active"], (host, state)
        # the textfile directory is Debian's default, where the role's check writes
        res = lab.sh(host, "prometheus-node-exporter --help 2>&1 | grep -o -- '--collector.textfile.directory=[^ ]*'; "
                           "grep '^ARGS=' /etc/default/prometheus-node-exporter")  # fmt: skip
        default, args = res.stdout.splitlines()
        assert default.replace('"', "") == "--collector.textfile.directory=/var/lib/prometheus/node-exporter", default
        assert "textfile.directory" not in args or "=/var/lib/prometheus/node-exporter" in args, args
        # safety: chronyd never steers the clock
        daemons = lab.sh(host, "ps -o args= -C chronyd").stdout.splitlines()
        assert daemons and all(" -x" in f"{line} " for line in daemons), (host, daemons)
    assert prom.url.startswith("http://127.0.0.1:")
    t0 = time.monotonic()
    Watch(prom).until(lambda w: {i for i, _ in prom.query("up == 1")} == set(HOSTS), 60, "every target up")
    Watch(prom).until(lambda w: monitored.all_green(), 60, "every host's check green in Prometheus")
    TIMINGS["first scrape with every check green"] = round(time.monotonic() - t0, 1)
    # the check's per-host and tier metrics arrive with their host as instance
    assert set(prom.query("chrony_nts_healthy_sources")) == {(h, "") for h in HOSTS}
    assert set(prom.query("chrony_nts_server_certificate_not_after_timestamp_seconds")) == {("tier1", "")}


def test_healthy_lab_raises_no_alert(monitored):
    prom = monitored.prom
    # Prometheus' first evaluations may come before its first scrape (ChronyNtsCheckAbsent pending): start when quiet
    monitored.wait_quiet()
    watch = Watch(prom)
    watch.until(lambda w: False if time.monotonic() - w.t0 < HEALTHY_WINDOW else True, HEALTHY_WINDOW + 5, "window")
    window = f"[{HEALTHY_WINDOW}s]"
    assert not firing_keys(watch), watch.report()
    assert not prom.query(f'count_over_time(ALERTS{{alertstate="firing"}}{window})'), watch.report()
    # every check of every host in the window was green (a stronger statement than "nothing fired")
    assert all(v == 1 for v in prom.query(f"min_over_time(chrony_nts_verified{window})").values())
    low = prom.query(f"min_over_time(chrony_nts_source_authenticated_now{window})")
    assert len(low) == 2 * 4 + 2 and all(v == 1 for v in low.values()), low
    checks = prom.query(f"changes(chrony_nts_last_check_timestamp_seconds{window})")
    TIMINGS["healthy window"] = {"seconds": HEALTHY_WINDOW, "checks per host": {i: v for (i, _), v in checks.items()},
                                 "pending seen": watch.report()}  # fmt: skip
    assert all(v >= HEALTHY_WINDOW / (INTERVAL + 2) for v in checks.values()), checks


def nts1_authdata(lab: Lab, host: str) -> dict[str, int]:
    """chronyd's own NTS state of nts1 on a host (chronyc authdata): key id, last key exchange age, attempts since
    the last success, cookies."""
    for line in lab.sh(host, "chronyc -c -N authdata").stdout.splitlines():
        row = line.split(",")
        if row[0] == NTS1:
            return {"keyid": int(row[2]), "last_ke_age": int(row[5]), "attempts": int(row[6]), "cookies": int(row[8])}
    raise AssertionError(f"{host}: no authdata for {NTS1}")


def fire_on_nts1(monitored, name: str, inject) -> tuple[Watch, float]:
    """Inject a fault on nts1; wait until ChronyNtsSourceUnauthenticated for nts1 fires on every host using it (all
    three) within its for: + DETECT + SLACK. Only per-source alerts of nts1 may fire, ChronyNtsNoAuthenticatedTime
    not even be pending (every host keeps other authenticated sources)."""
    monitored.wait_quiet()
    expected = {("ChronyNtsSourceUnauthenticated", host, NTS1) for host in HOSTS}
    bound = seconds(TIMINGS["for: (shipped -> test)"]["ChronyNtsSourceUnauthenticated"][1]) + DETECT + SLACK
    watch = Watch(monitored.prom)
    inject()
    try:
        fired = watch.until(lambda w: expected <= set(w.firing), bound, f"{name}: alert fires")
        assert_only_nts1_source_alerts(watch)
    except BaseException:
        monitored.lab.fault("unblock", "nts1")
        raise
    TIMINGS[name] = {"fired on all 3 hosts after": fired, "bound to fire": bound}
    return watch, fired


def assert_only_nts1_source_alerts(watch: Watch) -> None:
    assert not {k for k in watch.firing if k[0] not in SOURCE_ALERTS or k[2] != NTS1}, watch.report()
    assert not {k for k in watch.pending if k[0] == "ChronyNtsNoAuthenticatedTime"}, watch.report()


def record_alerts(name: str, watch: Watch) -> None:
    TIMINGS[name]["per alert [pending, firing] s after the fault"] = {
        "/".join(filter(None, k)): [round(watch.pending[k]), round(watch.firing[k])] for k in sorted(watch.firing)
    }


def test_stopped_server_fires_source_unauthenticated_and_resolves(monitored):
    """nts1 drops everything (NTS-KE and NTP): the alert fires; after unblock it resolves once chronyd makes its
    next key exchange. chronyd spaces failed key exchanges (connection refused or timed out) 2^(4 + attempts - 1) s
    apart (NKE_RETRY_FACTOR2_CONNECT): the bound to resolve is that interval, read from authdata at the unblock,
    plus DETECT + SLACK."""
    lab, name = monitored.lab, "nts1 stopped (block all)"
    watch, _ = fire_on_nts1(monitored, name, lambda: lab.fault("block", "nts1", "all"))
    attempts = max(nts1_authdata(lab, host)["attempts"] for host in HOSTS)
    bound = 2 ** (4 + max(attempts, 1) - 1) + DETECT + SLACK
    lab.fault("unblock", "nts1")
    t_recover = time.monotonic() - watch.t0
    resolved = watch.until(lambda w: not w.current, t_recover + bound, f"{name}: alerts resolve")
    assert_only_nts1_source_alerts(watch)
    record_alerts(name, watch)
    TIMINGS[name].update({"key exchange attempts at unblock": attempts, "resolved after unblock":
                          round(resolved - t_recover, 1), "bound to resolve": bound})  # fmt: skip
    monitored.wait_quiet()


def test_server_key_rotation_pages_nobody(monitored):
    lab, prom = monitored.lab, monitored.prom
    monitored.wait_quiet()
    ke = 'chrony_nts_source_key_exchanges_total{source="nts1.lab.test"}'
    before = prom.query(ke)
    assert set(before) == {(h, NTS1) for h in HOSTS}, before
    watch = Watch(prom)
    lab.sh("nts1", "rm -f /var/lib/chrony/ntskeys")
    lab.podman("restart", "-t", "2", lab.container("nts1"))
    restarted = round(time.monotonic() - watch.t0, 1)

    def rekeyed(w: Watch) -> bool:
        now = prom.query(ke)
        return all(now.get(k, 0) > v for k, v in before.items())

    rekeyed_at = watch.until(rekeyed, 120, "every host using nts1 made a new key exchange")
    quiet_at = watch.until(lambda w: not w.current and monitored.all_green(), rekeyed_at + RESOLVE_BOUND, "quiet")
    settle = quiet_at + 2 * INTERVAL + SCRAPE
    watch.until(lambda w: time.monotonic() - w.t0 >= settle, settle + 5, "settle")
    window = f"[{int(time.monotonic() - watch.t0) + 2}s]"
    naks = prom.query(f'max_over_time(chrony_nts_source_nak{{source="nts1.lab.test"}}{window})')
    unauth = prom.query(f'min_over_time(chrony_nts_source_authenticated_now{{source="nts1.lab.test"}}{window})')
    TIMINGS["nts1 key rotation"] = {
        "container restarted after": restarted,
        "every host re-keyed after": rekeyed_at,
        "quiet (nothing pending, all green) after": quiet_at,
        "NAK seen by a check": {i: v for (i, _), v in naks.items()},
        "a check saw nts1 unauthenticated": {i: v == 0 for (i, _), v in unauth.items()},
        "alerts": watch.report(),
    }
    assert not watch.firing, watch.report()
    assert not prom.query(f'count_over_time(ALERTS{{alertstate="firing"}}{window})'), watch.report()


def test_certificate_close_to_expiry_fires_for_the_tier_host(monitored):
    prom = monitored.prom
    monitored.wait_quiet()
    short = monitored.issue_tier_cert("tier1-2days", days=2)
    run_s = monitored.site("--limit", "tier1", cert=short)
    crit = ("ChronyNtsServerCertificateExpiringCritical", "tier1", "")
    warn = ("ChronyNtsServerCertificateExpiring", "tier1", "")
    rule_for = seconds(TIMINGS["for: (shipped -> test)"]["ChronyNtsServerCertificateExpiringCritical"][1])
    watch = Watch(prom)  # from the end of the run that installed the certificate
    try:
        fired = watch.until(lambda w: crit in w.firing and warn in w.pending, rule_for + DETECT + SLACK,
                            "certificate alert fires")  # fmt: skip
        left = prom.query("chrony_nts_server_certificate_not_after_timestamp_seconds - time()")[("tier1", "")]
        assert 1.9 * 86400 < left < 2 * 86400, left
        assert set(watch.firing) <= {crit, warn}, watch.report()
    finally:
        t_restore = time.monotonic() - watch.t0
        restore_s = monitored.site("--limit", "tier1")
    resolved = watch.until(lambda w: not w.current, time.monotonic() - watch.t0 + RESOLVE_BOUND, "resolve")
    assert set(watch.firing) <= {crit, warn}, watch.report()
    TIMINGS["tier1 certificate 2 days"] = {
        "site.yml --limit tier1 (new certificate)": run_s,
        "critical fired after the run": fired,
        "warning pending after": round(watch.pending[warn]),
        "site.yml --limit tier1 (baseline back)": restore_s,
        "resolved after the restore began": round(resolved - t_restore, 1),
        "bound to fire": rule_for + DETECT + SLACK,
        "alerts": watch.report(),
    }


def test_udp_123_dropped_fires_and_stays_until_chronyd_keys_again(monitored):
    """nts1 drops UDP 123 only: the alert fires. The hosts' cookies run out on requests nobody answers, and their
    key exchange with nts1 SUCCEEDS (TCP 4460 is open) but is never followed by a valid NTP reply, so chronyd spaces
    the next one 2^(10 + attempts - 1) s (>= 1024 s: NKE_RETRY_FACTOR2_TLS) after it. Unblocking UDP therefore does
    not restore authenticated time from nts1 by itself for up to that long, and the alert rightly stays: the test
    checks it is still firing HOLD s after the unblock with no cookie for nts1 on any host, then restarts chronyd on
    the three hosts (what an operator does after fixing the network; a new key exchange at start) and the alerts
    resolve within DETECT + SLACK."""
    lab, name, hold = monitored.lab, "nts1 UDP 123 dropped", 30
    expected = {("ChronyNtsSourceUnauthenticated", host, NTS1) for host in HOSTS}
    watch, _ = fire_on_nts1(monitored, name, lambda: lab.fault("block", "nts1", "ntp"))
    lab.fault("unblock", "nts1")
    t_unblock = time.monotonic() - watch.t0
    watch.until(lambda w: time.monotonic() - w.t0 >= t_unblock + hold, t_unblock + hold + 5, "hold")
    auth = {host: nts1_authdata(lab, host) for host in HOSTS}
    still = {k for k, state in watch.current.items() if state == "firing"}
    assert expected <= still, (watch.report(), auth)
    assert all(a["cookies"] == 0 and a["attempts"] >= 1 for a in auth.values()), auth
    next_ke = {h: 2 ** (10 + a["attempts"] - 1) - a["last_ke_age"] for h, a in auth.items()}
    for host in HOSTS:
        lab.sh(host, "systemctl restart chrony")
    t_restart = time.monotonic() - watch.t0
    resolved = watch.until(lambda w: not w.current, t_restart + DETECT + SLACK, f"{name}: alerts resolve")
    assert_only_nts1_source_alerts(watch)
    record_alerts(name, watch)
    TIMINGS[name].update({
        f"still firing {hold} s after unblock, chronyd's next key exchange with nts1 due in (s)": next_ke,
        "resolved after the chronyd restart": round(resolved - t_restart, 1),
        "bound to resolve after the restart": DETECT + SLACK,
    })  # fmt: skip
    monitored.wait_quiet()
