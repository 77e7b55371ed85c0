"""Chaos soak: a search of short trials with ASHA through `launch.py` on a real 2-node Ray cluster
(token authentication on) logging to a real `mlflow server`, its output folder on a tmpfs of its
own, while, at random moments drawn from a seed, a trial's process is killed (kill -9), the
launcher is killed (kill -9 of its process group) and run again, the worker node is killed (its
raylet's process tree) and started again, the MLflow server is killed and started again, Ctrl-C
is pressed (SIGINT to the launcher's process group, then the same command again), the launcher
is sent SIGTERM (to it alone, as a batch scheduler preempting the job does; then the same
command again), and the output folder's disk fills (a filler file takes every free byte; once
the launcher has ended, the filler is deleted and the same command run again). A damaged
record rides on one of those interruptions: while the launcher is not running, a line in the
middle of record.jsonl is cut short, the same command is run on it, then the line is restored
(as a user would) and the same command continues the search.

Each of those faults has its own promise, checked as it happens:

- Ctrl-C: exit status 130; SIGTERM: exit status 143, summary.json interrupted by SIGTERM, the
  log saying so and that the same command continues;
- full disk: exit status 74 within a minute of the fill, exactly one `error: [disk full] ...`
  line naming the output folder, no trial ended failed, no failure for a full disk, no trial of
  the Optuna study told FAIL;
- damaged record: exit status 2 before Ray starts, one line on stderr naming record.jsonl and
  the damaged line, and the folder's files (the record byte for byte) unchanged.

After the search (and `launch.py sync`), the invariants a user relies on are checked:

1. exactly the budgeted trials, in summary.json and in the record;
2. no trial failed for an injected cause (the sleeper model never fails by itself);
3. every trial's epochs recorded once each, 1..last with none skipped, and no recorded epoch
   trained again (each attempt resumes right after the last recorded epoch);
4. one MLflow child run per trial under the search's parent run, its `hpsearch.end` tag the
   trial's status in summary.json and the record;
5. the Optuna study has the same trials, in matching states;
6. the best checkpoint loads and reproduces its recorded value on the validation split.

    python -m bench.chaos            # 100 trials, 20 faults (7 minutes on 2 busy CPUs with the first 14)
    python -m bench.chaos --quick    # 12 trials, each fault once (what the tests run)

It runs as root: the output folder's file system is a real tmpfs mounted for the soak
(tests/small_disk.py); where `mount -t tmpfs` is not permitted it does not run (the test is
skipped, saying why).

The moments are counted in the search's own progress (epochs recorded since the last fault,
drawn from the seed, plus a drawn fraction of a second), so a slow or busy machine shifts
them in time but not in where they fall in the search.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
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
from tests.small_disk import fill, small_disk
from tests.specs import PROJECT_ROOT, recorded_epochs, write_spec
from trainables.outputs import (
    LOCK_FILE,
    LOCK_HOLDER_FILE,
    OPTUNA_DB,
    RECORD_FILE,
    SUMMARY_FILE,
)

TRIAL, LAUNCHER, NODE, MLFLOW, CTRL_C = "trial process", "launcher", "worker node", "MLflow server", "Ctrl-C"
SIGTERM, DISK, DAMAGED = "SIGTERM", "full disk", "damaged record"
KINDS = (TRIAL, LAUNCHER, NODE, MLFLOW, CTRL_C, SIGTERM, DISK, DAMAGED)
# The faults that end the launcher: a damaged record is made while it is not running, after one of them.
ENDS_LAUNCHER = (LAUNCHER, CTRL_C, SIGTERM, DISK)
EXIT_INTERRUPTED = 130
EXIT_SIGTERM = 128 + signal.SIGTERM
EXIT_DISK_FULL = 74
EXIT_BAD_INPUT = 2
DISK_FULL_WITHIN_S = 60.0  # "within seconds", with room for a busy machine
DISK_MIB = 256  # the output folder's tmpfs: room for the full soak many times over (it uses a few MB)
DAMAGED_KEEP = 20  # bytes a damaged line keeps: the start of an event, cut short
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
    max_gap: int | None = None  # at most this many epochs between two faults

    @property
    def max_failures(self) -> int:
        # Every trial kill and node kill may hit the same trial: it is retried each time.
        return self.faults[TRIAL] + self.faults[NODE] + 1

    @property
    def expected_epochs(self) -> int:
        # ASHA (grace 1, reduction 2, 4 epochs): about half the trials stop after 1 epoch, a
        # quarter after 2, the rest run 4; fewer early on, when its rungs are still empty.
        return 2 * self.trials


FULL = Soak(trials=100, epochs=4, work_s=0.5,
            faults={TRIAL: 4, LAUNCHER: 3, NODE: 3, MLFLOW: 3, CTRL_C: 1, SIGTERM: 2, DISK: 2, DAMAGED: 2},
            mlflow_down_s=(5.0, 30.0))
# Epochs long enough that the faults (relaunches take 10-20 s) fall inside the search, and gaps
# short enough that all 7 moments do (12 trials made 20 epochs: too few for 7 gaps of up to 3).
QUICK = Soak(trials=16, epochs=4, work_s=1.5, faults={kind: 1 for kind in KINDS}, mlflow_down_s=(2.0, 6.0),
             max_gap=2)


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

    def __init__(self, soak: Soak, folder: Path, disk: Path) -> None:
        self.soak = soak
        self.rng = random.Random(soak.seed)
        self.folder = folder
        self.disk = disk  # a tmpfs of its own, filled and freed by the full-disk fault
        self.out = disk / "out"
        self.log = folder / "launch.log"
        self.log_at = 0  # where the running launch's output starts in the log
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
        self.damage_next = False  # damage the record before the next relaunch
        # kind -> what went against the fault's own promise, and what was seen
        self.broken: dict[str, list[str]] = {kind: [] for kind in (CTRL_C, SIGTERM, DISK, DAMAGED)}
        self.seen: dict[str, list[str]] = {kind: [] for kind in (CTRL_C, SIGTERM, DISK, DAMAGED)}

    # -- the search ------------------------------------------------------------------------------

    def run(self) -> Outcome:
        self.cluster.start()
        try:
            self.server.start()
            self.started = time.monotonic()
            self._launch()
            plan = [kind for kind, times in self.soak.faults.items() if kind != DAMAGED for _ in range(times)]
            self.rng.shuffle(plan)
            # Each damaged record rides on a fault that ends the launcher: made before its relaunch.
            enders = [i for i, kind in enumerate(plan) if kind in ENDS_LAUNCHER]
            damage_after = set(self.rng.sample(enders, min(len(enders), self.soak.faults.get(DAMAGED, 0))))
            for done, kind in enumerate(plan):
                # Spread over the search: 1 .. an even share of the epochs still to come.
                share = (self.soak.expected_epochs - _epoch_count(self.out)) // (len(plan) - done + 1)
                share = min(share, self.soak.max_gap or share)
                if not self._progress(self.rng.randint(1, max(1, share))):
                    break  # the search ended first: the rest of the plan is not injected
                time.sleep(self.rng.uniform(0.0, 1.0))
                if self.launcher.poll() is not None and not self._launcher_exited():
                    break
                self.damage_next = done in damage_after
                self._inject(kind)
            self._to_the_end()
            wall = time.monotonic() - self.started
            self._restart_mlflow(wait=True)
            sync = subprocess.run([sys.executable, str(PROJECT_ROOT / "launch.py"), "sync", str(self.out)],
                                  capture_output=True, text=True, timeout=300, env=self.cluster.env)
            checks = [self._launches_check(), *self._fault_checks(),
                      *check_invariants(self.out, self.soak, self.server.uri, sync)]
            return Outcome(self.injections, checks, len(self.launches), wall)
        finally:
            if self.launcher is not None and self.launcher.poll() is None:
                os.killpg(self.launcher.pid, signal.SIGKILL)
            self.server.stop()
            self.cluster.stop()

    def _launch(self) -> None:
        self.log_at = self.log.stat().st_size if self.log.exists() else 0
        self.launcher = launch(self.command, self.log, self.cluster.env)

    def _relaunch(self) -> None:
        """The same command again, after a fault ended the launcher (first, when due, the
        damaged-record fault, while it is not running)."""
        if self.damage_next:
            self.damage_next = False
            self._damage_record()
        self._launch()

    def _launch_output(self) -> str:
        """What the last launch printed (the log holds every launch's output, appended)."""
        with self.log.open("rb") as handle:
            handle.seek(self.log_at)
            return handle.read().decode(errors="replace")

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
        elif kind == CTRL_C:
            os.killpg(self.launcher.pid, signal.SIGINT)
            target = f"launcher pid {self.launcher.pid} (SIGINT to its process group)"
            code = self.launcher.wait(timeout=300)
            self._ended(f"Ctrl-C, exit {code}" + ("" if code in (EXIT_INTERRUPTED, 0) else ", not 130"))
            self._interrupted(CTRL_C, code, EXIT_INTERRUPTED, "SIGINT", "Interrupted")
        elif kind == SIGTERM:
            os.kill(self.launcher.pid, signal.SIGTERM)  # to it alone, as a batch scheduler preempting the job
            target = f"launcher pid {self.launcher.pid} (SIGTERM to it alone)"
            code = self.launcher.wait(timeout=300)
            self._ended(f"SIGTERM, exit {code}" + ("" if code in (EXIT_SIGTERM, 0) else f", not {EXIT_SIGTERM}"))
            self._interrupted(SIGTERM, code, EXIT_SIGTERM, "SIGTERM", "Interrupted (SIGTERM)")
        else:
            target = self._fill_disk()
        if kind in ENDS_LAUNCHER:
            self.injections.append(Injection(kind, at, epoch, target))
            self._say(f"{at:7.1f} s, epoch {epoch:4d}: {kind}: {target}")
            if self.launcher.returncode == 0:  # it came as the search ended, and the search finished
                self.finished = True
                return
            self._relaunch()
            return
        self.injections.append(Injection(kind, at, epoch, target))
        self._say(f"{at:7.1f} s, epoch {epoch:4d}: {kind}: {target}")

    def _interrupted(self, kind: str, code: int, expected: int, signal_name: str, said: str) -> None:
        """An interruption's promise: its exit status, summary.json saying the search was
        interrupted by it, the log saying so and that the same command continues it."""
        text = self._launch_output()
        summary = json.loads((self.out / SUMMARY_FILE).read_text())
        if code == 0 and summary["state"] == "finished":  # it came as the search ended: it finished
            self.seen[kind].append("exit 0: it came as the search was ending; summary.json finished")
            return
        problems = [f"exit {code}, not {expected}"] if code != expected else []
        if (summary["state"], summary.get("interrupted_by")) != ("interrupted", signal_name):
            problems.append(f"summary.json {summary['state']!r} by {summary.get('interrupted_by')!r}")
        if said not in text or "same command" not in text:
            problems.append(f"the log does not say {said!r} and 'same command'")
        self.broken[kind] += problems
        self.seen[kind].append(f"exit {code}, summary.json {summary['state']} by {summary.get('interrupted_by')}")

    def _fill_disk(self) -> str:
        """Another job takes every free byte of the output folder's file system: the search must
        end as interrupted within seconds, in one line, exit 74, blaming no trial. The filler
        is then deleted (space freed) before the same command runs again."""
        lines_before = len((self.out / RECORD_FILE).read_bytes().splitlines())
        filler = fill(self.disk)
        filled = time.monotonic()
        target = f"{filler.stat().st_size / 2**20:.0f} MiB filler on the output folder's {DISK_MIB} MiB tmpfs"
        code = self.launcher.wait(timeout=300)
        took = time.monotonic() - filled
        self._ended(f"disk full, exit {code}" + ("" if code in (EXIT_DISK_FULL, 0) else f", not {EXIT_DISK_FULL}"))
        errors = [line for line in self._launch_output().splitlines() if line.startswith("error:")]
        if code == 0:  # the search had written its ending before the fill
            filler.unlink()
            self.seen[DISK].append("exit 0: the search had ended before the disk filled")
            return target
        problems = [f"exit {code}, not {EXIT_DISK_FULL}"] if code != EXIT_DISK_FULL else []
        if took > DISK_FULL_WITHIN_S:
            problems.append(f"ended {took:.0f} s after the disk filled")
        if len(errors) != 1 or "[disk full]" not in errors[0] or str(self.out) not in errors[0]:
            problems.append(f"error lines: {errors}")
        # Nothing blamed on a configuration: no trial ended failed, no failure for the full disk.
        events = [json.loads(line) for line in (self.out / RECORD_FILE).read_bytes().splitlines()[lines_before:]
                  if line.endswith(b"}")]
        problems += [f"{e['id']} ended failed: {e['reason']}" for e in events
                     if e["e"] == "end" and e["status"] == "failed"]
        problems += [f"{e['id']} failure for the full disk: {e['error']}" for e in events
                     if e["e"] == "failure" and _full_disk_text(e["error"])]
        filler.unlink()  # space freed, as the user would (SQLite may need room to read its study back)
        try:
            told_fail = _study_fails(self.out)
        except Exception as exc:  # noqa: BLE001 - an unreadable study is the finding
            told_fail = [f"{type(exc).__name__}: {exc}"]
        if told_fail:
            problems.append(f"Optuna study trials told FAIL: {told_fail}")
        self.broken[DISK] += problems
        self.seen[DISK].append(f"exit {code} {took:.1f} s after the fill; {errors[0] if errors else 'no error line'}")
        return target

    def _damage_record(self) -> None:
        """While the launcher is not running, a line in the middle of the record is cut short
        (as a full disk or a crash on a network file system leaves one): the same command must
        refuse in one line naming the file and the line, before Ray starts, changing nothing.
        Then the line is restored, as a user would, and the search continues."""
        at, epoch = time.monotonic() - self.started, _epoch_count(self.out)
        path = self.out / RECORD_FILE
        lines = path.read_bytes().splitlines(keepends=True)
        number = self.rng.randint(2, max(2, len(lines) - 1))  # neither the first (a session) nor the last
        kept = lines[number - 1]
        lines[number - 1] = kept[:DAMAGED_KEEP] + b"\n"
        path.write_bytes(b"".join(lines))
        before = _top_files(self.out)
        self.log_at = self.log.stat().st_size
        with self.log.open("a") as log:
            log.write(f"chaos: record.jsonl line {number} cut short; the same command:\n")
        done = subprocess.run(self.command, check=False, cwd=PROJECT_ROOT, capture_output=True, text=True,
                              timeout=300, env=self.cluster.env)
        with self.log.open("a") as log:
            log.write(done.stdout + done.stderr)
        said = done.stderr.strip().splitlines()
        self.launches.append(f"damaged record, exit {done.returncode}"
                             + ("" if done.returncode == EXIT_BAD_INPUT else f", not {EXIT_BAD_INPUT}"))
        self._say(f"launch {len(self.launches)}: {self.launches[-1]}")
        problems = [f"exit {done.returncode}, not {EXIT_BAD_INPUT}"] if done.returncode != EXIT_BAD_INPUT else []
        if len(said) != 1 or str(path) not in said[0] or f"line {number} " not in said[0]:
            problems.append(f"stderr: {said[-5:]}")
        if "Ray cluster" in done.stdout:
            problems.append("Ray was started")
        after = _top_files(self.out)
        changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
        if changed:
            problems.append(f"changed: {changed}")
        lines[number - 1] = kept  # restored, as a user would (from a copy of the line)
        path.write_bytes(b"".join(lines))
        self.broken[DAMAGED] += problems
        self.seen[DAMAGED].append(f"line {number} of {len(lines)}: exit {done.returncode}; "
                                  f"{said[0] if len(said) == 1 else said}")
        self.injections.append(Injection(DAMAGED, at, epoch, f"record.jsonl line {number} of {len(lines)} cut to "
                                                               f"{DAMAGED_KEEP} bytes, then restored"))
        self._say(f"{at:7.1f} s, epoch {epoch:4d}: {DAMAGED}: line {number} of {len(lines)}")

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
        # (A signal that comes as the search ends lets it finish: exit 0.)
        expected = ("exit 0", "killed (kill -9)", "Ctrl-C, exit 130", f"SIGTERM, exit {EXIT_SIGTERM}",
                    "Ctrl-C, exit 0", "SIGTERM, exit 0", "disk full, exit 0",
                    f"disk full, exit {EXIT_DISK_FULL}", f"damaged record, exit {EXIT_BAD_INPUT}")
        odd = [f"launch {i + 1}: {how}" for i, how in enumerate(self.launches) if how not in expected]
        return Check("every launch ended as told (killed; 130 after Ctrl-C, 143 after SIGTERM, 74 on a full "
                     "disk, 2 on a damaged record; 0 at the end)", not odd,
                     "; ".join(odd) or f"{len(self.launches)} launches: " + ", ".join(self.launches))

    def _fault_checks(self) -> list[Check]:
        promises = {
            CTRL_C: "Ctrl-C: exit 130, summary.json interrupted by SIGINT",
            SIGTERM: "SIGTERM: exit 143, summary.json interrupted by SIGTERM, the log says so",
            DISK: (f"full disk: exit 74 within {DISK_FULL_WITHIN_S:.0f} s, one `error: [disk full]` line, "
                   f"no trial failed, Optuna told no FAIL"),
            DAMAGED: "damaged record: exit 2 before Ray, one line naming file and line, nothing changed",
        }
        return [Check(promise, not self.broken[kind], "; ".join(self.broken[kind] or self.seen[kind]) or "not injected")
                for kind, promise in promises.items()]

    @staticmethod
    def _say(line: str) -> None:
        print(f"chaos: {line}", flush=True)


def _epoch_count(out: Path) -> int:
    return sum(len(rows) for rows in recorded_epochs(out).values())


def _full_disk_text(text: str) -> bool:
    return any(s in text.lower() for s in ("[disk full]", "no space left", "disk is full", "errno 28"))


def _study_fails(out: Path) -> list[int]:
    """The Optuna study's trials in state FAIL."""
    import optuna

    study = optuna.load_study(study_name="chaos", storage=f"sqlite:///{out / OPTUNA_DB}")
    return [t.number for t in study.trials if t.state == optuna.trial.TrialState.FAIL]


def _top_files(out: Path) -> dict[str, bytes]:
    """The output folder's own files (the record, the summary, the stores), byte for byte; not
    its lock (taken and given back by a refused launch) nor the folders a trial's process of a
    killed launch may still write in."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())
            if p.is_file() and p.name not in (LOCK_FILE, LOCK_HOLDER_FILE)}


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
    said = (sync.stdout.strip().splitlines() or [""])[-1]  # its last line (MLflow prints a line per run before)
    return Check("4. one MLflow child run per trial, its end = summary.json = record", not problems,
                 "; ".join(problems[:10]) or f"{len(runs)} child runs; sync: {said}")


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
    from trainables.spec.schema import SearchSpec
    from trainables.trial.loop import evaluate

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
    # The output folder on a tmpfs of its own, from the start: the full-disk fault fills it.
    with scratch("chaos") as folder, small_disk(Path(folder) / "disk", DISK_MIB * 1024) as disk:
        outcome = Harness(soak, Path(folder), disk).run()
        used = shutil.disk_usage(disk).used
    outcome.notes.append(f"{soak.trials} trials of up to {soak.epochs} epochs ({soak.work_s} s each), ASHA, "
                         f"TPE; 2 nodes x 1 CPU; max_failures {soak.max_failures}; seed {soak.seed}; output "
                         f"folder on a {DISK_MIB} MiB tmpfs ({used / 1e6:.1f} MB used at the end)")
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
    import pytest

    try:
        print(main(parser.parse_args().quick).render())
    except pytest.skip.Exception as skipped:  # no tmpfs to mount here (tests/small_disk.py)
        sys.exit(f"bench.chaos: not run: {skipped.msg}")
