"""Run every benchmark, print its table, and write them all to a markdown file.

    python -m bench.run_all              # the full set (about 55 minutes on 2 CPUs)
    python -m bench.run_all --quick      # each one briefly: checks they still run (CI does this)
    python -m bench.run_all --only trial_start loop_throughput
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from bench.common import machine, ray_cluster

BENCHMARKS = ("loop_throughput", "data_throughput", "tracking_overhead", "trial_start", "trial_overhead",
              "trial_marginal",
              "search_efficiency", "mo_hypervolume", "chaos")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="run each benchmark briefly (figures mean nothing)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    sections = [f"Machine: {machine()}\n", f"Command: python -m bench.run_all {' '.join(sys.argv[1:])}\n"]
    print("".join(sections), flush=True)
    # --quick only checks that each benchmark runs: one Ray cluster serves them all (each would
    # start its own, 5-10 s a time). A full run keeps a fresh cluster per benchmark, as measured.
    with ray_cluster(num_cpus=2) if args.quick else nullcontext():
        for name in args.only:
            started = time.perf_counter()
            table = importlib.import_module(f"bench.{name}").main(quick=args.quick)
            table.notes.append(f"ran in {time.perf_counter() - started:.0f} s")
            sections.append(table.render())
            print(table.render(), flush=True)
    if args.out:
        args.out.write_text("\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
