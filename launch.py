"""Command line: `python launch.py --space mae_sizes.yaml [--set key=value ...] [--dry-run]`,
`python launch.py sync OUT` to send MLflow what it missed while unreachable, and
`python launch.py report OUT` to draw a search's report.

Parses arguments, loads and checks the spec, then hands over to trainables.search.run. Every
input problem (a damaged record, a disk too small for the search included) ends here as one
line on stderr and exit status 2, before Ray starts. A disk that fills during the search ends
it as interrupted, in one line, with exit status 74.
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from pathlib import Path

from trainables.disk_space import DiskFullError
from trainables.folder_lock import FolderBusyError
from trainables.results.record import SEARCH_INTERRUPTED, DamagedRecordError
from trainables.spec.loading import load_spec
from trainables.spec.schema import SpecError

EXIT_BAD_INPUT = 2
# A search interrupted by a signal exits as the shell reports a command the signal ended:
# 128 + its number (130 for Ctrl-C, 143 for SIGTERM), so a batch system sees it was preempted.
EXIT_SIGNALLED = 128
# A search interrupted by a full disk (sysexits' EX_IOERR): not a signal's status, so a batch
# script that requeues a preempted search (143) does not requeue this one into the same full
# disk; someone must free space first. Then the same command continues it.
EXIT_DISK_FULL = 74


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Hyperparameter search for PyTorch models on Ray Tune.")
    parser.add_argument("--space", required=True, help="a YAML in search_spaces/ (by name) or a path to one")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a spec value, e.g. --set budget.trials=4 (repeatable)")
    parser.add_argument("--out", type=Path, help="output folder (default: results/<experiment>)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the spec and the data, print a preview, and exit without starting Ray")
    parser.add_argument("--resume", action="store_true", help="continue the search already in the output folder")
    parser.add_argument("--mlflow-uri", help="an MLflow tracking server (default: a local store in the output folder)")
    parser.add_argument("--address", help="an existing Ray cluster (default: an embedded local one)")
    parser.add_argument("--quiet", action="store_true", help="no live progress table")
    return parser.parse_args(argv)


def sync(argv: list[str]) -> int:
    """`python launch.py sync OUT`: send the MLflow writes a search kept while the server was down."""
    parser = argparse.ArgumentParser(prog="launch.py sync", description=sync.__doc__)
    parser.add_argument("out", type=Path, help="the output folder of a search")
    out = parser.parse_args(argv).out
    from trainables.results.summary import update_tracking_info
    from trainables.tracking.runs import sync_folder

    try:
        info = sync_folder(out)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    update_tracking_info(out, info)
    if info["pending_writes"]:
        print(f"MLflow at {info['tracking_uri']} is still unreachable: {info['pending_writes']} writes wait "
              f"in {out}; run this again later.", file=sys.stderr)
        return 1
    print(f"MLflow at {info['tracking_uri']} is up to date (parent run {info['parent_run_id']}).")
    return 0


def report(argv: list[str]) -> int:
    """`python launch.py report OUT`: draw a search's report (finished or still running) into OUT/report."""
    parser = argparse.ArgumentParser(prog="launch.py report", description=report.__doc__)
    parser.add_argument("out", type=Path, help="the output folder of a search")
    out = parser.parse_args(argv).out
    from trainables.folder_lock import is_running
    from trainables.results.report import HTML_FILE, write_report
    from trainables.results.search_data import NotASearchError
    from trainables.tracking.runs import log_report_folder

    try:
        folder = write_report(out, echo=lambda line: print(line, file=sys.stderr))
    except NotASearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"Report: {folder / HTML_FILE}")
    # A running search logs its own report when it ends; a second MLflow writer now would race it.
    if not is_running(out) and (logged := log_report_folder(out, folder)) is not None:
        print(logged)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sync"]:
        return sync(argv[1:])
    if argv[:1] == ["report"]:
        return report(argv[1:])
    args = parse_args(argv)
    try:
        spec, spec_path = load_spec(args.space, args.overrides)
        from trainables.prepare import preflight

        out_dir = args.out or preflight.default_out_dir(spec)
        if args.dry_run:
            preflight.check_warm_start(spec, out_dir, spec_path.name)
            preflight.check_data_and_model(spec, spec_path.name)
            print(preflight.dry_run_report(spec, out_dir))
            return 0
        from trainables.search.run import SearchOptions, launch_search

        options = SearchOptions(out_dir=out_dir, mlflow_uri=args.mlflow_uri, address=args.address,
                                resume=args.resume, verbose=0 if args.quiet else 1)
        summary = launch_search(spec, options, where=spec_path.name)
    except (SpecError, FolderBusyError, DamagedRecordError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DiskFullError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DISK_FULL
    if summary["state"] == SEARCH_INTERRUPTED:
        return EXIT_SIGNALLED + signal.Signals[summary["interrupted_by"]]
    return 0 if summary["best"] is not None else 1


if __name__ == "__main__":
    status = main()
    # Everything is written by now: each background writer (MLflow's, the study's) was waited
    # for, bounded. The interpreter's last garbage collection would walk the whole heap of
    # torch, Ray, MLflow and SQLAlchemy objects (3.5 s of every launch's exit on 2 CPUs);
    # frozen objects are skipped. Objects made after this (atexit handlers) are still collected.
    gc.freeze()
    sys.exit(status)
