#!/usr/bin/env python3
"""How long after a chronyd restart does chrony_authdata report "NTS verified", compared with the earliest moment
the health predicate actually held?

On loopback (chronyd -x, random 127.x.y.z, private CA) the client chronyd is restarted repeatedly, with its saved
cookies kept (ntsdumpdir) and with them removed (fresh NTS-KE). For every restart two observers start at once:

  (a) the module, run for real: ``ansible localhost -m chrony_authdata -a 'socket=... timeout=...'``; measured
      from the restart to ansible's exit (includes ansible's start-up and AnsiballZ) and the module's own
      ``elapsed`` (from the module's start);
  (b) a baseline poller: a tight loop calling ``chronyc -c -N -m sources tracking authdata ntpdata`` every ~50 ms
      and applying the same predicate (chrony_status.evaluate) -> the first moment it held.

Prints per-run figures and medians, the module's overhead (a - b) and ratio (a / b). No timing asserts.

    .venv/bin/python benchmarks/bench_verify_latency.py [--runs 5] [--interval 0.25]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / ".collections")]  # benchmarks run as scripts: the checkout and its collection

from tests.lib.ansible_local import CWD, LOCAL, module_env  # noqa: E402
from tests.lib.chronyd import CHRONYC, NtsClient, NtsServer, unique_loopback_address  # noqa: E402
from tests.lib.collection import cs  # noqa: E402
from tests.lib.pki import CertificateAuthority, make_shared_dir  # noqa: E402

ENV = module_env()


def poller(socket_path: str, t0: float, stop: threading.Event, out: dict, period: float = 0.05) -> None:
    cmd = [CHRONYC, "-h", socket_path, "-c", "-N", "-m", *cs.STATUS_COMMANDS]
    polls = 0
    while not stop.is_set():
        polls += 1
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        try:
            if res.returncode == 0 and cs.evaluate(cs.parse_status_output(res.stdout)).ok:
                out["held"] = time.monotonic() - t0
                out["polls"] = polls
                return
        except (cs.ChronyParseError, cs.ChronycError):
            pass
        time.sleep(period)


def run_ansible(args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "ansible"), "localhost", *LOCAL, "-m", "nts.chrony.chrony_authdata", "-a", args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=CWD,
    )


def one_run(client: NtsClient, keep_cookies: bool, interval: float, timeout: float, pre_start: bool) -> dict:
    """Restart the client and time both observers. With ``pre_start`` ansible is launched first and the module is
    already polling (getting 506 from the stopped daemon) when chronyd starts: this isolates the module's own
    polling lag from ansible's start-up."""
    client.stop()
    if not keep_cookies:
        client.remove_cookies()
    args = f"socket={client.socket_path} timeout={timeout} interval={interval}"
    proc = run_ansible(args) if pre_start else None
    if pre_start:
        time.sleep(2.0)  # ansible start-up (~1 s here) is over: the module is polling the absent socket
    t0 = time.monotonic()
    client.start()
    stop, base = threading.Event(), {}
    th = threading.Thread(target=poller, args=(str(client.socket_path), t0, stop, base), daemon=True)
    th.start()
    if proc is None:
        proc = run_ansible(args)
    stdout, _ = proc.communicate()
    module_exit = time.monotonic() - t0
    th.join(timeout)
    stop.set()
    res = json.loads(stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    if not res.get("verified"):
        raise RuntimeError(f"module did not verify: {res.get('msg')}")
    return {
        "baseline_held": base.get("held", float("nan")),
        "module_verified": module_exit,
        "module_elapsed": res["elapsed"],
        "module_polls": res["polls"],
    }


def report(label: str, rows: list[dict]) -> None:
    print(f"\n{label} ({len(rows)} runs), seconds from chronyd restart:")
    print(f"{'run':>4} {'baseline':>9} {'module':>9} {'overhead':>9} {'ratio':>6} {'mod.elapsed':>11} {'polls':>5}")
    for i, r in enumerate(rows, 1):
        over = r["module_verified"] - r["baseline_held"]
        ratio = r["module_verified"] / r["baseline_held"]
        print(
            f"{i:>4} {r['baseline_held']:9.3f} {r['module_verified']:9.3f} {over:9.3f} {ratio:6.2f} "
            f"{r['module_elapsed']:11.3f} {r['module_polls']:5d}"
        )
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    over = statistics.median(r["module_verified"] - r["baseline_held"] for r in rows)
    ratio = statistics.median(r["module_verified"] / r["baseline_held"] for r in rows)
    print(
        f"{'med':>4} {med['baseline_held']:9.3f} {med['module_verified']:9.3f} {over:9.3f} {ratio:6.2f} "
        f"{med['module_elapsed']:11.3f} {int(med['module_polls']):5d}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="restart -> NTS verified latency: chrony_authdata vs tight poller")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--interval", type=float, default=0.25, help="module poll interval (s)")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args(argv)

    d = make_shared_dir(prefix="bench-verify-")
    ca = CertificateAuthority(d, name="bench")
    addr = unique_loopback_address()
    server = NtsServer.create(ca.issue("server", ips=[addr]), address=addr)
    client = NtsClient.create([server], trusted_certs=[ca.cert_path])
    try:
        server.start()
        client.start()
        client.wait_for(lambda c: c.csv("authdata")[0][8] != "0", 20, what="first key exchange")
        version = subprocess.run(["chronyd", "--version"], capture_output=True, text=True).stdout
        print(f"chrony {cs.parse_version(version).version}; client: server {addr} nts iburst minpoll 0 maxpoll 4")
        print(f"module interval {args.interval} s; baseline = chronyc every 50 ms with the same predicate")
        print("'module' = restart -> ansible exits with verified=true; overhead = module - baseline")
        for pre_start in (False, True):
            when = "module already polling at restart" if pre_start else "ansible launched right after restart"
            for keep in (True, False):
                cookies = "WITH saved cookies" if keep else "WITHOUT cookies (fresh NTS-KE)"
                rows = [one_run(client, keep, args.interval, args.timeout, pre_start) for _ in range(args.runs)]
                report(f"{when}, restart {cookies}", rows)
    finally:
        client.cleanup()
        server.cleanup()
        import shutil

        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
