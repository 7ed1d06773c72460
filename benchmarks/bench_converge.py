#!/usr/bin/env python3
"""Converge wall time of site.yml on fresh lab hosts, next to the floor of one `ansible -m ping` round trip.

Makes its own lab per Debian release (4 clients and the NTS servers of that release; 12 by default, --release
12,13,testing for each; SSH with pipelining and ControlPersist, forks from ansible.cfg), then prints, each with its
ratio to that lab's ping floor, and a table per release at the end:
  * ping round trip (the floor: connection + one module), median of 3 after a warm-up;
  * first converge: install chrony, render, validate, restart, probe gate, verify NTS with chrony_authdata;
  * second converge: nothing changes, everything is checked again (verification included);
  * the verification step alone, as the role reports it (`NTS verified in X s`).
Figures only: nothing here asserts a time. Reference targets (issue): second run under 5 s, first under 10 s.

    .venv/bin/python benchmarks/bench_converge.py [--clients 4] [--release 12[,13,testing]] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        CONTAINERS_CONF=str(REPO / "lab" / "containers.conf"),
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        PATH=f"{BIN}:{e.get('PATH', '')}",
    )
    return e


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, env=env(), text=True, capture_output=True, check=False)
    return time.perf_counter() - start, res


def slowest_tasks(stdout: str, count: int = 5) -> list[tuple[str, float]]:
    """The first lines of profile_tasks' recap: (task name, seconds), slowest first."""
    found = re.findall(r"^(.+?) -{2,} ([0-9.]+)s$", stdout.split("TASKS RECAP", 1)[-1], re.MULTILINE)
    return [(name.strip()[:90], float(sec)) for name, sec in found[:count]]


def measure(release: str, clients: int, keep: bool) -> dict | None:
    """One lab of `clients` hosts and NTS servers of Debian `release`: ping floor, first and second converge."""
    name = f"bench-conv-{release}-{os.getpid() % 10000}"
    labctl = [str(BIN / "python"), str(REPO / "lab" / "labctl.py")]
    inventory = str(REPO / ".lab" / name / "inventory" / "hosts.yml")
    up = [*labctl, "up", "--name", name, "--clients", str(clients), "--release", release, "--server-release", release]
    if subprocess.run(up, env=env(), check=False).returncode != 0:
        return None
    try:
        ping = [str(BIN / "ansible"), "-i", inventory, "chrony_nts_clients", "-m", "ansible.builtin.ping"]
        timed(ping)  # warm-up: opens the SSH control masters, as a real run's first task would
        floor = statistics.median(timed(ping)[0] for _ in range(3))
        play = [str(BIN / "ansible-playbook"), "-i", inventory, "site.yml"]
        first, res1 = timed(play)
        second, res2 = timed(play)
        for label, res in (("first", res1), ("second", res2)):
            if res.returncode != 0:
                print(f"{label} converge failed:\n{res.stdout[-3000:]}\n{res.stderr[-2000:]}", file=sys.stderr)
                return None
        probe = [str(BIN / "ansible"), "-i", inventory, "client1", "-m", "ansible.builtin.command", "-a", "chronyd -v"]
        version = re.search(r"chronyd \(chrony\) version (\S+)", timed(probe)[1].stdout)
        verified = [float(x) for x in re.findall(r"NTS\s+verified\s+in\s+([0-9.]+)\s+s", res1.stdout)]
        changed2 = sum(int(x) for x in re.findall(r"changed=(\d+)", res2.stdout))
        print(f"\nDebian {release}: converge on {clients} lab hosts ({name}), SSH + pipelining + ControlPersist")
        print(f"{'what':<44} {'seconds':>8} {'x ping floor':>13}")
        print(f"{'ping round trip (floor, median of 3)':<44} {floor:8.2f} {1.0:13.1f}")
        print(f"{'first converge (install .. verify)':<44} {first:8.2f} {first / floor:13.1f}")
        print(f"{'second converge (0 changed: ' + str(changed2 == 0) + ')':<44} {second:8.2f} {second / floor:13.1f}")
        if verified:
            print(f"{'verification after restart (module elapsed)':<44} {max(verified):8.2f}   (slowest host)")
        for label, res in (("first", res1), ("second", res2)):
            print(f"\nslowest tasks of the {label} converge (profile_tasks, seconds across all hosts):")
            for task, seconds in slowest_tasks(res.stdout):
                print(f"  {seconds:6.2f}  {task}")
        return {
            "release": release,
            "chrony": version.group(1) if version else "?",
            "floor": floor,
            "first": first,
            "second": second,
            "unchanged": changed2 == 0,
            "verified": max(verified) if verified else None,
        }
    finally:
        if not keep:
            subprocess.run([*labctl, "down", "--name", name], env=env(), check=False, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument(
        "--release",
        default="12",
        help="Debian release(s) of the hosts and NTS servers, comma-separated (12, 13, testing); one lab each",
    )
    ap.add_argument("--keep", action="store_true", help="leave the lab(s) up")
    opts = ap.parse_args()
    rows = []
    for release in opts.release.split(","):
        row = measure(release.strip(), opts.clients, opts.keep)
        if row is None:
            return 1
        rows.append(row)
    print(f"\nconverge per release ({opts.clients} hosts each; x = ratio to that lab's ping floor)")
    print(f"{'release':<10} {'chrony':<8} {'ping':>6} {'first':>7} {'x':>5} {'second':>7} {'x':>5} {'proof':>6}")
    for r in rows:
        proof = f"{r['verified']:6.2f}" if r["verified"] is not None else "     -"
        print(
            f"{r['release']:<10} {r['chrony']:<8} {r['floor']:6.2f} {r['first']:7.2f} {r['first'] / r['floor']:5.1f}"
            f" {r['second']:7.2f} {r['second'] / r['floor']:5.1f} {proof}"
            + ("" if r["unchanged"] else "  (second run changed)")
        )
    met = all(r["first"] < 10 and r["second"] < 5 for r in rows)
    print(f"target (issue): first < 10 s, second < 5 s: {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
