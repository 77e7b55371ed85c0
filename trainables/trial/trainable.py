"""The Tune trainable: one call per trial, choosing where the training loop runs.

A one-worker trial runs the loop right here, in the trial process (about 0.1 s to start
with actor reuse). A trial with more workers starts a ``TorchTrainer`` (DDP, 13 to 40 s
of worker-group start measured on a 2-CPU machine) named after the trial, whose rank 0
reports reach Tune through ``TuneReportCallback`` so the scheduler sees every epoch (Ray 2.60 Train
V2: ``Tuner(TorchTrainer)`` is not supported any more).

Both report metrics only. Checkpoints are written by the loop into the trial's folder of
the output folder and recorded by the search's record: Tune and Train hold none, so Tune's
per-checkpoint snapshot of the whole experiment never runs, and a retry, a restarted DDP
worker group and a continued search all resume the same way (the newest checkpoint there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ray import train, tune
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from trainables.outputs import DDP_DIR, trial_dir
from trainables.spec.resources import trial_resources
from trainables.spec.schema import SearchSpec, trial_spec
from trainables.trial.loop import train_loop


class TuneSession:
    """The loop's session when it runs inside the Tune trial process (one worker)."""

    rank = 0
    world_size = 1

    def report(self, metrics: dict[str, Any]) -> None:
        tune.report(metrics)

    def stop_requested(self) -> bool:
        # Tune runs a function trainable in a thread that keeps training after each report;
        # when the scheduler stops (or pauses) the trial, Tune sets this event and gives the thread
        # TUNE_FUNCTION_THREAD_TIMEOUT_S to end before it reuses the actor. Checking it
        # after every optimizer step ends a stopped trial within one step instead of one
        # epoch, so no CPU goes to a trial already stopped. Ray has no public API for this.
        from ray.train._internal.session import get_session

        session = get_session()
        return session is not None and session.stop_event.is_set()


class TrainSession:
    """The loop's session on a Ray Train worker (DDP; every rank reports, rank 0's metrics count)."""

    def __init__(self) -> None:
        context = train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()

    def report(self, metrics: dict[str, Any]) -> None:
        train.report(metrics)

    def stop_requested(self) -> bool:
        return False  # Ray Train stops DDP workers itself


def make_trainable(spec: SearchSpec, gpus: bool, out_dir: Path) -> Callable[[dict[str, Any]], None]:
    """The function trainable for ``tune.Tuner``: sampled config -> a trained trial."""

    def trainable(config: dict[str, Any]) -> None:
        trial = trial_spec(spec, config)
        request = trial_resources(spec, config, gpus)
        trial_id = tune.get_context().get_trial_id()
        folder = trial_dir(out_dir, trial_id)
        if request.workers == 1:
            train_loop(trial, TuneSession(), folder, cpus=request.cpus_per_worker)
            return
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={"spec": trial.model_dump(mode="json"), "cpus": request.cpus_per_worker,
                               "folder": str(folder)},
            scaling_config=ScalingConfig(
                num_workers=request.workers,
                use_gpu=request.gpus_per_worker > 0,
                resources_per_worker=request.worker,
            ),
            run_config=train.RunConfig(
                name=f"ddp-{trial_id}",
                storage_path=str(out_dir / DDP_DIR),
                callbacks=[TuneReportCallback()],
                # A lost or crashed DDP worker restarts the worker group, which continues from
                # the trial's newest checkpoint, inside the trial, before Tune's own retries.
                failure_config=train.FailureConfig(max_failures=spec.budget.max_failures),
            ),
        )
        trainer.fit()

    return trainable


def _train_worker(config: dict[str, Any]) -> None:
    train_loop(SearchSpec.model_validate(config["spec"]), TrainSession(), Path(config["folder"]), cpus=config["cpus"])
