# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""nts-catalog: keep the NTS server catalog fresh.

  nts-catalog refresh [--catalog FILE] [--out DIR] [--timeout S] [--concurrency N] [--ca-file PEM]
                      [--address HOST=IP ...] [--warn-days N] [--json]
      Probe every catalog server (NTS-KE + one authenticated NTP exchange, as nts-probe) within a bounded time
      (one deadline per server, N at a time: ceil(servers/N) waves of one timeout, printed before the first
      probe) and write DIR/catalog-health-YYYYMMDDTHHMMSSZ.json and .md. Exit status, Nagios style: 0 all OK,
      1 WARNING (a certificate expires within --warn-days, a server unsynchronised), 2 CRITICAL (a probe failed,
      a certificate expired), 3 usage or setup error.

  nts-catalog import LIST.yml [--catalog FILE] [--out FILE | --write] [--prune [--keep HOST ...]] [--diff] [--json]
      Convert the community list (nts-sources.yml format) to catalog entries, validate them, and print what an
      update would change: servers added (every field, and where provider ids come from), changed (field by
      field), not in the list (kept; removed with --prune). --out writes the merged catalog to a new file;
      --write replaces the catalog itself. Exit status, diff style: 0 no difference, 1 differences (review
      them), 2 some entries could not be converted (named with their field; nothing is written), 3 usage error.

The default catalog is the one this collection ships (roles/chrony_nts/files/nts_catalog.yml).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile

from ansible_collections.nts.chrony.plugins.module_utils.nts_tls import MissingDependencyError
from ansible_collections.nts.chrony.plugins.plugin_utils import catalog_import, catalog_refresh
from ansible_collections.nts.chrony.plugins.plugin_utils.catalog_schema import NtsCatalogError, validate_catalog
from ansible_collections.nts.chrony.plugins.plugin_utils.probe_cli import (
    EXIT_UNKNOWN,
    Parser,
    non_negative_int,
    positive_float,
    run_guarded,
)

DEFAULT_CATALOG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))),
    "roles",
    "chrony_nts",
    "files",
    "nts_catalog.yml",
)
IMPORT_SAME, IMPORT_DIFFERS, IMPORT_PROBLEMS = 0, 1, 2


class UsageError(Exception):
    pass


def positive_int(text):
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1, got %s" % text)
    return value


def load_catalog(path):
    """(validated catalog, file text); UsageError names the file and every schema problem."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise UsageError("cannot read catalog %s: %s" % (path, exc.strerror or exc)) from None
    try:
        data = catalog_import.load_yaml(path)
    except catalog_import.SourceError as exc:
        raise UsageError(str(exc)) from None
    try:
        return validate_catalog(data, source=path), text
    except NtsCatalogError as exc:
        raise UsageError("catalog %s is not valid: %s" % (path, exc)) from None


# --------------------------------------------------------------------------------------------------------------
# refresh


def cmd_refresh(args):
    catalog, _text = load_catalog(args.catalog)
    if not catalog["servers"]:
        raise UsageError("catalog %s lists no servers" % args.catalog)
    if args.ca_file and not os.path.isfile(args.ca_file):
        raise UsageError("--ca-file %s: no such file" % args.ca_file)
    try:
        addresses = catalog_refresh.parse_address_map(args.address or [], catalog)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    generated = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    stream = sys.stderr if args.json else sys.stdout  # with --json, stdout is the JSON alone

    def announce(text):
        print(text, file=stream, flush=True)

    results, timing = catalog_refresh.run_probes(
        catalog,
        timeout=args.timeout,
        concurrency=args.concurrency,
        ca_file=args.ca_file,
        addresses=addresses,
        recheck_dates=not args.no_date_recheck,
        announce=announce,
    )
    settings = {
        "timeout": args.timeout,
        "concurrency": args.concurrency,
        "ca_file": args.ca_file,
        "addresses": addresses,
    }
    report = catalog_refresh.build_report(
        catalog, args.catalog, results, timing, args.warn_days, generated, settings=settings
    )
    paths = catalog_refresh.write_report(report, args.out)
    if args.json:
        print(json.dumps(dict(report, report_files=list(paths)), indent=2, ensure_ascii=False))
    else:
        print(catalog_refresh.report_table(report), end="")
        print(catalog_refresh.report_summary(report), end="")
        print("report: %s\n        %s" % paths)
    return report["exit_code"]


# --------------------------------------------------------------------------------------------------------------
# import


def _write_atomic(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".nts-catalog-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o644)  # a catalog is public data, read by ansible as any user
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cmd_import(args):
    if args.write and args.out:
        raise UsageError("give --out FILE (a new file) or --write (the catalog in place), not both")
    if args.keep and not args.prune:
        raise UsageError("--keep only makes sense with --prune")
    if args.out and os.path.exists(args.catalog) and os.path.exists(args.out):
        if os.path.samefile(args.out, args.catalog):
            raise UsageError("--out %s is the catalog itself: use --write to replace it in place" % args.out)
        if not args.force:
            raise UsageError("--out %s exists: choose a new file or add --force" % args.out)
    catalog, text = load_catalog(args.catalog)
    try:
        entries = catalog_import.source_entries(catalog_import.load_yaml(args.source), args.source)
    except catalog_import.SourceError as exc:
        raise UsageError(str(exc)) from None
    converted = catalog_import.convert_source(entries, catalog, source_name=os.path.basename(args.source))
    hosts = {e["host"] for e in catalog["servers"]}
    unknown = [h for h in args.keep or [] if h.lower() not in hosts]
    if unknown:
        raise UsageError("--keep %s: not in the catalog" % ", ".join(unknown))
    result = catalog_import.diff_catalog(
        catalog, converted, prune=args.prune, keep=args.keep or (), updated=args.updated
    )
    new_text = catalog_import.render_catalog(result.merged, catalog_import.catalog_header(text))
    if args.json:
        print(json.dumps(catalog_import.report_json(result, args.source, args.catalog), indent=2, ensure_ascii=False))
    else:
        print(catalog_import.report_text(result, args.source, args.catalog, catalog), end="")
    if args.diff:
        print(catalog_import.unified_diff(text, new_text, args.catalog, args.out or "merged catalog"), end="")
    if result.problems:
        if args.out or args.write:
            print(
                "nts-catalog: nothing written: %d entr%s could not be converted (see PROBLEMS)"
                % (len(result.problems), "y" if len(result.problems) == 1 else "ies"),
                file=sys.stderr,
            )
        return IMPORT_PROBLEMS
    target = args.catalog if args.write else args.out
    if target:
        if args.write and not result.has_changes:
            print("catalog %s is already up to date; not rewritten" % target, file=sys.stderr)
        else:
            _write_atomic(target, new_text)
            print(
                "wrote %s (%d servers, updated %s)" % (target, len(result.merged["servers"]), result.merged["updated"]),
                file=sys.stderr,
            )
    return IMPORT_DIFFERS if result.has_changes else IMPORT_SAME


# --------------------------------------------------------------------------------------------------------------


def build_parser():
    parser = Parser(
        prog="nts-catalog",
        description="Keep the NTS server catalog fresh: re-probe it (refresh) or import the community list (import).",
        epilog="`nts-catalog COMMAND --help` for each command's options and exit status.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    ref = sub.add_parser(
        "refresh",
        help="probe every catalog server within a bounded time and write a dated health report",
        description="Probe every server of the catalog (NTS-KE over TLS 1.3 plus one authenticated NTP exchange) "
        "with one deadline per server, N at a time, and write DIR/catalog-health-<UTC time>.json and .md.",
        epilog="Exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 usage/setup error.",
    )
    ref.add_argument("--catalog", default=DEFAULT_CATALOG, metavar="FILE", help="catalog (default: the shipped one)")
    ref.add_argument(
        "--out",
        default="reports/catalog-health",
        metavar="DIR",
        help="directory for the reports (default reports/catalog-health)",
    )
    ref.add_argument(
        "--timeout",
        type=positive_float,
        default=5.0,
        help="seconds for the whole probe of one server, DNS to NTP (default 5)",
    )
    ref.add_argument(
        "--concurrency",
        type=positive_int,
        default=32,
        help="probes at once (default 32): the run takes at most ceil(servers/N) x timeout",
    )
    ref.add_argument("--ca-file", metavar="PEM", help="trust only the CA certificates in this file")
    ref.add_argument(
        "--address",
        action="append",
        metavar="HOST=IP",
        help="connect to IP for catalog server HOST (its certificate is still checked for HOST); repeatable",
    )
    ref.add_argument(
        "--warn-days", type=non_negative_int, default=14, help="WARNING when a certificate expires sooner (default 14)"
    )
    ref.add_argument(
        "--no-date-recheck",
        action="store_true",
        help="do not probe again, date check off, to read the notAfter of certificates that failed on their dates",
    )
    ref.add_argument("--json", action="store_true", help="print the report as JSON (progress goes to stderr)")
    ref.set_defaults(func=cmd_refresh)

    imp = sub.add_parser(
        "import",
        help="convert the community list (nts-sources.yml) and diff it against the catalog",
        description="Convert each entry of the community list of NTS servers to the catalog schema, validate it, "
        "and print the reviewed diff against the catalog. Writes only with --out FILE or --write.",
        epilog="Exit status: 0 no difference, 1 differences, 2 entries that could not be converted (nothing "
        "written), 3 usage error.",
    )
    imp.add_argument("source", metavar="LIST.yml", help="the community list (nts-sources.yml format)")
    imp.add_argument("--catalog", default=DEFAULT_CATALOG, metavar="FILE", help="catalog (default: the shipped one)")
    imp.add_argument("--out", metavar="FILE", help="write the merged catalog to this new file")
    imp.add_argument("--force", action="store_true", help="let --out replace an existing file (never the catalog)")
    imp.add_argument("--write", action="store_true", help="replace the catalog file itself with the merged one")
    imp.add_argument("--prune", action="store_true", help="remove catalog servers the list does not have")
    imp.add_argument("--keep", action="append", metavar="HOST", help="with --prune: keep this server (repeatable)")
    imp.add_argument(
        "--updated",
        metavar="YYYY-MM-DD",
        help="the merged catalog's 'updated' date when it changes (default: today, UTC)",
    )
    imp.add_argument("--diff", action="store_true", help="also print a unified diff of the catalog file")
    imp.add_argument("--json", action="store_true", help="print the result as JSON")
    imp.set_defaults(func=cmd_import)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "updated", None):
            try:
                datetime.date.fromisoformat(args.updated)
            except ValueError:
                raise UsageError("--updated %r is not a date YYYY-MM-DD" % args.updated) from None
        return args.func(args)
    except (UsageError, MissingDependencyError) as exc:
        print("nts-catalog: %s" % exc, file=sys.stderr)
        return EXIT_UNKNOWN


def run(argv=None):
    return run_guarded(main, argv, "nts-catalog")


if __name__ == "__main__":
    sys.exit(run())
