# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""nts-probe: check NTS (RFC 8915) servers from the command line, Nagios style.

Each server gets one NTS key exchange (TLS 1.3, certificate chain and name verified) and one authenticated NTP
query, without chrony. Exit status: 0 all OK, 1 warning (certificate expires within --warn-days, or a server says
it is unsynchronised), 2 critical (a probe failed), 3 usage or setup error.

--timeout is one deadline for the whole probe of each server (DNS, TCP, TLS, NTS-KE and NTP together), so a server
that stalls at every step still costs at most one timeout. Whatever a server's network does (refuse, reset, stall,
send garbage), that server gets a CRITICAL line with the failed stage and a plain reason, and every other server is
still reported.

AEADs: by default AES-128-GCM-SIV (30) and AES-SIV-CMAC-256 (15) are offered, 30 only where the local
`cryptography` has a working AESGCMSIV; --aead sets the list (e.g. --aead 15, or --aead 30,15). The AEAD column
shows the negotiated id; --json adds aead_name, aead_note (why 30 was not offered, how GCM-SIV keys were derived)
and the record 1024 / exporter context details.

Examples:
  nts-probe nts1.example.net nts2.example.net:4461
  nts-probe --aead 30 nts1.example.net
  nts-probe --catalog roles/chrony_nts/files/nts_catalog.yml --json
  nts-probe --ca-file lab-ca.pem --address 10.89.0.11 nts1.lab.test
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ansible_collections.nts.chrony.plugins.module_utils import nts_prober
from ansible_collections.nts.chrony.plugins.module_utils.nts_tls import MissingDependencyError

EXIT_OK, EXIT_WARNING, EXIT_CRITICAL, EXIT_UNKNOWN = 0, 1, 2, 3


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 by default, which Nagios reads as CRITICAL
        self.print_usage(sys.stderr)
        print("%s: error: %s" % (self.prog, message), file=sys.stderr)
        sys.exit(EXIT_UNKNOWN)


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0, got %s" % text)
    return value


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0, got %s" % text)
    return value


def aead_list(text):
    """'30', '15' or '30,15' -> [30, 15] (repeated --aead options are joined in order)."""
    out = []
    for word in text.split(","):
        word = word.strip()
        try:
            out.append(int(word))
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not an AEAD id (30 or 15)" % word) from None
    return out


def load_catalog(path):
    """Servers from a YAML file with a top-level ``servers:`` list of dicts (``host``, optional ``ntsport``).

    Other keys of the file and of each entry are ignored, except ``address``, ``ca_file`` and ``server_name``
    which are passed on when present.
    """
    try:
        import yaml
    except ImportError:
        raise UsageError("--catalog needs PyYAML (pip install pyyaml)") from None
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise UsageError("cannot read catalog %s: %s" % (path, exc.strerror or exc)) from None
    except yaml.YAMLError as exc:
        raise UsageError("catalog %s is not valid YAML: %s" % (path, exc)) from None
    if not isinstance(data, dict) or not isinstance(data.get("servers"), list):
        raise UsageError("catalog %s: expected a mapping with a 'servers' list" % path)
    specs = []
    for i, entry in enumerate(data["servers"]):
        where = "catalog %s: servers[%d]" % (path, i)
        if not isinstance(entry, dict):
            raise UsageError("%s: expected a mapping, got %r" % (where, entry))
        host = entry.get("host")
        if not isinstance(host, str) or not host.strip():
            raise UsageError("%s: 'host' must be a non-empty string, got %r" % (where, host))
        port = entry.get("ntsport", nts_prober.NTS_KE_PORT)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise UsageError("%s (%s): 'ntsport' must be an integer 1..65535, got %r" % (where, host, port))
        spec = {"host": host.strip(), "port": port}
        for key in ("address", "ca_file", "server_name"):
            if entry.get(key) is not None:
                spec[key] = str(entry[key])
        specs.append(spec)
    if not specs:
        raise UsageError("catalog %s lists no servers" % path)
    return specs


def classify(result, warn_days):
    """(status, reason) for one result."""
    if not result["ok"]:
        return EXIT_CRITICAL, "%s: %s" % (result["stage"], result["error"])
    days = result["cert_days_left"]
    if days is not None and days < 0:
        return EXIT_CRITICAL, "certificate expired %d day(s) ago" % -days
    if days is not None and days < warn_days:
        return EXIT_WARNING, "certificate expires in %d day(s) (%s)" % (days, result["cert_not_after"])
    if not result["synchronised"]:
        return EXIT_WARNING, "server unsynchronised (stratum %s, leap %s)" % (result["stratum"], result["leap"])
    return EXIT_OK, "ok"


STATUS_NAMES = {EXIT_OK: "OK", EXIT_WARNING: "WARNING", EXIT_CRITICAL: "CRITICAL"}


def ms(value):
    return "-" if value is None else "%+.3f" % (value * 1000.0)


def print_table(results, statuses):
    header = ("STATUS", "SERVER", "AEAD", "COOKIES", "NTP", "OFFSET_MS", "DELAY_MS", "STRAT", "CERT_DAYS", "DETAIL")
    rows = [header]
    for r, (status, reason) in zip(results, statuses):
        ntp = "-"
        if r["ntp_port"] is not None:
            ntp = "%s:%s" % (r["ntp_server"] or r["ntp_address"] or r["host"], r["ntp_port"])
        rows.append(
            (
                STATUS_NAMES[status],
                "%s:%d" % (r["host"], r["port"]),
                str(r["aead"] or "-"),
                "-" if r["cookies"] is None else "%dx%d" % (r["cookies"], r["cookie_length"]),
                ntp,
                ms(r["offset"]),
                "-" if r["delay"] is None else "%.3f" % (r["delay"] * 1000.0),
                "-" if r["stratum"] is None else str(r["stratum"]),
                "-" if r["cert_days_left"] is None else str(r["cert_days_left"]),
                reason,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


def main(argv=None):
    parser = Parser(
        prog="nts-probe",
        description="Probe NTS servers: TLS 1.3 key exchange plus one authenticated NTP query (no chrony needed).",
        epilog="Exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 usage/setup error.",
    )
    parser.add_argument("servers", nargs="*", metavar="HOST[:NTSPORT]", help="NTS-KE servers (default port 4460)")
    parser.add_argument("--catalog", metavar="FILE", help="YAML file with a top-level 'servers:' list (host, ntsport)")
    parser.add_argument("--ca-file", metavar="PEM", help="trust only the CA certificates in this file")
    parser.add_argument(
        "--address", metavar="IP", help="connect to this IP instead of resolving the (single) server name"
    )
    parser.add_argument("--server-name", metavar="NAME", help="name the certificate must match (default: the host)")
    parser.add_argument("--no-cert-time-check", action="store_true", help="ignore certificate validity dates")
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=5.0,
        help="seconds for the whole probe of one server: DNS, TCP, TLS, NTS-KE and NTP together, not per step "
        "(default 5)",
    )
    parser.add_argument("--concurrency", type=non_negative_int, default=16, help="parallel probes (default 16)")
    parser.add_argument(
        "--warn-days", type=non_negative_int, default=14, help="warn when a certificate expires sooner (default 14)"
    )
    parser.add_argument(
        "--aead",
        type=aead_list,
        action="append",
        metavar="ID[,ID]",
        help="AEAD ids to offer, in order of preference: 30 (AES-128-GCM-SIV), 15 (AES-SIV-CMAC-256); repeatable "
        "(default 30,15 where this host's cryptography has AESGCMSIV, else 15)",
    )
    parser.add_argument("--json", action="store_true", help="print the full results as JSON")
    args = parser.parse_args(argv)

    try:
        specs = []
        for text in args.servers:
            try:
                host, port = nts_prober.parse_hostport(text)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            specs.append({"host": host, "port": port})
        if args.catalog:
            specs.extend(load_catalog(args.catalog))
        if not specs:
            raise UsageError("give at least one HOST[:NTSPORT] or --catalog FILE")
        if args.address or args.server_name:
            if len(specs) != 1:
                raise UsageError("--address and --server-name need exactly one server, got %d" % len(specs))
            if args.address:
                specs[0]["address"] = args.address
            if args.server_name:
                specs[0]["server_name"] = args.server_name
        if args.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if args.ca_file and not os.path.isfile(args.ca_file):
            raise UsageError("--ca-file %s: no such file" % args.ca_file)
        aeads = None
        if args.aead:
            aeads = [a for group in args.aead for a in group]
            try:
                note = nts_prober.choose_aeads(aeads)[1]
            except ValueError as exc:
                raise UsageError(str(exc).replace("aeads:", "--aead:", 1)) from None
            if note:
                print("nts-probe: %s" % note, file=sys.stderr)
        results = nts_prober.probe_many(
            specs,
            concurrency=args.concurrency,
            timeout=args.timeout,
            ca_file=args.ca_file,
            no_cert_time_check=args.no_cert_time_check,
            aeads=aeads,
        )
    except (UsageError, ValueError, MissingDependencyError) as exc:
        print("nts-probe: %s" % exc, file=sys.stderr)
        return EXIT_UNKNOWN

    statuses = [classify(r, args.warn_days) for r in results]
    worst = max(status for status, _reason in statuses)
    if args.json:
        for r, (status, reason) in zip(results, statuses):
            r["status"] = STATUS_NAMES[status]
            r["status_reason"] = reason
        print(json.dumps({"status": STATUS_NAMES[worst], "exit_code": worst, "results": results}, indent=2))
    else:
        print_table(results, statuses)
    return worst


def run_guarded(entry, argv, prog):
    """``entry(argv)`` without tracebacks: an unexpected error is UNKNOWN (3), never Python's exit 1 (read as
    WARNING). Shared by the command-line tools (nts-probe, nts-catalog); ``prog`` prefixes their messages."""
    try:
        return entry(argv)
    except KeyboardInterrupt:
        print("%s: interrupted" % prog, file=sys.stderr)
        return EXIT_UNKNOWN
    except Exception as exc:
        print("%s: internal error: %s: %s" % (prog, exc.__class__.__name__, exc), file=sys.stderr)
        return EXIT_UNKNOWN


def run(argv=None):
    return run_guarded(main, argv, "nts-probe")


if __name__ == "__main__":
    sys.exit(run())
