#!/usr/bin/env python3
"""What one run of the host-side NTS check (plugins/module_utils/nts_check.py) costs, next to one plain
``chronyc -c tracking``, and how fresh the metrics it writes are.

On loopback (chronyd -x, random 127.x.y.z, private CA, the client at chrony's default polling after iburst) the check
is run as the systemd service would run it: the system python3, ``-E -s``, the three files installed in one directory,
as a child process. Per run, from ``os.wait4`` (the child plus the chronyc processes it waited for):

- CPU time (user + system) and peak memory (max RSS of the largest process; through GNU time, see measure());
- wall time;
- freshness: the age of the reading when the file was written (file mtime - chrony_nts_last_check_timestamp_seconds),
  and the age of the authenticated sample the verdict rests on (chrony_nts_source_authenticated_sample_age_seconds).

Runs are --gap seconds apart (chronyd keeps 2 s between a source's burst requests; a timer runs the check every
60 s). Then the same check on a stopped server (it waits for its whole --dead-timeout). Figures only, no asserts.

    .venv/bin/python benchmarks/bench_nts_check.py [--runs 10] [--gap 3] [--dead-runs 3] [--dead-timeout 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / ".collections")]  # benchmarks run as scripts: the checkout and its collection

from ansible_collections.nts.chrony.plugins.module_utils import nts_check  # noqa: E402
from ansible_collections.nts.chrony.plugins.module_utils import nts_metrics as nm  # noqa: E402

from tests.lib.chronyd import CHRONYC, NtsClient, NtsServer, ServerSpec, unique_loopback_address  # noqa: E402
from tests.lib.pki import CertificateAuthority, make_shared_dir  # noqa: E402

PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


GNU_TIME = "/usr/bin/time"


def measure(cmd: list[str], scratch: Path, cwd: Path | None = None) -> dict:
    """Run ``cmd`` as a child: CPU seconds (user + sys) and wall seconds from our ``os.wait4``, peak RSS (MiB) from
    GNU time's own wait4 on it.

    A child's ru_maxrss starts at the RSS of the process it was forked from (Linux carries the pre-exec high-water
    mark over ``exec``): forked from this benchmark (~35 MiB with its imports) every child would read >= 35 MiB. GNU
    time is a ~1 MiB process, so the command it forks reports its own peak. Without GNU time, no memory figure.
    """
    report = scratch / "time.out"
    wrapped = [GNU_TIME, "-f", "%M", "-o", str(report), *cmd] if os.access(GNU_TIME, os.X_OK) else cmd
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        wrapped, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    rss = float("nan")
    if wrapped is not cmd:
        rss = int(report.read_text().split()[-1]) / 1024
        report.unlink()
    return {"cpu": usage.ru_utime + usage.ru_stime, "rss": rss, "wall": wall, "rc": proc.returncode}


def summary(rows: list[dict], key: str, fmt: str) -> str:
    values = [r[key] for r in rows]
    return ("median " + fmt + "  max " + fmt) % (statistics.median(values), max(values))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--gap", type=float, default=3.0, help="seconds between runs (> 2 s burst spacing)")
    ap.add_argument("--dead-runs", type=int, default=3)
    ap.add_argument("--dead-timeout", type=float, default=5.0)
    args = ap.parse_args()

    base = make_shared_dir(prefix="bench-nts-check-")
    os.chmod(base, 0o755)  # noqa: S103 - as an installed check
    package = base / nts_check.PACKAGE_DIR
    package.mkdir(parents=True)
    for name in nts_check.HOST_FILES:
        shutil.copy(REPO / "plugins" / "module_utils" / name, package / name)
    out = base / "chrony_nts.prom"
    ca = CertificateAuthority(base, name="bench")
    addr = unique_loopback_address()
    server = NtsServer.create(ca.issue(f"srv-{addr}", ips=[addr]), address=addr)
    client = None
    try:
        server.start()
        client = NtsClient.create([ServerSpec.for_server(server, options="iburst")], trusted_certs=[ca.cert_path])
        client.start()
        client.wait_for(lambda c: c.csv("sources")[0][1] == "*", timeout=30, what="source selected")
        time.sleep(2.5)
        check = [PYTHON, "-E", "-s", "-m", nts_check.MODULE, "--socket", str(client.socket_path)]
        tracking = [CHRONYC, "-h", str(client.socket_path), "-c", "tracking"]

        runs = []
        for i in range(args.runs):
            if i:
                time.sleep(args.gap)
            row = measure([*check, "--output", str(out), "--timeout", "20"], base, cwd=base)
            mtime = out.stat().st_mtime
            m = nm.parse(out.read_text())
            row["verified"] = m[("chrony_nts_verified", ())]
            row["age_written"] = mtime - m[("chrony_nts_last_check_timestamp_seconds", ())]
            row["sample_age"] = m[("chrony_nts_source_authenticated_sample_age_seconds", (("source", addr),))]
            row["duration"] = m[("chrony_nts_check_duration_seconds", ())]
            runs.append(row)
        plain = [measure(tracking, base) for _ in range(args.runs)]

        server.stop()
        dead = [
            measure([*check, "--output", str(out), "--timeout", str(args.dead_timeout)], base, cwd=base)
            for _ in range(args.dead_runs)
        ]
        dead_m = nm.parse(out.read_text())
    finally:
        if client is not None:
            client.cleanup()
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)

    if not os.access(GNU_TIME, os.X_OK):
        print(f"(no {GNU_TIME}: peak memory not measured; apt-get install time)")
    print(f"nts_check ({PYTHON} -E -s, healthy source, {args.runs} runs {args.gap:g} s apart; wait4 of the child):")
    print(f"  exit codes {sorted({r['rc'] for r in runs})}, verified {sorted({r['verified'] for r in runs})}")
    print("  CPU time (user+sys, incl. its chronyc calls) " + summary(runs, "cpu", "%.3f s"))
    print("  peak memory (max RSS, largest process)       " + summary(runs, "rss", "%.1f MiB"))
    print("  wall time                                    " + summary(runs, "wall", "%.3f s"))
    print("  check duration (metric)                      " + summary(runs, "duration", "%.3f s"))
    print("  reading age when written (mtime - timestamp) " + summary(runs, "age_written", "%.4f s"))
    print("  age of the authenticated sample at reading   " + summary(runs, "sample_age", "%.0f s"))
    print(f"chronyc -c tracking ({args.runs} runs):")
    print("  CPU time                                     " + summary(plain, "cpu", "%.3f s"))
    print("  peak memory (max RSS)                        " + summary(plain, "rss", "%.1f MiB"))
    print("  wall time                                    " + summary(plain, "wall", "%.3f s"))
    ratio = statistics.median(r["cpu"] for r in runs) / max(statistics.median(r["cpu"] for r in plain), 1e-6)
    print(f"  check / chronyc CPU time (medians)           {ratio:.1f}x")
    print(f"nts_check on a stopped server (--timeout {args.dead_timeout:g}, {args.dead_runs} runs):")
    print(f"  exit codes {sorted({r['rc'] for r in dead})}, verified {dead_m[('chrony_nts_verified', ())]:.0f}")
    print("  CPU time                                     " + summary(dead, "cpu", "%.3f s"))
    print("  peak memory (max RSS)                        " + summary(dead, "rss", "%.1f MiB"))
    print("  wall time                                    " + summary(dead, "wall", "%.3f s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
