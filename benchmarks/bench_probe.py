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

Part 3 - AEADs: probe timings per offered AEAD list ([30, 15], [15], and [30] alone where the server has it) with
the negotiated AEAD, the exporter context and the NTP request size, against the loopback chronyd (4.3 here: it has no
AES-128-GCM-SIV, so it negotiates 15 either way) and, with --lab-inventory, against every good server of a lab made
with `labctl.py up --server-release 12,13,testing` (chrony 4.3/4.6.1/4.9, NTPsec 1.2.2/1.2.3/1.2.5), from this
host; plus the cost of sealing and opening one NTS request per AEAD in this process.

Only figures are printed; nothing is asserted. Needs root (chronyd drops to _chrony) and chrony with NTS.
Usage: .venv/bin/python benchmarks/bench_probe.py [--runs N] [--timeout S] [--servers K]
           [--aead-only] [--lab-inventory .lab/NAME/inventory/hosts.yml] [--aead-runs N]
"""

from __future__ import annotations

import argparse
import json
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


AEAD_OFFERS = ([30, 15], [15], [30])
LAB_SERVERS = ("nts1", "ntpsec1", "nts-13", "ntpsec-13", "nts-testing", "ntpsec-testing")


def request_bytes(result):
    """Size of the NTP request the probe sent: header, UID, one cookie EF, authenticator (SIV 40 B, GCM-SIV 36 B)."""
    return 48 + 36 + 4 + result["cookie_length"] + (36 if result["aead"] == 30 else 40)


def part_aead(targets, runs):
    """targets: (label, version, probe kwargs) -> one line per target and offer; medians over the runs that passed."""
    print("\n== Part 3: probe timings per offered AEAD list (%d runs each, back to back, median ms) ==" % runs)
    head = ("server", "version", "offered", "aead", "ctx", "req B", "ok", "total", "tls", "nts_ke", "ntp", "min", "max")
    fmt = "%-15s %-14s %-8s %4s %4s %6s %6s %8s %8s %8s %8s %8s %8s"
    print(fmt % head)
    failures = []
    for label, version, kwargs in targets:
        for offer in AEAD_OFFERS:
            first = nts_client.probe(aeads=offer, **kwargs)  # warm-up, and: does the server take this offer?
            name = ",".join(str(a) for a in offer)
            if not first["ok"]:
                print("%-15s %-14s %-8s  -- %s: %s" % (label, version, name, first["stage"], first["error"]))
                continue
            results = [nts_client.probe(aeads=offer, **kwargs) for _ in range(runs)]
            passed = [r for r in results if r["ok"]]
            failures += ["%s %s: %s: %s" % (label, name, r["stage"], r["error"]) for r in results if not r["ok"]]
            if not passed:
                print("%-15s %-14s %-8s  -- every run failed" % (label, version, name))
                continue

            def med(step, passed=passed):
                return statistics.median(r["timings"][step] for r in passed) * 1000.0

            totals = [r["timings"]["total"] * 1000.0 for r in passed]
            r0 = passed[0]
            print(
                fmt.replace("%8s", "%8.2f")
                % (
                    label,
                    version,
                    name,
                    r0["aead"],
                    r0["exporter_context"],
                    request_bytes(r0),
                    "%d/%d" % (len(passed), runs),
                    med("total"),
                    med("tls"),
                    med("nts_ke"),
                    med("ntp"),
                    min(totals),
                    max(totals),
                )
            )
    for line in failures:
        print("  failed run: %s" % line)


def part_aead_crypto(rounds=20000):
    """Seal one NTS request and open one server response per AEAD, in this process."""
    print(
        "\n== Part 3b: one NTS request sealed + one response opened, in-process (%d rounds, us per round) ==" % rounds
    )
    for aead, key_len, nonce_len, cookie_len in ((15, 32, 16, 100), (30, 16, 12, 64)):
        key, uid, xmit = os.urandom(key_len), os.urandom(32), os.urandom(8)
        cookie = os.urandom(cookie_len)
        t0 = time.perf_counter()
        for _ in range(rounds):
            pkt = nts_client.build_ntp_request(cookie, key, uid, xmit, os.urandom(nonce_len), aead=aead)
            ad = pkt[: -(40 if aead == 15 else 36)]
            nonce = pkt[len(ad) + 8 : len(ad) + 8 + nonce_len]
            sealed = pkt[len(ad) + 8 + nonce_len : len(ad) + 8 + nonce_len + 16]
            nts_client.aead_open(key, sealed, [ad], nonce, aead)
        per = (time.perf_counter() - t0) / rounds * 1e6
        print("AEAD %2d (%s): %6.1f us, request %d bytes" % (aead, nts_client.aead_name(aead), per, len(pkt)))


def lab_targets(inventory_path):
    text = Path(inventory_path).read_text()
    inv = json.loads(text[text.index("{") :])["all"]["vars"]
    targets = []
    for short in LAB_SERVERS:
        server = inv["lab_servers"].get(short)
        if server is None:
            continue
        binary = "chronyd" if server["kind"] == "chrony" else "/opt/ntpsec/usr/sbin/ntpd"
        out = subprocess.run(
            ["podman", "exec", "%s-%s" % (inv["lab_name"], short), binary, "--version"],
            capture_output=True,
            text=True,
            check=False,
        )
        words = (out.stdout or out.stderr).split()
        version = "%s %s" % (server["kind"], next((w for w in words if w[:1].isdigit() or "ntpsec-" in w), "?"))
        kwargs = {"host": server["name"], "address": server["address"], "ca_file": inv["lab_ca_file"], "timeout": 5}
        targets.append((short, version.replace("ntpsec-", ""), kwargs))
    return targets


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per method in part 1 (default 10)")
    parser.add_argument("--timeout", type=float, default=2.0, help="per-step timeout in part 2 (default 2)")
    parser.add_argument("--servers", type=int, default=4, help="chronyd instances behind the 40 real entries")
    parser.add_argument("--aead-only", action="store_true", help="run part 3 only (AEADs)")
    parser.add_argument("--aead-runs", type=int, default=20, help="runs per server and AEAD offer in part 3")
    parser.add_argument(
        "--lab-inventory", metavar="HOSTS_YML", help="a lab's inventory (labctl.py up --server-release 12,13,testing)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_probe.py needs root (chronyd servers drop privileges to _chrony)")

    workdir = make_shared_dir(prefix="nts-bench-")
    ca = CertificateAuthority(workdir, name="bench")
    servers = []
    try:
        for i in range(1 if args.aead_only else args.servers):
            addr = unique_loopback_address()
            srv = NtsServer.create(ca.issue("bench%d" % i, ips=[addr]), address=addr, name="bench%d" % i)
            servers.append(srv)
            srv.start()
        print("chronyd: %s" % subprocess.run(["chronyd", "--version"], capture_output=True, text=True).stdout.strip())
        print("python %s, %d CPU(s)" % (sys.version.split()[0], os.cpu_count() or 0))
        if not args.aead_only:
            part_one(servers[0], str(ca.cert_path), args.runs)
            part_two(servers, str(ca.cert_path), args.timeout)
        version = subprocess.run(["chronyd", "--version"], capture_output=True, text=True).stdout.split()
        targets = [
            (
                "loopback",
                "chrony %s" % version[3] if len(version) > 3 else "chrony",
                {"host": servers[0].address, "port": servers[0].ntsport, "ca_file": str(ca.cert_path), "timeout": 5},
            )
        ]
        if args.lab_inventory:
            targets += lab_targets(args.lab_inventory)
        part_aead(targets, args.aead_runs)
        part_aead_crypto()
    finally:
        for srv in servers:
            srv.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
