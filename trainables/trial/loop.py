"""The one training loop, for every registered model, on one worker.

It knows models only through their contract (models/contract.py) and Ray only through a ``Session``: the
trial function (trainable.py) hands it a session that reports to Tune directly (one worker, in the trial
process) or to Ray Train (DDP workers under ``TorchTrainer``). Once per epoch it reports
train and validation metrics, with a checkpoint written by rank 0.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchmetrics.aggregation import MeanMetric

from data import build_splits
from models import contract, create_model
from trainables.disk_space import DISK_FULL_KEY, DiskFullError
from trainables.objective import ACCELERATOR_SECONDS, PARAMETERS, SECONDS_PER_SAMPLE, cost_key
from trainables.outputs import CHECKPOINT_CONFIG_FILE, FIGURES_DIR
from trainables.results.record import TRIAL_SECONDS
from trainables.spec.schema import SearchSpec, TrainingSpec, import_user_modules
from trainables.trial.checkpoints import (
    config_text,
    latest_checkpoint,
    load_state,
    save_checkpoint,
)
from trainables.trial.figures import figures_due, save_validation_figures

# Fixed seed for validation masking/noise: the same weights give the same validation score,
# so an exported checkpoint reproduces the number recorded for it.
VALIDATION_SEED = 1234


class Session(Protocol):
    """What the loop needs from Ray (see trainables/trial/trainable.py for the two implementations)."""

    rank: int
    world_size: int

    def report(self, metrics: dict[str, Any]) -> None: ...

    def stop_requested(self) -> bool: ...


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite: retrying from a checkpoint would diverge again."""


@dataclass
class EpochResult:
    train: dict[str, float]
    val: dict[str, float]
    samples: int
    seconds: float  # wall seconds of training (validation excluded)
    accelerator_seconds: float  # this epoch's (training and validation) on every worker together


def train_loop(spec: SearchSpec, session: Session, trial_folder: Path, cpus: float = 1.0) -> None:
    """Train ``spec`` to its epoch budget (or until stopped), reporting once per epoch.

    Rank 0 writes each epoch's checkpoint into ``trial_folder`` (in the output folder) before
    reporting it. A trial that finds a checkpoint there (a retry after a crash, a DDP worker
    group restarted, a search continued after Ctrl-C or a kill) continues from the newest one,
    and first reports that epoch again: the search's record keeps an epoch once, so a report
    lost with a killed launcher is recorded now, and one recorded before is ignored.
    """
    import_user_modules(spec.imports)  # a spec that came pickled ran no validator here
    cfg = spec.training
    torch.manual_seed(cfg.seed + session.rank)
    torch.set_num_threads(max(1, int(cpus)))
    device = _device(session)

    splits = build_splits(spec.data)
    train_loader, val_loader = _loaders(splits.train, splits.val, spec, session)
    model = create_model(spec.model.name, **spec.model.args)
    contract.fit_to_data(model, splits.train)  # before the first step, so its state is saved with the weights
    model = model.to(device)
    wrapped = _wrap_ddp(model, session, device)
    steps_per_epoch = _steps_per_epoch(len(train_loader), cfg)
    optimizer = _optimizer(model, cfg)
    lr_schedule = _lr_schedule(optimizer, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")

    objective = spec.objective
    stored_config = config_text(spec.model_dump(mode="json"))
    start_epoch, best_value, epochs_since_best, trial_seconds, accelerator_seconds = 1, None, 0, 0.0, 0.0
    parameters = sum(p.numel() for p in model.parameters())
    state = _restored_state(trial_folder, stored_config, device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["scheduler"])  # the key older checkpoints carry too
        scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"] + 1
        best_value, epochs_since_best = state["best_value"], state["epochs_since_best"]
        trial_seconds = state["metrics"][TRIAL_SECONDS]
        accelerator_seconds = state["metrics"].get(ACCELERATOR_SECONDS, 0.0)  # older checkpoints: none
        # The random stream as it was after that epoch (masks, dropout, augmentation): the
        # trial goes on as if it had never stopped.
        torch.random.set_rng_state(state["rng"])
        session.report(state["metrics"])
        if state["metrics"]["finished"]:
            return

    metric = spec.metric
    train_means, val_means = _Means(device), _Means(device)
    for epoch in range(start_epoch, cfg.epochs + 1):
        epoch_start = time.perf_counter()
        train_loader.sampler.set_epoch(epoch)
        contract.on_epoch_start(model, epoch, cfg.epochs)
        try:
            result = _run_epoch(wrapped, model, train_loader, val_loader, optimizer, lr_schedule, scaler, cfg,
                                steps_per_epoch, device, epoch, session.stop_requested, train_means, val_means)
        except NonFiniteLossError as exc:
            # Not an error to retry: the same weights diverge again. The trial ends as failed
            # (NaN metric, no checkpoint) and the search goes on.
            session.report({metric: float("nan"), "epoch": epoch, "finished": False, "failed": True,
                            "stop_reason": str(exc), "resumed_from_epoch": start_epoch - 1,
                            "checkpointed": False, TRIAL_SECONDS: trial_seconds})
            return
        if result is None:  # the search's scheduler stopped this trial mid-epoch
            return
        metrics = {f"train_{k}": v for k, v in result.train.items()}
        metrics.update({f"val_{k}": v for k, v in result.val.items()})
        accelerator_seconds += result.accelerator_seconds
        # What the trial costs (trainables/objective.py), so that objectives may name it; the
        # model's own costs() come last and may replace a built-in one.
        metrics.update({PARAMETERS: parameters,
                        SECONDS_PER_SAMPLE: result.seconds / max(1, result.samples * session.world_size),
                        ACCELERATOR_SECONDS: accelerator_seconds})
        metrics.update({cost_key(k): v for k, v in contract.costs(model).items()})
        for missing in [o.metric for o in spec.objectives if o.metric not in metrics]:
            raise KeyError(f"metric {missing!r} is not reported by model {spec.model.name!r}; "
                           f"reported: {', '.join(sorted(metrics))}")
        value = metrics[metric]
        if objective.better(value, best_value):
            best_value, epochs_since_best = value, 0
        else:
            epochs_since_best += 1
        patience_hit = cfg.early_stopping_patience is not None and epochs_since_best >= cfg.early_stopping_patience
        finished = epoch == cfg.epochs or patience_hit
        metrics.update(
            epoch=epoch,
            lr=optimizer.param_groups[0]["lr"],
            best_value=best_value,
            samples_per_s=result.samples * session.world_size / max(result.seconds, 1e-9),
            epoch_time_s=result.seconds,
            # `finished`: this trial ends here on its own terms (full budget or patience), not
            # stopped by the scheduler; `failed` (a non-finite loss, above) is the loop's other end.
            finished=finished,
            stop_reason="patience" if patience_hit and epoch < cfg.epochs else ("budget" if finished else ""),
            failed=False,
            # 0 for a fresh start; the checkpoint's epoch when a retry or resume continued from one.
            resumed_from_epoch=start_epoch - 1,
            checkpointed=session.rank == 0,
        )
        trial_seconds += time.perf_counter() - epoch_start
        metrics[TRIAL_SECONDS] = trial_seconds
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": lr_schedule.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "metrics": metrics,
            "best_value": best_value,
            "epochs_since_best": epochs_since_best,
            "rng": torch.random.get_rng_state(),
        }
        full: DiskFullError | None = None
        if session.rank == 0:
            figures = None
            if figures_due(cfg, epoch, finished):  # in the checkpoint, so they reach best/ with it
                def figures(folder: Path) -> None:
                    save_validation_figures(model, val_loader.dataset, folder / FIGURES_DIR, device)
            try:
                save_checkpoint(trial_folder, epoch, state, stored_config, figures)
            except DiskFullError as exc:
                full = exc
        if _any_rank(full is not None, device):
            # Not the trial's fault, and not an error for Tune to retry: reported (without the
            # epoch, which has no checkpoint) for the driver to end the search as interrupted;
            # the trial continues from its last checkpoint once there is space.
            # The metric as NaN: Tune refuses a result without it.
            session.report({metric: float("nan"),
                            DISK_FULL_KEY: str(full) if full else "rank 0 could not write its checkpoint"})
            return
        session.report(metrics)
        if finished:
            return


def _restored_state(trial_folder: Path, stored_config: str, device: torch.device) -> dict[str, Any] | None:
    """The newest checkpoint of this trial, checked to be this configuration's."""
    folder = latest_checkpoint(trial_folder)
    if folder is None:
        return None
    if (folder / CHECKPOINT_CONFIG_FILE).read_text() != stored_config:
        raise RuntimeError(f"{folder}: was written by another configuration than this trial's; "
                           f"a trial id must never name two configurations")
    return load_state(folder, map_location=device)


def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device,
             means: _Means | None = None) -> dict[str, float]:
    """Sample-weighted mean of the model's validation metrics over every DDP rank's batches
    (into ``means``, a trial's own kept from epoch to epoch, when given)."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(VALIDATION_SEED)
    means = means or _Means(device)
    with torch.no_grad():
        for batch in loader:
            batch = _to_device(batch, device)
            means.update(model.validation_metrics(batch, generator=generator), weight=_batch_size(batch))
    return means.compute()


class _Means:
    """Running means of named metrics, one torchmetrics ``MeanMetric`` each: weighted, and
    gathered across DDP ranks when computed (so every rank gets the same figures). Computing
    resets them, so a trial keeps one for training and one for validation across its epochs:
    making a ``MeanMetric`` costs about 1 ms, a fifth of a short epoch's own CPU (bench/RESULTS.md,
    "Where the marginal trial's time goes")."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.metrics: dict[str, MeanMetric] = {}

    def update(self, values: dict[str, torch.Tensor], weight: float = 1.0) -> None:
        for key, value in values.items():
            if key not in self.metrics:
                # float64: sums over thousands of batches keep their digits.
                self.metrics[key] = MeanMetric().set_dtype(torch.float64).to(self.device)
            self.metrics[key].update(value.detach(), weight)

    def compute(self) -> dict[str, float]:
        """The means so far, then a fresh start for the next epoch's."""
        # Sorted: each compute is a collective, so every rank must call them in one order.
        means = {key: float(self.metrics[key].compute()) for key in sorted(self.metrics)}
        for metric in self.metrics.values():
            metric.reset()
        return means


def _run_epoch(wrapped, model, train_loader, val_loader, optimizer, lr_schedule, scaler, cfg: TrainingSpec,
               steps_per_epoch: int, device: torch.device, epoch: int, stop_requested: Callable[[], bool],
               train_means: _Means, val_means: _Means) -> EpochResult | None:
    """One epoch of training and validation; None if a stop was requested on the way."""
    wrapped.train()
    clock = _AcceleratorClock(device)
    start = time.perf_counter()
    micro_batches, samples = 0, 0
    max_micro = steps_per_epoch * cfg.grad_accum_steps
    optimizer.zero_grad(set_to_none=True)
    for batch in train_loader:
        if micro_batches == max_micro:
            break
        batch = _to_device(batch, device)
        micro_batches += 1
        is_step = micro_batches % cfg.grad_accum_steps == 0
        # Skip DDP's gradient all-reduce on accumulation micro-batches.
        sync = nullcontext() if is_step or not hasattr(wrapped, "no_sync") else wrapped.no_sync()
        with sync, _autocast(cfg, device):
            out = wrapped(batch)
            loss = out["loss"]
        if _any_rank(not torch.isfinite(loss).item(), device):  # every rank stops together
            raise NonFiniteLossError(f"loss became {loss.item()} at epoch {epoch}, micro-batch {micro_batches}")
        scaler.scale(loss / cfg.grad_accum_steps).backward()
        train_means.update(out)
        samples += _batch_size(batch)
        if is_step:
            if cfg.grad_clip_norm is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            lr_schedule.step()
            if stop_requested():
                return None
    train = train_means.compute()
    seconds = time.perf_counter() - start
    val = evaluate(model, val_loader, device, val_means)
    return EpochResult(train=train, val=val, samples=samples, seconds=seconds,
                       accelerator_seconds=_sum_over_ranks(clock.seconds(), device))


class _AcceleratorClock:
    """Accelerator-seconds since it was made: CUDA device time on a GPU (events on the current
    stream: the time the device spent on this worker's work, kernels queued included), the
    process's CPU-seconds without one (every thread of the trial's process; DataLoader
    worker processes are not counted)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.start = torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.start_cpu = time.process_time()

    def seconds(self) -> float:
        if not self.cuda:
            return time.process_time() - self.start_cpu
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return self.start.elapsed_time(end) / 1000.0  # milliseconds


def _sum_over_ranks(value: float, device: torch.device) -> float:
    """The sum of ``value`` over the DDP workers (itself on one worker)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    packed = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return float(packed.item())


def _any_rank(flag: bool, device: torch.device) -> bool:
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    packed = torch.tensor([float(flag)], device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return bool(packed.item())


def _device(session: Session) -> torch.device:
    if torch.cuda.is_available():
        # Ray sets CUDA_VISIBLE_DEVICES per worker; the first visible device is ours.
        return torch.device("cuda", 0)
    return torch.device("cpu")


def _loaders(train_set: Dataset, val_set: Dataset, spec: SearchSpec, session: Session) -> tuple[DataLoader, DataLoader]:
    cfg = spec.training
    workers = getattr(spec.data, "loader_workers", 0)  # a data kind may not have the setting
    common = dict(batch_size=cfg.batch_size, num_workers=workers, persistent_workers=workers > 0,
                  pin_memory=torch.cuda.is_available())
    # One seeded permutation per epoch, dealt round-robin to the ranks: the union of the
    # ranks' batches at a step is exactly one worker's batch of batch_size * workers, so
    # 2 workers at batch b follow the same trajectory as 1 worker at batch 2b.
    train_sampler = DistributedSampler(train_set, num_replicas=session.world_size, rank=session.rank,
                                       shuffle=True, seed=cfg.seed, drop_last=True)
    # Validation: a disjoint shard per rank (no padding duplicates); evaluate() weights by count.
    val_shard = Subset(val_set, range(session.rank, len(val_set), session.world_size))
    return (DataLoader(train_set, sampler=train_sampler, drop_last=len(train_sampler) >= cfg.batch_size, **common),
            DataLoader(val_shard, shuffle=False, **common))


def _wrap_ddp(model: torch.nn.Module, session: Session, device: torch.device) -> torch.nn.Module:
    if session.world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    # A model that freezes parts of itself for some epochs says so: DDP must then expect
    # parameters that get no gradient.
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=contract.ddp_find_unused_parameters(model))


def _steps_per_epoch(micro_batches: int, cfg: TrainingSpec) -> int:
    steps = max(1, micro_batches // cfg.grad_accum_steps)
    return min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps


def _optimizer(model: torch.nn.Module, cfg: TrainingSpec) -> torch.optim.Optimizer:
    # No weight decay on biases and norm weights (1-D tensors), as in MAE and most ViT recipes.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    optimizer_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return optimizer_cls(groups, lr=cfg.lr)


def _lr_schedule(optimizer: torch.optim.Optimizer, cfg: TrainingSpec, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    decay: Callable[[float], float] = {
        "cosine": lambda t: 0.5 * (1.0 + math.cos(math.pi * t)),
        "linear": lambda t: 1.0 - t,
        "constant": lambda t: 1.0,
    }[cfg.schedule]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return decay(min(1.0, (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _autocast(cfg: TrainingSpec, device: torch.device):
    if cfg.precision == "fp32":
        return nullcontext()
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ValueError("training.precision: fp16 needs a GPU; use bf16 or fp32 on CPU")
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _batch_size(batch: dict[str, torch.Tensor]) -> int:
    return next(v.shape[0] for v in batch.values() if torch.is_tensor(v))
