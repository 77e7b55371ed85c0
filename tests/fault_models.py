"""Models that fail on purpose, for the failure tests (imported through a spec's `imports`).

Each writes one line per attempt into `marker_dir` (so a test can count retries) and fails
at `fail_epoch`: by raising, by killing its own process, or with a NaN loss. Raising and
killing happen on the first attempt only; the NaN, and "always_raise", every time. With fault "none"
it is a plain deterministic model (no randomness anywhere), for the DDP equivalence test;
with "constant_metric" every epoch validates to the same value (ties for the best epoch).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from models import register_model


class FaultyAutoencoder(nn.Module):
    """A linear per-pixel spectral autoencoder (real training, tiny) with a fault injected."""

    def __init__(self, in_chans: int, fault: str, fail_epoch: int, marker_dir: str) -> None:
        super().__init__()
        self.encode = nn.Linear(in_chans, 4)
        self.decode = nn.Linear(4, in_chans)
        self.fault, self.fail_epoch = fault, fail_epoch
        self.marker_dir = Path(marker_dir) / fault  # one folder per fault: trials may share marker_dir
        self.marker_dir.mkdir(parents=True, exist_ok=True)
        self.epoch = 0

    def fit_to_data(self, train_set) -> None:  # called once per attempt
        with (self.marker_dir / "attempts").open("a") as f:
            f.write("attempt\n")

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self.epoch = epoch

    def _mse(self, cube: Tensor) -> Tensor:
        pixels = cube.permute(0, 2, 3, 1)  # [B, H, W, C]
        return ((self.decode(self.encode(pixels)) - pixels) ** 2).mean()

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        loss = self._mse(batch["cube"])
        if self.epoch == self.fail_epoch:
            first = not (self.marker_dir / "failed").exists()
            if self.fault == "nan":
                loss = loss * float("nan")
            elif self.fault == "always_raise":
                raise RuntimeError("injected failure, at every attempt")
            elif first:
                (self.marker_dir / "failed").write_text(str(os.getpid()))
                if self.fault == "raise":
                    raise RuntimeError("injected failure")
                if self.fault == "kill":
                    # A real epoch takes a while: give Ray Train's controller time to collect
                    # the last report (it polls its workers) before the process dies.
                    time.sleep(3)
                    os.kill(os.getpid(), signal.SIGKILL)
        return {"loss": loss, "mse": loss.detach()}

    def validation_metrics(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        mse = self._mse(batch["cube"])
        if self.fault == "constant_metric":
            mse = torch.ones_like(mse)
        return {"loss": mse, "mse": mse}


@register_model
def faulty_autoencoder(in_chans: int = 10, fault: str = "raise", fail_epoch: int = 2,
                       marker_dir: str = "/tmp") -> FaultyAutoencoder:
    return FaultyAutoencoder(in_chans, fault, fail_epoch, marker_dir)
