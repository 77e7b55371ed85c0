"""Training loop: the generic loop's samples per second against a hand-written PyTorch loop.

Same model, data, batch size, optimizer, LR schedule and gradient clipping; one thread,
like a one-CPU trial. Both time the training phase of an epoch the same way (validation
and checkpointing excluded); the first epoch of each run is a warm-up and is dropped.
Workloads: MAE tiny on hyperspectral crops (mae_sizes.yaml) and the digits classifier
(digits.yaml). Target: generic / hand-written >= 0.97.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader

from bench.common import REPEATS, Table, median, scratch
from tests.specs import SEARCH_SPACES

TARGET = 0.97


class LocalSession:
    """The loop's session without Ray: keeps each report's metrics, restores nothing."""

    rank, world_size = 0, 1

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def report(self, metrics: dict[str, Any]) -> None:
        self.reports.append(metrics)

    def stop_requested(self) -> bool:
        return False


def workload(name: str, epochs: int, steps: int) -> dict:
    if name == "MAE tiny":
        raw = yaml.safe_load((SEARCH_SPACES / "mae_sizes.yaml").read_text())
        raw["model"]["args"]["size"] = "tiny"
    else:
        raw = yaml.safe_load((SEARCH_SPACES / "digits.yaml").read_text())
    raw["training"].update(epochs=epochs, max_steps_per_epoch=steps, warmup_epochs=0, figures_every=0)
    return raw


def generic_loop(raw: dict) -> float:
    from trainables.trial.loop import train_loop
    from trainables.spec.schema import SearchSpec

    session = LocalSession()
    with scratch("loop") as folder:  # it checkpoints every epoch, as in a search
        train_loop(SearchSpec.model_validate(raw), session, folder / "trial", cpus=1)
    return median([r["samples_per_s"] for r in session.reports[1:]])


def hand_written_loop(raw: dict) -> float:
    """What a user writes by hand for the same training (the baseline)."""
    from data import build_splits
    from models import create_model
    from trainables.spec.schema import SearchSpec

    spec = SearchSpec.model_validate(raw)
    cfg = spec.training
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(1)
    train_set = build_splits(spec.data).train
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                        num_workers=spec.data.loader_workers)
    model = create_model(spec.model.name, **spec.model.args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.max_steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / total)
    rates = []
    for _ in range(cfg.epochs):
        model.train()
        start, samples = time.perf_counter(), 0
        for step, batch in enumerate(loader):
            if step == cfg.max_steps_per_epoch:
                break
            loss = model(batch)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
            optimizer.step()
            scheduler.step()
            samples += len(next(iter(batch.values())))
        rates.append(samples / (time.perf_counter() - start))
    return median(rates[1:])


def main(quick: bool = False) -> Table:
    repeats = 1 if quick else REPEATS
    epochs, steps = (2, 3) if quick else (4, 20)
    table = Table(f"Training loop: samples/s, generic loop vs hand-written ({epochs - 1} timed epochs x {steps} "
                  f"steps, median of {repeats} interleaved runs)",
                  ["workload", "generic samples/s", "hand-written samples/s", "generic / hand-written", "target"])
    for name in ("MAE tiny", "digits classifier"):
        raw = workload(name, epochs, steps)
        generic, hand = [], []
        for _ in range(repeats):
            generic.append(generic_loop(raw))
            hand.append(hand_written_loop(raw))
        table.add(name, median(generic), median(hand), median(generic) / median(hand), f">= {TARGET}")
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print(main(parser.parse_args().quick).render())
