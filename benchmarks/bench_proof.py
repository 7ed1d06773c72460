#!/usr/bin/env python3
"""What the fresh, exercised proof costs, side by side with the proof it replaced, in the same run.

Makes its own lab (3 x --clients Debian 12 clients, 4 each by default) and prints:

1. The second run (nothing changes, everything proven again) on 4 converged hosts, with this checkout and with the
   baseline commit (the last one before the fresh proof, checked out into a temporary git worktree and run against
   the same hosts), alternated, median of --repeat runs each, and their ratio. The baseline's proof reads chronyd's
   history; this one requires a reply received during the run.
2. The first converge of 4 fresh hosts with the lab's polling (minpoll 0, maxpoll 4) and of 4 fresh hosts with
   chrony's default polling (no minpoll/maxpoll: what production gets), then the same with the proof alone, without
   waiting for chronyd to declare the clock synchronised (chrony_nts_verify_require_synchronised: false), on 4 more
   fresh hosts. The role's own "NTS verified in X s" (module time from the restart to the proof) is shown too.

Figures only: nothing here asserts a time. Reference (issue): the second run may grow by at most 0.5 s; the first
converge with default polling took 13.5 s against 7.9 s with the lab's polling, and linux-system-roles/timesync's first
run on the same kind of hosts 16 s, proving nothing.

    .venv/bin/python benchmarks/bench_proof.py [--clients 4] [--repeat 3] [--baseline REF] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
# The last commit whose proof read chronyd's history (before "Fresh proof: ..."); its role and modules are the baseline.
BASELINE_REF = "0515916"


def env(checkout: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        CONTAINERS_CONF=str(REPO / "lab" / "containers.conf"),
        ANSIBLE_CONFIG=str(checkout / "ansible.cfg"),
        PATH=f"{BIN}:{e.get('PATH', '')}",
    )
    return e


def playbook(checkout: Path, inventory: str, limit: str, extra: dict | None = None) -> tuple[float, str]:
    cmd = [str(BIN / "ansible-playbook"), "-i", inventory, str(checkout / "site.yml"), "--limit", limit]
    if extra:
        cmd += ["-e", json.dumps(extra)]
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=checkout, env=env(checkout), text=True, capture_output=True, check=False)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"site.yml --limit {limit} failed in {checkout}:\n{res.stdout[-4000:]}\n{res.stderr[-2000:]}")
    return wall, res.stdout


def verified(stdout: str) -> float:
    found = [float(x) for x in re.findall(r"NTS\s+verified\s+in\s+([0-9.]+)\s+s", stdout)]
    return max(found) if found else float("nan")


def changed(stdout: str) -> int:
    return sum(int(x) for x in re.findall(r"changed=(\d+)", stdout))


def default_polling_servers() -> list[dict]:
    ca = "{{ lookup('ansible.builtin.file', lab_ca_file) }}"
    return [
        {"host": "{{ lab_servers.%s.name }}" % s, "operator": "chrony-nts lab", "ca": ca}
        for s in ("nts1", "nts2", "ntpsec1")
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=4, help="hosts per group (3 groups)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", default=BASELINE_REF, help="git ref of the baseline (default %(default)s)")
    ap.add_argument("--keep", action="store_true", help="leave the lab up")
    opts = ap.parse_args()
    n = opts.clients
    name = f"bench-proof-{os.getpid() % 10000}"
    labctl = [str(BIN / "python"), str(REPO / "lab" / "labctl.py")]
    inventory = str(REPO / ".lab" / name / "inventory" / "hosts.yml")
    groups = {
        g: ",".join(f"client{i}" for i in range(k * n + 1, (k + 1) * n + 1))
        for k, g in enumerate(("lab", "default", "proof"))
    }
    worktree = Path(tempfile.mkdtemp(prefix="chrony-nts-baseline-"))
    shutil.rmtree(worktree)
    wt = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), opts.baseline],
                        capture_output=True, text=True, check=False)  # fmt: skip
    if wt.returncode != 0:
        print(f"cannot check out the baseline {opts.baseline}: {wt.stderr.strip()}", file=sys.stderr)
        return 1
    up = subprocess.run([*labctl, "up", "--name", name, "--clients", str(3 * n)], env=env(REPO), check=False)
    if up.returncode != 0:
        return 1
    try:
        # --- first converges on fresh hosts -------------------------------------------------------------------------
        lab_first, out = playbook(REPO, inventory, groups["lab"])
        lab_verify = verified(out)
        default_first, out = playbook(REPO, inventory, groups["default"],
                                      {"lab_builtin_site_servers": default_polling_servers()})  # fmt: skip
        default_verify = verified(out)
        proof_first, out = playbook(REPO, inventory, groups["proof"],
                                    {"lab_builtin_site_servers": default_polling_servers(),
                                     "chrony_nts_verify_require_synchronised": False})  # fmt: skip
        proof_verify = verified(out)

        # --- second runs: this checkout and the baseline, alternated ----------------------------------------------
        now, before, now_verify, before_verify = [], [], [], []
        for _ in range(opts.repeat):
            wall, out = playbook(REPO, inventory, groups["lab"])
            assert changed(out) == 0, "this checkout's second run changed something"
            now.append(wall)
            now_verify.append(verified(out))
            wall, out = playbook(worktree, inventory, groups["lab"])
            assert changed(out) == 0, "the baseline's second run changed something"
            before.append(wall)
            before_verify.append(verified(out))
        m_now, m_before = statistics.median(now), statistics.median(before)

        print(f"\nfresh proof on lab {name}: {n} hosts per group, SSH + pipelining + ControlPersist")
        print(f"\nsecond run, 0 changed, proof included (median of {opts.repeat}, alternated)")
        print(f"{'':44} {'seconds':>8} {'proof (slowest host)':>21}")
        print(f"{'baseline ' + opts.baseline + ' (proof reads history)':<44} {m_before:8.2f} "
              f"{statistics.median(before_verify):19.3f} s")  # fmt: skip
        print(f"{'this checkout (fresh + exercised proof)':<44} {m_now:8.2f} {statistics.median(now_verify):19.3f} s")
        print(
            f"{'ratio this / baseline':<44} {m_now / m_before:8.2f}   (growth {m_now - m_before:+.2f} s; "
            "issue: at most +0.5 s)"
        )
        print(f"\nfirst converge on {n} fresh hosts (install .. proof)")
        print(f"{'':44} {'seconds':>8} {'x lab':>6} {'restart->proof':>15}")
        rows = (
            ("lab polling (minpoll 0, maxpoll 4)", lab_first, lab_verify),
            ("default polling, clock synchronised too", default_first, default_verify),
            ("default polling, fresh proof alone", proof_first, proof_verify),
        )
        for label, wall, proof in rows:
            print(f"{label:<44} {wall:8.2f} {wall / lab_first:6.2f} {proof:13.2f} s")
        print(f"{'timesync first run (issue, same kind of hosts)':<44} {16.0:8.2f}   (proves nothing)")
        return 0
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False,
                       capture_output=True)  # fmt: skip
        if not opts.keep:
            subprocess.run([*labctl, "down", "--name", name], env=env(REPO), check=False, capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
