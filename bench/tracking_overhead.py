"""Tracking: what one report costs in MLflow, and its share of a trial's wall time.

A report of a MAE trial (its ~25 numeric metrics) is logged to a child run through the
service's ``RunWriter`` against the default local SQLite store, N times. Measured: the cost
on Tune's event loop per report (the writer queues it) and the cost of the write itself on
the writer thread. The share is the write's cost over the wall time of one epoch of the
default MAE search (``bench/loop_throughput.py``'s MAE tiny workload: 20 steps of batch 8
plus validation), as if the write blocked the trial, which it does not. Target: <= 1%.
"""

from __future__ import annotations

import argparse
import time

from bench.common import REPEATS, Table, median, scratch
from bench.loop_throughput import LocalSession, workload

TARGET = 0.01
METRICS = ["train_loss", "train_mse", "train_sam", "train_variance", "train_range", "val_loss", "val_mse",
           "val_sam", "val_variance", "val_range", "val_psnr", "val_ssim", "epoch", "lr", "best_value",
           "samples_per_s", "epoch_time_s", "resumed_from_epoch", "time_this_iter_s", "time_total_s",
           "training_iteration", "iterations_since_restore", "time_since_restore", "timestamp", "pid"]


def per_report_ms(reports: int) -> tuple[float, float]:
    """(ms on the caller's thread, ms of the write itself) per report."""
    from trainables.tracking.journal import RunWriter, local_tracking_uri

    with scratch("tracking") as folder:
        writer = RunWriter(local_tracking_uri(folder), folder, "bench_tracking")
        writer.create_run("search", "search", {})
        writer.create_run("trial", "trial", {}, parent="search")
        writer.flush()
        start = time.perf_counter()
        for step in range(reports):
            writer.log("trial", metrics=[(name, 0.5 + step, step) for name in METRICS])
        queued = time.perf_counter() - start
        writer.flush()
        written = time.perf_counter() - start
    return 1000 * queued / reports, 1000 * written / reports


def epoch_seconds(quick: bool) -> float:
    """Wall time of one epoch (training and validation) of the default MAE search's tiny size."""
    from trainables.trial.loop import train_loop
    from trainables.spec.schema import SearchSpec

    session = LocalSession()
    raw = workload("MAE tiny", epochs=2, steps=3 if quick else 20)
    with scratch("epoch") as folder:  # it checkpoints every epoch, as in a search
        start = time.perf_counter()
        train_loop(SearchSpec.model_validate(raw), session, folder / "trial", cpus=1)
        return (time.perf_counter() - start) / len(session.reports)


def main(quick: bool = False) -> Table:
    repeats = 1 if quick else REPEATS
    reports = 20 if quick else 200
    queued, written = [], []
    for _ in range(repeats):
        q, w = per_report_ms(reports)
        queued.append(q)
        written.append(w)
    epoch = median([epoch_seconds(quick) for _ in range(repeats)])
    share = median(written) / 1000 / epoch
    table = Table(f"Tracking: MLflow (local SQLite store), {len(METRICS)} metrics per report, {reports} reports, "
                  f"median of {repeats}", ["measure", "value", "target"])
    table.add("ms per report on Tune's event loop (queued)", median(queued), "")
    table.add("ms per report, the write itself (writer thread)", median(written), "")
    table.add("MAE tiny epoch wall time, s (train + validation)", epoch, "")
    table.add("write / epoch wall time", f"{share:.3%}", f"<= {TARGET:.0%}")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(main(parser.parse_args().quick).render())
