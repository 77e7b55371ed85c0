"""Run one search end to end: lock the folder, connect to Ray, track, tune, summarise, export.

``launch_search`` is the one programmatic entry (``launch.py``, ``bench/`` and the tests
call it): it holds the output folder's lock for the whole search, so a second launch on the
same folder is refused, and ``run_search`` does the rest. Everything a search writes lands
under its output folder (see trainables/outputs.py); its record (trainables/results/record.py) is
written as things happen and read by everything that reports on it.

Ctrl-C (SIGINT) and SIGTERM (a preempted node, Slurm's --signal, Kubernetes' pod deletion):
the first ends every running trial at its last completed epoch (already recorded and
checkpointed), records the search as interrupted and returns; the same command then
continues it. A second signal ends at once.

A full disk (trainables/disk_space.py), met by any writer, ends the search the same way and
then raises DiskFullError, naming what could not be written and what the search needs; no
trial is failed for it, and the same command continues once there is space.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.stopper import Stopper

from trainables.disk_space import DiskFault, DiskFullError, as_disk_full
from trainables.spec.schema import SearchSpec, SpecError

# What ends a search as interrupted, not as a result: Ctrl-C, and the polite kill of a scheduler
# or an orchestrator that preempts the node (SIGKILL follows its grace period).
INTERRUPTING_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class SearchOptions:
    out_dir: Path
    mlflow_uri: str | None = None  # None: a local SQLite store in the output folder
    address: str | None = None  # None: an embedded local Ray (or RAY_ADDRESS when set)
    resume: bool = False  # reopen a finished search too (an unfinished one always continues)
    verbose: int = 1  # Tune's console output: 0 silent, 1 live table, 2 every result
    # More Tune callbacks (a notebook's own, or the benchmarks' timing), after the service's.
    callbacks: list[Any] = field(default_factory=list)


def launch_search(spec: SearchSpec, options: SearchOptions, where: str = "spec",
                  echo: Callable[[str], None] = print) -> dict[str, Any]:
    """What ``launch.py`` does once the spec is loaded: take the folder's lock (refused at
    once while another launch holds it), check the data and the model, prepare the folder,
    check it has the space the search needs, run the search. Returns the summary."""
    from trainables.folder_lock import FolderLock
    from trainables.prepare.preflight import (
        check_data_and_model,
        check_warm_start,
        make_output_folder,
        prepare_output,
        write_split_manifest,
    )
    from trainables.prepare.space import check_free_space

    check_warm_start(spec, options.out_dir, where)
    make_output_folder(options.out_dir)
    try:
        lock = FolderLock(options.out_dir).acquire()
    except OSError as exc:  # the lock's holder file, on a disk already full
        raise as_disk_full(exc, options.out_dir, "the folder's lock") or exc from None
    try:
        check_data_and_model(spec, where)
        if not prepare_output(spec, options.out_dir, options.resume):
            write_split_manifest(spec, options.out_dir)
        needed = check_free_space(spec, options.out_dir, where)
        try:
            return run_search(spec, options, echo)
        except SpecError as exc:  # found against the cluster (resources no node has): name the file too
            raise SpecError(f"{where}: {exc}") from None
        except DiskFullError as exc:
            raise exc.needing(needed) from None
    finally:
        lock.release()


def run_search(spec: SearchSpec, options: SearchOptions, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) the search in a prepared folder whose lock the caller holds."""
    out_dir = options.out_dir.resolve()

    import ray
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from trainables.outputs import SPEC_FILE, TUNE_DIR, study_storage_url
    from trainables.results.record import SearchRecord
    from trainables.search.cluster import autoscaler_max_resources, connect, disconnect
    from trainables.search.console import progress_reporter, ray_banner, warm_start_banner
    from trainables.search.metrics import SearchMetrics
    from trainables.search.recording import RecordKeeper
    from trainables.search.schedulers import build_scheduler
    from trainables.search.searcher import RecordSearchGenerator, StudySearcher, total_trials
    from trainables.search.warm_start import read_warm_starts, rung_entries
    from trainables.spec.resources import placement_for, plan_concurrency
    from trainables.tracking.journal import local_tracking_uri
    from trainables.tracking.runs import SEARCH_KEY, SearchTracker, ui_command
    from trainables.trial.trainable import make_trainable

    record = SearchRecord(out_dir, spec.objective)
    disk = DiskFault()  # a full disk met by any writer, in any thread, ends the search
    dashboard_url, started_here = connect(options.address)
    limit = spec.budget.time_limit_minutes
    stop = SearchStop(None if limit is None else max(0.0, limit * 60 - record.elapsed_s()), disk)
    # From connect() to the summary written: ray.init installed its own SIGTERM handler (it exits
    # 15, without a word, the summary unwritten), which this one replaces while the search starts
    # (MLflow, the study: slow on a loaded machine), runs and ends.
    signals = ExitStack()
    signals.enter_context(stop.catching_signals())
    try:
        cluster = ray.cluster_resources()
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        plan = plan_concurrency(spec, cluster, nodes, existing=not started_here,
                                grows_to=None if started_here else autoscaler_max_resources())
        gpus, concurrency = plan.gpus, plan.concurrency
        echo(f"{ray_banner(dashboard_url, cluster, concurrency, gpus)}\n  ({plan.note})")

        tracking_uri = options.mlflow_uri or local_tracking_uri(out_dir)
        tracker = SearchTracker(tracking_uri, spec.experiment, out_dir, disk)
        tracker.start(f"{spec.experiment} {time.strftime('%Y-%m-%d %H:%M:%S')}", spec.model_dump(mode="json"),
                      out_dir / SPEC_FILE)
        parent = tracker.writer.run_id_if_created(SEARCH_KEY) or "being created"
        echo(f"MLflow: tracking URI {tracking_uri} (parent run {parent})\n"
             f"  open its UI with: {ui_command(tracking_uri, out_dir)}")
        echo(f"Optuna study {spec.experiment!r}: {study_storage_url(spec.searcher.storage, out_dir)}\n"
             f"  watch it live with: optuna-dashboard {study_storage_url(spec.searcher.storage, out_dir)}  "
             f"(pip install optuna-dashboard)")

        if record.trials:
            ended = sum(1 for t in record.trials.values() if t.ended)
            paused = sum(1 for t in record.trials.values() if t.paused)
            echo(f"Resuming the search in {out_dir}: {ended} ended trials are kept, "
                 f"{len(record.to_continue())} unfinished continue from their last completed epoch"
                 + (f", {paused} paused wait for promotion." if paused else "."))
        record.open_for_writing()
        warm_starts = read_warm_starts(spec)
        scheduler = build_scheduler(spec, record, rung_entries(warm_starts))
        # An embedded cluster keeps the size it started with: place new trials where they fit.
        searcher = StudySearcher(spec, out_dir, record, scheduler.policy, stop.seconds_left, disk, warm_starts,
                                 fixed_cluster=cluster if started_here else None, gpus=gpus)
        warm_start = [start.entry() for start in searcher.warm_starts]
        if warm_start:
            echo(warm_start_banner(warm_start))
            tracker.tag_warm_start(warm_start)
        trial_runs = tracker.trial_runs(record)
        metrics = SearchMetrics(record, spec.experiment)
        for listener in (searcher.projection, trial_runs, metrics):
            record.add_listener(listener)
        # Tune counts samples: a promoted trial is issued again, so allow every trial once per
        # rung and the end; the searcher says when the search has nothing left to issue.
        ended = sum(1 for t in record.trials.values() if t.ended)
        to_issue = total_trials(spec) - ended
        samples = max(to_issue, 1) * (len(scheduler.policy.rungs()) + 1)
        trainable = tune.with_resources(make_trainable(spec, gpus, out_dir), placement_for(spec, gpus))
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=RecordSearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=concurrency)),
                scheduler=scheduler,
                num_samples=samples,
                # A one-worker trial runs in the trial actor; reusing it saves 1.5-3 s per trial.
                reuse_actors=True,
                trial_name_creator=lambda trial: trial.trial_id,
                trial_dirname_creator=lambda trial: trial.trial_id,
            ),
            run_config=tune.RunConfig(
                # Tune's scratch folder: the record holds the search's state, trials their
                # checkpoints in trials/, so Tune keeps no checkpoint and snapshots rarely.
                name=f"{TUNE_DIR}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(out_dir / TUNE_DIR),
                stop=stop,
                callbacks=[RecordKeeper(record, scheduler, disk), metrics, *options.callbacks],
                failure_config=tune.FailureConfig(max_failures=spec.budget.max_failures),
                verbose=options.verbose,
                progress_reporter=progress_reporter(spec),
            ),
        )
        # fit() ends by reading Tune's result files, which the service does not write.
        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
        started = time.monotonic()
        with _without_tune_extras():
            try:
                if to_issue > 0:  # a finished search reopened with --resume has none
                    tuner.fit()
            except KeyboardInterrupt:  # the second signal: end now; every recorded epoch is kept
                stop.interrupted = True
                stop.signal_name = stop.signal_name or signal.SIGINT.name  # Python's own Ctrl-C
            except Exception as exc:  # Tune's own files (error files, snapshots) on a full disk
                full = as_disk_full(exc, out_dir / TUNE_DIR, "Ray Tune's files")
                if full is None:
                    raise
                disk.report(full)
        from trainables.search.ending import end_search

        try:
            summary = end_search(spec, record, tracker, trial_runs, stop.interrupted or bool(disk),
                                 time.monotonic() - started, echo, stop.signal_name, warm_start)
        except Exception as exc:  # what the ending writes (summary, best/, report) may not fit either
            full = as_disk_full(exc, out_dir, "the search's summary")
            if full is None:
                raise
            disk.report(full)
        # The study's writer is a daemon thread, and end_search ends the paused and time-limited
        # trials: wait (bounded) until the study holds those ends before the process may exit.
        searcher.projection.flush()
        if disk.error is not None:
            raise disk.error
        return summary
    except OSError as exc:  # before Tune ran: the record's first line, the study's creation, ...
        full = as_disk_full(exc, out_dir, "the search's stores")
        if full is None:
            raise
        raise full from None
    finally:
        signals.close()
        record.close_quietly()
        disconnect(started_here)


class SearchStop(Stopper):
    """Ends the whole search on Ctrl-C or SIGTERM, or when its time limit is spent. Tune then
    stops the running trials without calling them complete, so the record leaves them
    unfinished: interrupted (continued by the next launch) or, at the time limit, stopped early."""

    def __init__(self, seconds_left: float | None, disk: DiskFault | None = None) -> None:
        self.deadline = None if seconds_left is None else time.monotonic() + seconds_left
        self.interrupted = False
        self.signal_name: str | None = None  # the signal that interrupted the search
        self.disk = disk if disk is not None else DiskFault()
        self._disk_said = False

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def seconds_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def stop_all(self) -> bool:
        if self.disk and not self._disk_said:
            self._disk_said = True
            print(f"\nThe disk is full ({self.disk.error}): ending the running trials at their last completed "
                  f"epoch.", file=sys.stderr, flush=True)
            # Tune's snapshots of its scratch folder (never read back) now fail too, each with a traceback.
            logging.getLogger("ray.tune.execution.experiment_state").setLevel(logging.CRITICAL)
        return (self.interrupted or bool(self.disk)
                or (self.deadline is not None and time.monotonic() >= self.deadline))

    @contextmanager
    def catching_signals(self) -> Iterator[None]:
        """Tune's own SIGINT handler is off (it would record a Ctrl-C as the end of the search),
        and Ray's SIGTERM handler is replaced (it exits without ending the search)."""
        def on_signal(signum: int, frame: Any) -> None:
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True
            self.signal_name = signal.Signals(signum).name
            print(f"\nInterrupted ({self.signal_name}): ending the running trials at their last completed epoch "
                  "(Ctrl-C or a second signal to end at once).", file=sys.stderr, flush=True)

        if not _in_main_thread():
            yield
            return
        previous = {signum: signal.signal(signum, on_signal) for signum in INTERRUPTING_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@contextmanager
def _without_tune_extras() -> Iterator[None]:
    """Keep Tune from adding its CSV, JSON and TensorBoard loggers (the record and MLflow have
    every metric; TensorBoard files alone cost about 4 ms of Tune's event loop per report)
    and from installing its SIGINT handler (SearchStop handles Ctrl-C)."""
    names = ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "TUNE_DISABLE_SIGINT_HANDLER")
    previous = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
