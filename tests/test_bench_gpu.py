"""bench/gpu.py without a GPU: it is skipped cleanly, and its pure pieces (the peak table, the
MFU arithmetic, the FLOP count, the GPU configuration read from mae_sizes.yaml, the
reservation per size, the tables of a run cut short) hold. Its GPU sections run only on a GPU."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest
import torch

from bench import gpu
from tests.specs import PROJECT_ROOT

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="the skip is for machines without a GPU")


@needs_no_gpu
def test_without_a_gpu_it_says_so_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "results"
    assert gpu.main(["--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip().splitlines() == [
        "bench/gpu.py: skipped: no CUDA GPU here (torch.cuda.is_available() is False)"]
    assert printed.err == ""
    assert not out.exists()


@pytest.mark.slow
@needs_no_gpu
def test_as_a_command_the_skip_exits_0(tmp_path):
    run = subprocess.run([sys.executable, "-m", "bench.gpu", "--out", str(tmp_path / "results")], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.strip().splitlines()) == 1 and "skipped" in run.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L40S", 362.0), ("NVIDIA L4", 121.0),
    ("Tesla V100-SXM2-32GB", None)])
def test_peak_by_device_name(name, peak):
    assert gpu.peak_bf16_tflops(name) == peak


def test_mfu_is_model_flops_per_second_over_the_peak():
    assert gpu.mfu(flops_per_step=989e12, seconds_per_step=4.0, peak_tflops=989.0) == pytest.approx(0.25)
    assert gpu.mfu(1e12, 0.5, None) is None  # an unknown GPU: no figure rather than a wrong one


class _Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 16)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": self.layer(batch["x"]).sum()}


def test_step_flops_counts_forward_and_backward_matmuls():
    model = _Linear()
    flops = gpu.step_flops(model, {"x": torch.randn(4, 8)}, contextlib.nullcontext())
    # forward x @ W.T and the weight's gradient, 2 * 4 * 8 * 16 each (the input needs no gradient)
    assert flops == 2 * (2 * 4 * 8 * 16)
    assert all(p.grad is None for p in model.parameters())  # the counted step leaves no gradient behind


def test_the_gpu_configuration_is_the_one_mae_sizes_yaml_documents():
    overrides = gpu.gpu_overrides()
    assert {"model.args.img_size=500", "model.args.patch_size=25", "model.args.spectral_patch=5",
            "training.batch_size=4", "training.precision=bf16"} <= set(overrides)
    assert not any(o.startswith("data.path=") for o in overrides)
    spec = gpu.gpu_spec("huge")
    assert spec.model.args["size"] == "huge" and spec.training.precision == "bf16"


def test_reservation_per_size_is_the_yaml_fraction_of_the_gpu():
    assert gpu.reserved_gib(gpu.gpu_spec("small"), "small", 80.0) == (1, 20.0)
    assert gpu.reserved_gib(gpu.gpu_spec("base"), "base", 80.0) == (1, 40.0)
    assert gpu.reserved_gib(gpu.gpu_spec("large"), "large", 80.0) == (2, 80.0)


def test_packing_figures_from_recorded_epochs():
    def rows(start: float, rates: list[float]) -> list[dict]:
        return [{"time": start + i, "samples_per_s": r, "epoch_time_s": 0.5} for i, r in enumerate(rates)]

    epochs = {"a": rows(0, [1.0, 10.0, 12.0]), "b": rows(1, [1.0, 20.0, 20.0]), "c": rows(10, [5.0])}
    summary = {"trials": [{"trial_id": t, "status": "stopped"} for t in epochs]}
    figures = gpu.packing_figures(epochs, summary, minutes=1.0)
    assert figures["samples_per_s"] == {"a": 11.0, "b": 20.0}  # the first epoch is warm-up; c has no other
    assert figures["sum_samples_per_s"] == 31.0
    assert figures["trained_at_once"] == 2  # a and b overlap; c starts after both
    # (10 + 12 + 20 + 20) * 0.5 samples after the first epochs, from time 0 to 10
    assert figures["samples_per_wall_s"] == pytest.approx(3.1)


def test_a_run_cut_short_still_renders_its_tables():
    text = gpu.render({"machine": "m", "command": "python -m bench.gpu",
                       "memory": {"status": "killed at its time box", "batch": 4, "total_gib": 80.0,
                                  "rows": [{"size": "tiny", "params": 5e6, "workers": 1, "reserved_gib": 20.0,
                                            "peak_allocated_gib": 1.0, "peak_reserved_gib": 1.5,
                                            "device_used_gib": 2.0, "ddp_buckets_gib": None, "fits": True},
                                           {"size": "huge", "skipped": "out of time"}]}})
    assert "killed at its time box" in text and "out of time" in text
    assert text.count("\n## ") + text.startswith("## ") == 3  # every section's table, run or not
