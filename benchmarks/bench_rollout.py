#!/usr/bin/env python3
"""Benchmark the fleet tooling: report generation against plain JSON, and rollout wall time per batch on the lab.

Part 1 - report generation (no lab needed): N synthetic host records are made from chronyc output captured from a
real chronyd 4.3 (tests/fixtures/chronyc: healthy, key exchange failed, NAK), run through the chrony_authdata
evaluation, with per-host offsets varied. For each N, the time of build_report + render_json + render_html +
render_markdown + render_svg (all files report.yml writes) is printed next to the baseline json.dumps(records) of the
same records, with the ratio. Medians of --runs repetitions.

Part 2 - rollout (with --lab NAME or --up): playbooks/rollout.yml on a lab fleet (--up makes a fresh lab
`bench-fleet` with --clients/--tier hosts and removes it afterwards); the wall time of each batch (from the
rollout's own batches.json) is printed with its hosts and the time per host, then the report playbook's wall time.
Run it on a fresh lab to measure a first rollout (installs chrony); on a converged lab it measures a compliance run.

Only figures are printed; nothing is asserted.
Usage: .venv/bin/python benchmarks/bench_rollout.py [--runs 5] [--sizes 10,100,1000]
                                                    [--up | --lab NAME] [--clients 6] [--tier 2] [--batches '[1, 2, 3]']
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / ".collections")]  # benchmarks run as scripts: the checkout and its collection

from tests.lib.collection import (  # noqa: E402
    cs,
    nr,
)

FIXTURES = REPO / "tests" / "fixtures" / "chronyc"
VENV_BIN = REPO / ".venv" / "bin"


def captured_result(case: str) -> dict:
    report = cs.parse_status_output((FIXTURES / case / "status.csv").read_text())
    verdict = cs.evaluate(report)
    return {
        "verified": verdict.ok,
        "sources": [h.to_dict() for h in verdict.sources],
        "reasons": list(verdict.reasons),
        "tracking": cs.tracking_to_dict(report.tracking),
        "chrony_version": {"version": "4.3"},
    }


def synthetic_records(n: int) -> list:
    cases = [captured_result(c) for c in ("healthy", "healthy", "healthy", "ke_failed", "nak")]
    stats = cs.parse_serverstats((FIXTURES / "server" / "serverstats.csv").read_text())
    records = []
    for i in range(n):
        auth = json.loads(json.dumps(cases[i % len(cases)]))
        auth["tracking"]["last_offset"] = ((i * 7919) % 2001 - 1000) * 1e-7
        record = {"host": "host%05d" % i, "groups": ["chrony_nts_clients"], "authdata": auth}
        if i % 50 == 0:
            record["serverstats"] = stats
        if i % 97 == 5:
            record = {"host": "host%05d" % i, "error": "unreachable: ssh timed out"}
        records.append(record)
    return records


def render_all(records: list) -> int:
    report = nr.build_report(records, "2026-01-01T00:00:00+00:00")
    texts = [nr.render_json(report), nr.render_html(report), nr.render_markdown(report), nr.render_svg(report)]
    return sum(len(t) for t in texts)


def median_time(func, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def part_report(sizes: list[int], runs: int) -> None:
    print("\n== Part 1: report generation vs json.dumps of the same records (median of %d runs) ==" % runs)
    print("%8s %16s %16s %10s %14s" % ("hosts", "report ms", "json.dumps ms", "ratio", "output KiB"))
    for n in sizes:
        records = synthetic_records(n)
        size = render_all(records)
        report_s = median_time(lambda r=records: render_all(r), runs)
        base_s = median_time(lambda r=records: json.dumps(r), runs)
        print(
            "%8d %16.2f %16.2f %9.1fx %14.1f"
            % (n, report_s * 1000, base_s * 1000, report_s / base_s if base_s else float("nan"), size / 1024)
        )


def env() -> dict:
    e = dict(os.environ)
    e["CONTAINERS_CONF"] = str(REPO / "lab" / "containers.conf")
    e["PATH"] = f"{VENV_BIN}:{e.get('PATH', '')}"
    e["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    return e


def labctl(*args: str) -> None:
    subprocess.run([str(VENV_BIN / "python"), str(REPO / "lab" / "labctl.py"), *args], env=env(), check=True)


def part_rollout(lab: str, batches: str) -> None:
    inventory = REPO / ".lab" / lab / "inventory" / "hosts.yml"
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        cmd = [
            str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(REPO / "playbooks" / "rollout.yml"),
            "-e", '{"chrony_nts_rollout_batches": %s}' % batches,
            "-e", f"chrony_nts_rollout_dir={tmp}", "-e", "chrony_nts_rollout_id=bench",
        ]  # fmt: skip
        t0 = time.perf_counter()
        res = subprocess.run(cmd, env=env(), cwd=REPO, capture_output=True, text=True, check=False)
        total = time.perf_counter() - t0
        summary_path = Path(tmp) / "bench" / "summary.json"
        if not summary_path.exists():
            print("rollout wrote no summary (rc %d):\n%s" % (res.returncode, (res.stdout + res.stderr)[-3000:]))
            return
        summary = json.loads(summary_path.read_text())
        print("\n== Part 2: rollout on lab %s, client batches %s: %s (rc %d) ==" % (lab, batches,
              summary["outcome"], res.returncode))  # fmt: skip
        print("%-8s %6s %9s %14s %14s  %s" % ("play", "batch", "hosts", "wall time s", "s per host", "hosts"))
        for b in summary["batches"]:
            wall = b["wall_time"]
            print(
                "%-8s %6d %9d %14.1f %14.1f  %s"
                % (b["play"], b["index"], len(b["hosts"]), wall, wall / len(b["hosts"]), ", ".join(b["hosts"]))
            )
        in_batches = sum(b["wall_time"] for b in summary["batches"])
        print("ansible-playbook wall time %.1f s, of which in batches %.1f s (start, summary, SSH setup: %.1f s)"
              % (total, in_batches, total - in_batches))  # fmt: skip
        print("changed %s; failed %s" % (", ".join(summary["changed"]) or "none",
                                         ", ".join(f["host"] for f in summary["failed"]) or "none"))  # fmt: skip
        cmd = [
            str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(REPO / "playbooks" / "report.yml"),
            "-e", f"chrony_nts_report_dir={tmp}/report",
        ]  # fmt: skip
        t0 = time.perf_counter()
        res = subprocess.run(cmd, env=env(), cwd=REPO, capture_output=True, text=True, check=False)
        print("report.yml on the same fleet: %.1f s wall (rc %d)" % (time.perf_counter() - t0, res.returncode))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="10,100,1000")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--lab", help="an existing lab (labctl.py --name) to roll out on")
    group.add_argument("--up", action="store_true", help="make a fresh lab bench-fleet and remove it afterwards")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--tier", type=int, default=2)
    parser.add_argument("--batches", default="[1, 2, 3]", help="client batch sizes (JSON list, as serial)")
    opts = parser.parse_args()
    print("python %s, %d CPU(s)" % (sys.version.split()[0], os.cpu_count() or 0))
    part_report([int(s) for s in opts.sizes.split(",")], opts.runs)
    if opts.up:
        labctl("up", "--name", "bench-fleet", "--clients", str(opts.clients), "--tier", str(opts.tier))
        try:
            part_rollout("bench-fleet", opts.batches)
        finally:
            labctl("down", "--name", "bench-fleet")
    elif opts.lab:
        part_rollout(opts.lab, opts.batches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
