"""The Tune trial driver: one call per trial, choosing where the training loop runs.

A one-worker trial runs the loop right here, in the trial process (about 0.1 s to start
with actor reuse). A trial with more workers starts a ``TorchTrainer`` (DDP, 13 to 40 s
of worker-group start measured on a 2-CPU machine) named after the trial, whose rank 0
reports reach Tune through ``TuneReportCallback`` so ASHA sees every epoch (Ray 2.60 Train
V2: ``Tuner(TorchTrainer)`` is not supported any more).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from ray import train, tune
from ray.train import Checkpoint, CheckpointConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from trainables.checkpoints import load_state
from trainables.loop import train_loop
from trainables.resources import trial_resources
from trainables.spec import SearchSpec, trial_spec


class TuneSession:
    """The loop's session when it runs inside the Tune trial process (one worker)."""

    rank = 0
    world_size = 1

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    def restored_state(self, map_location: torch.device) -> dict[str, Any] | None:
        return _read_state(tune.get_checkpoint(), map_location)

    def stop_requested(self) -> bool:
        # Tune runs a function trainable in a thread that keeps training after each report;
        # when ASHA stops the trial, Tune sets this event and gives the thread 2 s
        # (TUNE_FUNCTION_THREAD_TIMEOUT_S) to end before it reuses the actor. Checking it
        # after every optimizer step ends a stopped trial within one step instead of one
        # epoch, so no CPU goes to a trial already stopped. Ray has no public API for this.
        from ray.train._internal.session import get_session

        session = get_session()
        return session is not None and session.stop_event.is_set()


class TrainSession:
    """The loop's session on a Ray Train worker (DDP; every rank reports, rank 0 checkpoints)."""

    def __init__(self) -> None:
        context = train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        train.report(metrics, checkpoint=checkpoint)

    def restored_state(self, map_location: torch.device) -> dict[str, Any] | None:
        return _read_state(train.get_checkpoint(), map_location)

    def stop_requested(self) -> bool:
        return False  # Ray Train stops DDP workers itself


def make_trial_driver(spec: SearchSpec, gpus: bool, storage_path: str) -> Callable[[dict[str, Any]], None]:
    """The function trainable for ``tune.Tuner``: sampled config -> a trained trial."""

    def trial_driver(config: dict[str, Any]) -> None:
        trial = trial_spec(spec, config)
        request = trial_resources(spec, config, gpus)
        if request.workers == 1:
            train_loop(trial, TuneSession(), cpus=request.cpus_per_worker)
            return
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={"spec": trial.model_dump(mode="json"), "cpus": request.cpus_per_worker},
            scaling_config=ScalingConfig(
                num_workers=request.workers,
                use_gpu=request.gpus_per_worker > 0,
                resources_per_worker=request.worker,
            ),
            run_config=train.RunConfig(
                name=f"ddp-{tune.get_context().get_trial_id()}",
                storage_path=storage_path,
                callbacks=[TuneReportCallback()],
                # A lost or crashed DDP worker restarts the worker group from the latest
                # checkpoint, inside the trial, before Tune's own retries are needed.
                failure_config=train.FailureConfig(max_failures=spec.budget.max_failures),
                checkpoint_config=CheckpointConfig(
                    num_to_keep=1, checkpoint_score_attribute=spec.metric, checkpoint_score_order=spec.mode
                ),
            ),
        )
        trainer.fit()

    return trial_driver


def _train_worker(config: dict[str, Any]) -> None:
    train_loop(SearchSpec.model_validate(config["spec"]), TrainSession(), cpus=config["cpus"])


def _read_state(checkpoint: Checkpoint | None, map_location: torch.device) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    # as_directory reads a checkpoint on a local or shared filesystem in place and removes
    # the temporary copy it makes of a remote (s3://) one, so restores leave nothing behind.
    with checkpoint.as_directory() as folder:
        return load_state(Path(folder), map_location=map_location)
