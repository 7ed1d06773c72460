#!/usr/bin/env python3
"""Benchmark the native NTS probe against chrony's one-shot check, side by side in one run, on loopback.

Part 1 - one server: N runs each of
  * nts_client.probe() in this process,
  * bin/nts-probe as a fresh process (cold start, like a monitoring check would run it),
  * chronyd -x -Q -t 5 'server H port P nts ntsport Q iburst maxsamples 1' 'ntstrustedcerts CA' (the baseline;
    -Q only queries, -x is added anyway so nothing here can touch the clock),
all against the same chronyd NTS server; medians and ratios are printed.

Part 2 - fleet: 50 servers of which 10 are blackholed (listening sockets that never accept) and 40 are real
(a few chronyd instances, each listed several times); probe_many() wall time is printed next to the per-step
timeout, for a few concurrency settings.

Only figures are printed; nothing is asserted. Needs root (chronyd drops to _chrony) and chrony with NTS.
Usage: .venv/bin/python benchmarks/bench_probe.py [--runs N] [--timeout S] [--servers K]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / ".collections")]  # benchmarks run as scripts: the checkout and its collection

from tests.lib.chronyd import NtsServer, unique_loopback_address  # noqa: E402
from tests.lib.collection import nts_client  # noqa: E402
from tests.lib.pki import CertificateAuthority, make_shared_dir  # noqa: E402


def median_ms(values):
    return statistics.median(values) * 1000.0


def time_call(fn, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        ok = fn()
        times.append(time.perf_counter() - t0)
        if not ok:
            raise RuntimeError("a benchmark run failed; see output above")
    return times


def part_one(server, ca_path, runs):
    def native():
        r = nts_client.probe(server.address, server.ntsport, ca_file=ca_path, timeout=5)
        if not r["ok"]:
            print("native probe failed:", r["stage"], r["error"])
        return r["ok"]

    def cli():
        out = subprocess.run(
            [
                sys.executable,
                str(REPO / "bin" / "nts-probe"),
                "--ca-file",
                ca_path,
                "--timeout",
                "5",
                "%s:%d" % (server.address, server.ntsport),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            print("nts-probe rc", out.returncode, out.stdout, out.stderr)
        return out.returncode == 0

    chrony_cmd = [
        "chronyd",
        "-x",
        "-Q",
        "-t",
        "5",
        "server %s port %d nts ntsport %d iburst maxsamples 1" % (server.address, server.port, server.ntsport),
        "ntstrustedcerts %s" % ca_path,
    ]
    if "-x" not in chrony_cmd or "-Q" not in chrony_cmd:
        raise RuntimeError("refusing to run chronyd without -x -Q")

    def chrony():
        out = subprocess.run(chrony_cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print("chronyd -Q rc", out.returncode, out.stdout, out.stderr)
        return out.returncode == 0

    native()  # warm-up: imports, first TLS context
    results = [
        ("nts_client.probe() in-process", time_call(native, runs)),
        ("bin/nts-probe (new process)", time_call(cli, runs)),
        ("chronyd -x -Q ... maxsamples 1", time_call(chrony, runs)),
    ]
    base = median_ms(results[-1][1])
    print("\n== Part 1: one probe of one loopback NTS server (%d runs each, median) ==" % runs)
    print("%-34s %12s %12s %12s %14s" % ("method", "median ms", "min ms", "max ms", "chrony/method"))
    for name, times in results:
        med = median_ms(times)
        print(
            "%-34s %12.2f %12.2f %12.2f %13.1fx"
            % (name, med, min(times) * 1000, max(times) * 1000, base / med if med else float("inf"))
        )
    r = nts_client.probe(server.address, server.ntsport, ca_file=ca_path)
    print("stage timings of one in-process probe (ms): %s" % {k: round(v * 1000, 3) for k, v in r["timings"].items()})


def part_two(servers, ca_path, timeout, total=50, holes=10):
    blackholes = []
    try:
        for _ in range(holes):
            s = socket.socket()
            addr = unique_loopback_address()
            s.bind((addr, 0))
            s.listen(128)
            blackholes.append(s)
        real = [
            {"host": servers[i % len(servers)].address, "port": servers[i % len(servers)].ntsport}
            for i in range(total - holes)
        ]
        dead = [{"host": s.getsockname()[0], "port": s.getsockname()[1]} for s in blackholes]
        # interleave so blackholes are spread through the list, as they would be in a real catalog
        specs = []
        step = max(1, len(real) // holes)
        for i, d in enumerate(dead):
            specs.extend(real[i * step : (i + 1) * step])
            specs.append(d)
        specs.extend(real[holes * step :])
        print(
            "\n== Part 2: %d servers (%d real on %d chronyd instances, %d blackholed), per-step timeout %.1f s =="
            % (len(specs), len(real), len(servers), len(dead), timeout)
        )
        print("%-14s %14s %16s %10s %10s" % ("concurrency", "wall time s", "wall / timeout", "ok", "failed"))
        for concurrency in (1, 10, 16, 50):
            t0 = time.perf_counter()
            results = nts_client.probe_many(specs, concurrency=concurrency, timeout=timeout, ca_file=ca_path)
            wall = time.perf_counter() - t0
            ok = sum(r["ok"] for r in results)
            stages = sorted({r["stage"] for r in results if not r["ok"]})
            print(
                "%-14s %14.2f %16.2f %10d %10d   failed stages: %s"
                % (concurrency, wall, wall / timeout, ok, len(results) - ok, ", ".join(stages))
            )
        print("(concurrency 1 = sequential: each blackhole costs one full timeout)")
    finally:
        for s in blackholes:
            s.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per method in part 1 (default 10)")
    parser.add_argument("--timeout", type=float, default=2.0, help="per-step timeout in part 2 (default 2)")
    parser.add_argument("--servers", type=int, default=4, help="chronyd instances behind the 40 real entries")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_probe.py needs root (chronyd servers drop privileges to _chrony)")

    workdir = make_shared_dir(prefix="nts-bench-")
    ca = CertificateAuthority(workdir, name="bench")
    servers = []
    try:
        for i in range(args.servers):
            addr = unique_loopback_address()
            srv = NtsServer.create(ca.issue("bench%d" % i, ips=[addr]), address=addr, name="bench%d" % i)
            servers.append(srv)
            srv.start()
        print("chronyd: %s" % subprocess.run(["chronyd", "--version"], capture_output=True, text=True).stdout.strip())
        print("python %s, %d CPU(s)" % (sys.version.split()[0], os.cpu_count() or 0))
        part_one(servers[0], str(ca.cert_path), args.runs)
        part_two(servers, str(ca.cert_path), args.timeout)
    finally:
        for srv in servers:
            srv.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
