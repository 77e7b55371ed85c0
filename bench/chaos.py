"""Chaos soak: a search of short trials with ASHA through `launch.py` on a real 2-node Ray cluster
(token authentication on) logging to a real `mlflow server`, while, at random moments drawn from
a seed, a trial's process is killed (kill -9), the launcher is killed (kill -9 of its process
group) and run again, the worker node is killed (its raylet's process tree) and started again,
the MLflow server is killed and started again, and Ctrl-C is pressed once (SIGINT to the
launcher's process group, then the same command again). After the search (and `launch.py
sync`), the invariants a user relies on are checked:

1. exactly the budgeted trials, in summary.json and in the record;
2. no trial failed for an injected cause (the sleeper model never fails by itself);
3. every trial's epochs recorded once each, 1..last with none skipped, and no recorded epoch
   trained again (each attempt resumes right after the last recorded epoch);
4. one MLflow child run per trial under the search's parent run, its `hpsearch.end` tag the
   trial's status in summary.json and the record;
5. the Optuna study has the same trials, in matching states;
6. the best checkpoint loads and reproduces its recorded value on the validation split.

    python -m bench.chaos            # 100 trials, 14 faults (about 7 minutes on 2 busy CPUs)
    python -m bench.chaos --quick    # 12 trials, each fault once (what the tests run)

The moments are counted in the search's own progress (epochs recorded since the last fault,
drawn from the seed, plus a drawn fraction of a second), so a slow or busy machine shifts
them in time but not in where they fall in the search.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.common import Table, scratch
from bench.trial_overhead import Workload, service_spec
from tests.processes import MlflowServer, TwoNodeCluster, launch, launch_command
from tests.specs import PROJECT_ROOT, recorded_epochs, write_spec

TRIAL, LAUNCHER, NODE, MLFLOW, CTRL_C = "trial process", "launcher", "worker node", "MLflow server", "Ctrl-C"
KINDS = (TRIAL, LAUNCHER, NODE, MLFLOW, CTRL_C)
EXIT_INTERRUPTED = 130
NODE_WAIT_S = 30.0  # how long a node kill waits for a trial to run on the worker node
# The optuna study's state for each status of the record.
STUDY_STATE = {"finished": "COMPLETE", "stopped early": "PRUNED", "failed": "FAIL"}


@dataclass(frozen=True)
class Soak:
    trials: int
    epochs: int  # per trial, before ASHA stops it
    work_s: float  # one training step (one per epoch)
    faults: dict[str, int]  # kind -> how many times
    mlflow_down_s: tuple[float, float]  # how long the server stays down, drawn in this range
    seed: int = 0

    @property
    def max_failures(self) -> int:
        # Every trial kill and node kill may hit the same trial: it is retried each time.
        return self.faults[TRIAL] + self.faults[NODE] + 1

    @property
    def expected_epochs(self) -> int:
        # ASHA (grace 1, reduction 2, 4 epochs): about half the trials stop after 1 epoch, a
        # quarter after 2, the rest run 4; fewer early on, when its rungs are still empty.
        return 2 * self.trials


FULL = Soak(trials=100, epochs=4, work_s=0.5, faults={TRIAL: 4, LAUNCHER: 3, NODE: 3, MLFLOW: 3, CTRL_C: 1},
            mlflow_down_s=(5.0, 30.0))
# Epochs long enough that the faults (relaunches take 10-20 s) fall inside the search.
QUICK = Soak(trials=12, epochs=4, work_s=1.5, faults={kind: 1 for kind in KINDS}, mlflow_down_s=(2.0, 6.0))


@dataclass
class Injection:
    kind: str
    at_s: float  # seconds since the first launch
    at_epoch: int  # epochs recorded by then
    target: str


@dataclass
class Check:
    name: str
    held: bool
    details: str


@dataclass
class Outcome:
    injections: list[Injection]
    checks: list[Check]
    launches: int
    wall_s: float
    notes: list[str] = field(default_factory=list)


def soak_spec(soak: Soak) -> dict:
    """The sleeper search of the trial-overhead benchmark, with TPE, ASHA and room for retries."""
    raw = service_spec(Workload(trials=soak.trials, reports=soak.epochs, work_s=soak.work_s))
    raw["experiment"] = "chaos"
    raw["searcher"] = {"type": "optuna", "seed": soak.seed, "startup_trials": 5}
    raw["scheduler"] = {"type": "asha", "time_attr": "training_iteration", "grace_period": 1, "reduction_factor": 2}
    raw["budget"].update(max_failures=soak.max_failures)
    return raw


class Harness:
    """Runs the search and injects the faults; everything it starts, it stops by its id."""

    def __init__(self, soak: Soak, folder: Path) -> None:
        self.soak = soak
        self.rng = random.Random(soak.seed)
        self.folder = folder
        self.out = folder / "out"
        self.log = folder / "launch.log"
        self.cluster = TwoNodeCluster(folder / "ray")
        (folder / "mlflow").mkdir()
        self.server = MlflowServer(folder / "mlflow")
        self.command = launch_command(write_spec(folder, soak_spec(soak), "chaos.yaml"), self.out,
                                      "--address", self.cluster.address, "--mlflow-uri", self.server.uri)
        self.launcher: subprocess.Popen | None = None
        self.launches: list[str] = []  # how each launch ended
        self.finished = False  # a launch exited 0: the search is over
        self.injections: list[Injection] = []
        self.mlflow_back_at: float | None = None  # when the killed server is started again
        self.started = 0.0

    # -- the search ------------------------------------------------------------------------------

    def run(self) -> Outcome:
        self.cluster.start()
        try:
            self.server.start()
            self.started = time.monotonic()
            self._launch()
            plan = [kind for kind, times in self.soak.faults.items() for _ in range(times)]
            self.rng.shuffle(plan)
            for done, kind in enumerate(plan):
                # Spread over the search: 1 .. an even share of the epochs still to come.
                share = (self.soak.expected_epochs - _epoch_count(self.out)) // (len(plan) - done + 1)
                if not self._progress(self.rng.randint(1, max(1, share))):
                    break  # the search ended first: the rest of the plan is not injected
                time.sleep(self.rng.uniform(0.0, 1.0))
                if self.launcher.poll() is not None and not self._launcher_exited():
                    break
                self._inject(kind)
            self._to_the_end()
            wall = time.monotonic() - self.started
            self._restart_mlflow(wait=True)
            sync = subprocess.run([sys.executable, str(PROJECT_ROOT / "launch.py"), "sync", str(self.out)],
                                  capture_output=True, text=True, timeout=300, env=self.cluster.env)
            checks = [self._launches_check(), *check_invariants(self.out, self.soak, self.server.uri, sync)]
            return Outcome(self.injections, checks, len(self.launches), wall)
        finally:
            if self.launcher is not None and self.launcher.poll() is None:
                os.killpg(self.launcher.pid, signal.SIGKILL)
            self.server.stop()
            self.cluster.stop()

    def _launch(self) -> None:
        self.launcher = launch(self.command, self.log, self.cluster.env)

    def _ended(self, how: str) -> None:
        self.launches.append(how)
        self._say(f"launch {len(self.launches)} (pid {self.launcher.pid}): {how}")

    def _progress(self, epochs: int, timeout: float = 900) -> bool:
        """Wait until ``epochs`` more epochs are recorded; False if the search ended first."""
        target = _epoch_count(self.out) + epochs
        deadline = time.monotonic() + timeout
        while _epoch_count(self.out) < target:
            self._restart_mlflow_when_due()
            if self.launcher.poll() is not None:
                if not self._launcher_exited():
                    return False
            if time.monotonic() > deadline:
                raise RuntimeError(f"no progress in {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        return True

    def _launcher_exited(self) -> bool:
        """The launcher ended on its own: True when it was relaunched (a crash, which the
        launches check reports), False when the search is over."""
        code = self.launcher.returncode
        if code == 0:
            if not self.finished:
                self._ended("exit 0")
            self.finished = True
            return False
        self._ended(f"exit {code} without an injected cause")
        if len(self.launches) > 20:
            raise RuntimeError(f"the launcher keeps failing:\n{self.log.read_text()[-3000:]}")
        self._launch()
        return True

    def _to_the_end(self) -> None:
        while self.launcher.poll() is None or self._launcher_exited():
            self._restart_mlflow_when_due()
            time.sleep(0.2)

    # -- the faults ------------------------------------------------------------------------------

    def _inject(self, kind: str) -> None:
        running: dict[int, str] = {}
        if kind == TRIAL and not (running := self._running_trial()):
            return  # the search ended first
        if kind == NODE:  # preferably while it runs a trial; a trial kill has left it idle for good here
            running = self._running_trial(worker_only=True, timeout=NODE_WAIT_S, required=False)
        at, epoch = time.monotonic() - self.started, _epoch_count(self.out)
        if kind == TRIAL:
            pid = self.rng.choice(sorted(running))
            os.kill(pid, signal.SIGKILL)
            target = f"pid {pid} ({running[pid]})"
        elif kind == LAUNCHER:
            os.killpg(self.launcher.pid, signal.SIGKILL)
            self.launcher.wait(timeout=60)
            target = f"launcher pid {self.launcher.pid} (its process group)"
            self._ended("killed (kill -9)")
            self._launch()
        elif kind == NODE:
            killed = self.cluster.kill_worker()
            target = (f"raylet and {len(killed) - 1} processes under it, "
                      f"{'running a trial' if running else f'idle for {NODE_WAIT_S:.0f} s'}")
            time.sleep(self.rng.uniform(1.0, 5.0))  # a node that comes back a little later
            self.cluster.start_worker()
        elif kind == MLFLOW:
            self._restart_mlflow(wait=True)  # a server still down from before is first brought back
            target = f"mlflow server pid {self.server.process.pid} (its process group)"
            self.server.stop()
            self.mlflow_back_at = time.monotonic() + self.rng.uniform(*self.soak.mlflow_down_s)
        else:
            os.killpg(self.launcher.pid, signal.SIGINT)
            target = f"launcher pid {self.launcher.pid} (SIGINT to its process group)"
            code = self.launcher.wait(timeout=300)
            self._ended("Ctrl-C, exit 130" if code == EXIT_INTERRUPTED else f"Ctrl-C, exit {code}, not 130")
            self._launch()
        self.injections.append(Injection(kind, at, epoch, target))
        self._say(f"{at:7.1f} s, epoch {epoch:4d}: {kind}: {target}")

    def _running_trial(self, worker_only: bool = False, timeout: float = 300,
                       required: bool = True) -> dict[int, str]:
        """Wait until a trial runs (on the worker node, with ``worker_only``): its processes,
        or none if the launcher ended first (or, unless ``required``, after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not (running := self.cluster.trial_processes(worker_only)):
            self._restart_mlflow_when_due()
            if self.launcher.poll() is not None:
                return {}
            if time.monotonic() > deadline:
                if not required:
                    return {}
                raise RuntimeError(f"no trial ran in {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        return running

    def _restart_mlflow_when_due(self) -> None:
        if self.mlflow_back_at is not None and time.monotonic() >= self.mlflow_back_at:
            self._restart_mlflow()

    def _restart_mlflow(self, wait: bool = False) -> None:
        """Start the killed server again; the search goes on meanwhile (it takes 5-40 s to
        answer here), so only ``wait`` waits for it."""
        if self.server.process is None:
            self.server.start(wait=False)
            self._say(f"{time.monotonic() - self.started:7.1f} s  MLflow server started again")
        self.mlflow_back_at = None
        if wait:
            self.server.wait_until_up()

    def _launches_check(self) -> Check:
        expected = ("exit 0", "killed (kill -9)", "Ctrl-C, exit 130")
        odd = [f"launch {i + 1}: {how}" for i, how in enumerate(self.launches) if how not in expected]
        return Check("every launch ended as told (killed, 130 after Ctrl-C, 0 at the end)", not odd,
                     "; ".join(odd) or f"{len(self.launches)} launches: " + ", ".join(self.launches))

    @staticmethod
    def _say(line: str) -> None:
        print(f"chaos: {line}", flush=True)


def _epoch_count(out: Path) -> int:
    return sum(len(rows) for rows in recorded_epochs(out).values())


# -- the invariants ------------------------------------------------------------------------------


def check_invariants(out: Path, soak: Soak, mlflow_uri: str, sync: subprocess.CompletedProcess) -> list[Check]:
    summary = json.loads((out / "summary.json").read_text())
    events = [json.loads(line) for line in (out / "record.jsonl").read_text().splitlines()]
    ended = {e["id"]: e["status"] for e in events if e["e"] == "end"}
    checks: dict[str, Callable[[], Check]] = {
        "1. exactly the budgeted trials": lambda: _budgeted_trials(summary, events, soak),
        "2. no trial failed for an injected cause": lambda: _no_injected_failure(summary),
        "3. each epoch recorded once": lambda: _epochs_once(out),
        "4. one MLflow child run per trial": lambda: _mlflow_runs(summary, ended, mlflow_uri, sync),
        "5. the Optuna study": lambda: _optuna_study(out, events, ended),
        "6. best/ reproduces its value": lambda: _best_checkpoint(out, summary),
    }
    return [_checked(name, check) for name, check in checks.items()]


def _checked(name: str, check: Callable[[], Check]) -> Check:
    """A check that raises (a missing file, an unreachable server) did not hold."""
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - whatever broke is the finding
        return Check(name, False, f"{type(exc).__name__}: {exc}")


def _budgeted_trials(summary: dict, events: list[dict], soak: Soak) -> Check:
    issued = {e["id"] for e in events if e["e"] == "trial"}
    ended = {e["id"] for e in events if e["e"] == "end"}
    held = (len(summary["trials"]) == len(issued) == len(ended) == soak.trials and summary["state"] == "finished")
    return Check("1. exactly the budgeted trials (summary.json, record)", held,
                 f"budget {soak.trials}; summary.json {len(summary['trials'])} ({summary['state']}); "
                 f"record: {len(issued)} issued, {len(ended)} ended")


def _no_injected_failure(summary: dict) -> Check:
    failed = [f"{t['trial_id']}: {t['reason']}" for t in summary["trials"] if t["status"] == "failed"]
    retried = [t for t in summary["trials"] if t["failures"]]
    statuses = {s: sum(t["status"] == s for t in summary["trials"]) for s in ("finished", "stopped early", "failed")}
    return Check("2. no trial failed for an injected cause", not failed,
                 "; ".join(failed) or f"{statuses}; {sum(t['failures'] for t in retried)} crashes retried "
                                      f"in {len(retried)} trials")


def _epochs_once(out: Path) -> Check:
    problems = []
    resumes = 0
    for trial_id, rows in recorded_epochs(out).items():
        epochs = [r["epoch"] for r in rows]
        if epochs != list(range(1, len(epochs) + 1)):
            problems.append(f"{trial_id}: epochs {epochs}")
        # A new attempt (another resumed_from_epoch) must start right after the last recorded
        # epoch; starting earlier means recorded epochs were trained again.
        for before, row in zip([None, *rows], rows):
            start = row["resumed_from_epoch"]
            if before is None or start != before["resumed_from_epoch"]:
                resumes += start > 0
                if row["epoch"] != start + 1:
                    problems.append(f"{trial_id}: epoch {row['epoch']} trained after resuming from epoch {start}")
    return Check("3. each epoch recorded once, none skipped, none trained again", not problems,
                 "; ".join(problems) or f"{sum(len(r) for r in recorded_epochs(out).values())} epochs; "
                                        f"{resumes} resumes from a checkpoint")


def _mlflow_runs(summary: dict, ended: dict[str, str], uri: str, sync: subprocess.CompletedProcess) -> Check:
    from mlflow.tracking import MlflowClient

    from trainables.tracking.runs import END_TAG, TRIAL_ID_TAG

    info = summary["mlflow"]
    client = MlflowClient(uri)
    runs = client.search_runs([info["experiment_id"]], max_results=10000,
                              filter_string=f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}'")
    tags = {}
    problems = [] if sync.returncode == 0 else [f"launch.py sync exited {sync.returncode}: {sync.stderr[-500:]}"]
    for run in runs:
        trial_id = run.data.tags.get(TRIAL_ID_TAG)
        if trial_id in tags:
            problems.append(f"{trial_id}: more than one run")
        tags[trial_id] = run.data.tags.get(END_TAG)
    for trial in summary["trials"]:
        trial_id = trial["trial_id"]
        if tags.get(trial_id) != trial["status"] or ended.get(trial_id) != trial["status"]:
            problems.append(f"{trial_id}: MLflow {tags.get(trial_id)!r}, summary {trial['status']!r}, "
                            f"record {ended.get(trial_id)!r}")
    extra = set(tags) - {t["trial_id"] for t in summary["trials"]}
    if extra:
        problems.append(f"runs of no trial: {sorted(extra)}")
    if info["pending_writes"]:
        problems.append(f"{info['pending_writes']} writes still pending after sync")
    return Check("4. one MLflow child run per trial, its end = summary.json = record", not problems,
                 "; ".join(problems[:10]) or f"{len(runs)} child runs; sync: {sync.stdout.strip()}")


def _optuna_study(out: Path, events: list[dict], ended: dict[str, str]) -> Check:
    import optuna

    study = optuna.load_study(study_name="chaos", storage=f"sqlite:///{out / 'optuna.db'}")
    states = {t.number: t.state.name for t in study.trials}
    numbers = {e["id"]: e["study"] for e in events if e["e"] == "trial"}
    problems = [f"{trial_id} (study trial {number}): {states.get(number)}, record {ended.get(trial_id)!r}"
                for trial_id, number in numbers.items() if states.get(number) != STUDY_STATE.get(ended.get(trial_id))]
    if len(states) != len(numbers):
        unrecorded = {n: s for n, s in states.items() if n not in set(numbers.values())}
        problems.append(f"{len(states)} study trials for {len(numbers)} search trials; not in the record: {unrecorded}")
    counts = {s: sum(v == s for v in states.values()) for s in sorted(set(states.values()))}
    return Check("5. the Optuna study has the same trials and states", not problems,
                 "; ".join(problems[:10]) or f"{len(states)} study trials {counts}")


def _best_checkpoint(out: Path, summary: dict) -> Check:
    from data import build_splits
    from trainables import load_config, load_model
    from trainables.trial.loop import evaluate
    from trainables.spec.schema import SearchSpec

    model = load_model(out / "best")
    spec = SearchSpec.model_validate(load_config(out / "best"))
    loader = torch.utils.data.DataLoader(build_splits(spec.data).val, batch_size=spec.training.batch_size)
    value = evaluate(model, loader, torch.device("cpu"))[spec.metric.removeprefix("val_")]
    best = summary["best"]["value"]
    top = max(t["best_value"] for t in summary["trials"] if t["best_value"] is not None)
    held = abs(value - best) <= 1e-6 * max(1.0, abs(best)) and best == top
    return Check("6. best/ loads and reproduces its recorded value", held,
                 f"{summary['best']['trial_id']}: evaluated {value:.6f}, recorded {best:.6f}, best of the trials {top:.6f}")


# -- the table -----------------------------------------------------------------------------------


def main(quick: bool = False, soak: Soak | None = None) -> Table:
    outcome = run(soak or (QUICK if quick else FULL))
    return table(outcome)


def run(soak: Soak) -> Outcome:
    # A short root: Ray's socket paths under the cluster's temp folders stay within 107 bytes.
    with scratch("chaos") as folder:
        outcome = Harness(soak, Path(folder)).run()
    outcome.notes.append(f"{soak.trials} trials of up to {soak.epochs} epochs ({soak.work_s} s each), ASHA, "
                         f"TPE; 2 nodes x 1 CPU; max_failures {soak.max_failures}; seed {soak.seed}")
    return outcome


def table(outcome: Outcome) -> Table:
    result = Table("Chaos soak: faults injected during a search, and what held", ["check", "result", "details"])
    for check in outcome.checks:
        result.add(check.name, "held" if check.held else "NOT HELD", check.details)
    for kind in KINDS:
        done = [i for i in outcome.injections if i.kind == kind]
        result.add(f"injected: {kind}", len(done), ", ".join(f"{i.at_s:.0f} s (epoch {i.at_epoch})" for i in done))
    result.notes += outcome.notes
    result.notes.append(f"search wall time {outcome.wall_s:.0f} s over {outcome.launches} launches")
    result.notes += [f"{i.at_s:.1f} s (epoch {i.at_epoch}) {i.kind}: {i.target}" for i in outcome.injections]
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(main(parser.parse_args().quick).render())
