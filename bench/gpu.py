"""The first GPU (issue 21, item 6): what this service does on one GPU, in one run of at most
8 minutes. Without a CUDA GPU it prints one line saying it was skipped and exits 0.

    python -m bench.gpu                     # writes gpu.json and gpu.md to $OUT (or ./gpu-results)
    python -m bench.gpu --budget-s 300      # a shorter run: every section gets less time

Sections, each in a process of its own with a time box (a hung CUDA call or Ray start is
killed and the next section still runs); the JSON and the markdown are rewritten after each
section, and each section writes what it has measured as it goes, so a run cut short keeps
its figures:

- ``model_step``: MAE-base training steps in bf16 (autocast, AdamW, gradient clipping, as the
  loop steps) at the full configuration that search_spaces/mae_sizes.yaml's comment gives for
  a GPU cluster (500 px crops, 2,400 tokens, batch 4), on random cubes: samples/s, and the
  model FLOPs utilisation, FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` over
  one forward and backward, against the GPU's dense bf16 peak (``PEAK_BF16_TFLOPS``).
- ``memory``: each size's peak GPU memory over three such steps (``max_memory_allocated``,
  the caching allocator's reserve, and the device's use with the CUDA context), against what
  mae_sizes.yaml reserves for it (``gpus_per_worker`` x the GPU's memory).
- ``service``: through the service (``launch_search``, an embedded Ray that sees the GPU):
  trial start to first report on the GPU (bench/trial_start.py's one-worker search), then
  small-size MAE trials at the full configuration, one alone and four at once, packed on the
  GPU by mae_sizes.yaml's 0.25 fraction: each trial's training samples/s and the sum.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

MAE_SIZES_YAML = "mae_sizes.yaml"
BUDGET_S = 480.0  # the run's whole budget: 8 minutes on one GPU
# Each section's share of the budget (the rest is process starts and writing).
SHARES = {"model_step": 0.12, "memory": 0.18, "service": 0.55}
DEVICE = "cuda"  # the sections' device
KILL_GRACE_S = 20  # past its box, a section that did not end on its own deadline is killed

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOPS. The first
# name that occurs in torch.cuda.get_device_name() wins: the more specific ones come first.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100", 989.0),  # H100 SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
)


# ----------------------------------------------------------------------------------- pure pieces
def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name; None when the table does not know it."""
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in device_name), None)


def mfu(flops_per_step: float, seconds_per_step: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation: the model's FLOPs per second over the GPU's peak."""
    if peak_tflops is None or seconds_per_step <= 0:
        return None
    return flops_per_step / seconds_per_step / (peak_tflops * 1e12)


def gpu_overrides() -> list[str]:
    """The ``--set key=value`` of the full configuration that mae_sizes.yaml's comment gives for
    a GPU cluster (the YAML owns it), less ``data.path``: the benchmark's data are synthetic."""
    from trainables.spec.loading import resolve_space_path

    lines = resolve_space_path(MAE_SIZES_YAML).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "on a GPU cluster" in line)
    command = []  # the command after that line: its continuation lines end with a backslash
    for line in lines[start + 1:]:
        if command or "python launch.py" in line:
            command.append(line)
            if not line.rstrip().endswith("\\"):
                break
    sets = re.findall(r"--set (\S+=\S+)", "\n".join(command))
    return [s for s in sets if not s.startswith("data.path=")]


# In place of the cluster's files: 16 synthetic cubes of one 500 px window each, which fit in
# memory (data/h5/in_memory.py), so a trial reads no file while it trains.
SYNTHETIC_DATA = ["data.synthetic.cubes=16", "data.synthetic.height=500", "data.synthetic.width=500"]


def gpu_spec(size: str) -> Any:
    """mae_sizes.yaml at its GPU configuration, the size fixed to ``size``."""
    from trainables.spec.loading import load_spec

    spec, _ = load_spec(MAE_SIZES_YAML, [*gpu_overrides(), *SYNTHETIC_DATA, f"model.args.size={size}"])
    return spec


def reserved_gib(spec: Any, size: str, total_gib: float) -> tuple[int, float]:
    """(workers, GiB of GPU memory per worker) that mae_sizes.yaml reserves for ``size`` on a GPU
    of ``total_gib``: its ``gpus_per_worker`` share of the GPU."""
    from trainables.spec.resources import trial_resources

    request = trial_resources(spec, {spec.resources.depends_on: size}, gpus=True)
    return request.workers, request.gpus_per_worker * total_gib


def step_flops(model: torch.nn.Module, batch: dict[str, torch.Tensor], autocast: Any) -> int:
    """The model FLOPs of one training step: its forward and backward (the optimizer's
    elementwise update is not counted, by convention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        with autocast:
            loss = model(batch)["loss"]
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


# ----------------------------------------------------------------------------------- a section's process
class Section:
    """What a section process has measured so far, rewritten to ``<out>/<name>.json`` after each
    figure, and the time it has left."""

    def __init__(self, name: str, out: Path, seconds: float) -> None:
        self.name, self.path = name, out / f"{name}.json"
        self.deadline = time.monotonic() + seconds
        self.data: dict[str, Any] = {"status": "running"}
        self.save()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self, **update: Any) -> None:
        self.data.update(update)
        self.path.write_text(json.dumps(self.data, indent=1, default=str))


def _training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
                   spec: Any, device: torch.device) -> None:
    # The loop's own autocast and clipping (trainables/trial/loop.py), without its data loader.
    from trainables.trial.loop import _autocast

    with _autocast(spec.training, device):
        loss = model(batch)["loss"]
    loss.backward()
    if spec.training.grad_clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.training.grad_clip_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _model_and_batch(spec: Any, device: torch.device, batch_size: int) -> tuple[torch.nn.Module, Any, dict]:
    from models import create_model
    from trainables.trial.loop import _optimizer

    torch.manual_seed(0)
    model = create_model(spec.model.name, **spec.model.args).to(device)
    args = spec.model.args
    cube = torch.randn(batch_size, args["in_chans"], args["img_size"], args["img_size"], device=device)
    return model, _optimizer(model, spec.training), {"cube": cube}


def run_model_step(section: Section) -> None:
    from trainables.trial.loop import _autocast

    device = torch.device(DEVICE)
    name = torch.cuda.get_device_name(0)
    peak = peak_bf16_tflops(name)
    spec = gpu_spec("base")
    rows = []
    section.save(device=name, peak_bf16_tflops=peak, rows=rows)
    for batch_size in (spec.training.batch_size, 4 * spec.training.batch_size):
        if section.left() < 10:
            break
        model, optimizer, batch = _model_and_batch(spec, device, batch_size)
        params = sum(p.numel() for p in model.parameters())
        flops = step_flops(model, batch, _autocast(spec.training, device))
        for _ in range(3):  # warm-up: kernels chosen, the allocator's pools filled
            _training_step(model, optimizer, batch, spec, device)
        torch.cuda.synchronize()
        steps, started = 0, time.perf_counter()
        window = min(15.0, section.left() / 3)
        while steps < 5 or (time.perf_counter() - started < window and steps < 500):
            _training_step(model, optimizer, batch, spec, device)
            steps += 1
            if steps % 5 == 0:
                torch.cuda.synchronize()
        torch.cuda.synchronize()
        per_step = (time.perf_counter() - started) / steps
        rows.append({"size": "base", "batch": batch_size, "tokens": math.prod(model.grid), "params": params,
                     "steps": steps, "step_ms": 1000 * per_step, "samples_per_s": batch_size / per_step,
                     "tflop_per_step": flops / 1e12, "achieved_tflops": flops / per_step / 1e12,
                     "mfu": mfu(flops, per_step, peak)})
        section.save(rows=rows)
        del model, optimizer, batch
        torch.cuda.empty_cache()


def run_memory(section: Section) -> None:
    device = torch.device(DEVICE)
    free, total = torch.cuda.mem_get_info(0)
    total_gib = total / 2**30
    base = gpu_spec("tiny")
    sizes = list(base.search[base.resources.depends_on].values)
    rows = []
    section.save(device=torch.cuda.get_device_name(0), total_gib=total_gib, batch=base.training.batch_size,
                 context_gib=(total - free) / 2**30, rows=rows)
    for size in sizes:
        if section.left() < 15:
            rows.append({"size": size, "skipped": "out of time"})
            continue
        spec = gpu_spec(size)
        workers, reserved = reserved_gib(spec, size, total_gib)
        row: dict[str, Any] = {"size": size, "workers": workers, "reserved_gib": reserved}
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(0)
        try:
            model, optimizer, batch = _model_and_batch(spec, device, spec.training.batch_size)
            params = sum(p.numel() for p in model.parameters())
            for _ in range(3):  # the second step has the optimizer's state: the steady peak
                _training_step(model, optimizer, batch, spec, device)
            torch.cuda.synchronize()
            free_now, _ = torch.cuda.mem_get_info(0)
            allocated = torch.cuda.max_memory_allocated(0) / 2**30
            row.update(params=params, peak_allocated_gib=allocated,
                       peak_reserved_gib=torch.cuda.max_memory_reserved(0) / 2**30,
                       device_used_gib=(total - free_now) / 2**30,
                       # DDP keeps its gradient buckets besides the gradients: about the
                       # parameters again in fp32 (estimated, not measured: DDP needs 2 GPUs).
                       ddp_buckets_gib=params * 4 / 2**30 if workers > 1 else None)
            # What the process holds of the GPU (its CUDA context and the allocator's reserve),
            # which a trial sharing the GPU cannot have.
            row["fits"] = row["device_used_gib"] + (row["ddp_buckets_gib"] or 0.0) <= reserved
            del model, optimizer, batch
        except torch.cuda.OutOfMemoryError as exc:
            row.update(error=f"out of memory: {str(exc).splitlines()[0]}", fits=False)
        rows.append(row)
        section.save(rows=rows)
        torch.cuda.empty_cache()


def run_service(section: Section) -> None:
    from bench.common import launch_quietly, ray_cluster, scratch
    from bench.trial_start import FirstReport, spec as start_spec
    from tests.specs import recorded_epochs
    from trainables.search.run import SearchOptions

    section.save(device=torch.cuda.get_device_name(0))
    with ray_cluster():
        import ray

        section.save(ray_resources=ray.cluster_resources())
        # Trial start: bench/trial_start.py's one-worker search, each trial on the whole GPU.
        raw = start_spec(trials=3, workers=1, concurrency=1)
        raw["resources"] = {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1, "use_gpu": "yes"}
        timer = FirstReport()
        with scratch("gpu-start") as folder:
            started = time.perf_counter()
            launch_quietly(raw, folder, SearchOptions(out_dir=folder / "out", verbose=0, callbacks=[timer]))
            wall = time.perf_counter() - started
        firsts = [timer.seconds[t] for t in sorted(timer.seconds, key=timer.started.get)]
        section.save(trial_start={"first_report_s": firsts, "search_wall_s": wall,
                                  "note": "the first trial starts a new actor (CUDA initialised there); "
                                          "later ones reuse it"})
        # Packing: the same small-size trials, one alone, then four at once on the one GPU.
        packing: dict[str, Any] = {}
        for label, trials in (("alone", 1), ("four packed", 4)):
            # What is left, minus the search's own start and end (report, best export).
            minutes = max(0.5, min(1.0, (section.left() - 80) / 2 / 60 if label == "alone" else
                                   (section.left() - 60) / 60))
            if section.left() < 60:
                packing[label] = {"skipped": "out of time"}
                break
            with scratch("gpu-pack") as folder:
                summary = launch_quietly(packing_spec(trials, minutes), folder)
                packing[label] = packing_figures(recorded_epochs(folder / "out"), summary, minutes)
            section.save(packing=packing)


def packing_spec(trials: int, minutes: float) -> dict[str, Any]:
    """mae_sizes.yaml at its GPU configuration, every trial the small size (its 0.25 GPU as the
    YAML reserves), on ``SYNTHETIC_DATA``, trained until the
    time limit, no early stopping; the concurrency is what the service computes from the
    fraction (4 on one GPU)."""
    import yaml

    from trainables.spec.loading import resolve_space_path
    from trainables.spec.schema import set_path

    raw = yaml.safe_load(resolve_space_path(MAE_SIZES_YAML).read_text())
    for override in gpu_overrides() + SYNTHETIC_DATA:
        key, _, text = override.partition("=")
        set_path(raw, key, yaml.safe_load(text))
    raw["experiment"] = "bench_gpu_packing"
    raw["training"].update(epochs=10_000, figures_every=0)
    raw["search"]["model.args.size"] = {"type": "choice", "values": ["small"]}
    raw["searcher"] = {"type": "random", "seed": 0}
    raw["scheduler"] = {"type": "none"}
    raw["budget"] = {"trials": trials, "time_limit_minutes": minutes, "max_concurrent": None}
    raw["resources"]["use_gpu"] = "yes"
    return raw


def packing_figures(epochs: dict[str, list[dict]], summary: dict[str, Any], minutes: float) -> dict[str, Any]:
    """Each trial's training samples/s (the loop's, over an epoch's training phase; its first
    epoch left out: warm-up) and their sum; the samples all trials trained after their first
    epoch over the wall time that took (validation and checkpoints included); how many trials
    trained at the same time."""
    later = {tid: rows[1:] for tid, rows in epochs.items() if len(rows) > 1}
    rates = {tid: statistics.median([r["samples_per_s"] for r in rows]) for tid, rows in later.items()}
    spans = [(rows[0]["time"], rows[-1]["time"]) for rows in epochs.values() if rows]
    overlap = max((sum(s <= t <= e for s, e in spans) for t, _ in spans), default=0)
    samples = sum(r["samples_per_s"] * r["epoch_time_s"] for rows in later.values() for r in rows)
    span = (max(e for _, e in spans) - min(s for s, _ in spans)) if spans else 0.0
    return {"trials": len(epochs), "epochs": {tid: len(rows) for tid, rows in epochs.items()},
            "samples_per_s": rates, "sum_samples_per_s": sum(rates.values()),
            "samples_per_wall_s": samples / span if span > 0 else None, "trained_at_once": overlap,
            "time_limit_min": minutes, "status": {t["trial_id"]: t["status"] for t in summary["trials"]}}


SECTIONS: dict[str, Callable[[Section], None]] = {"model_step": run_model_step, "memory": run_memory,
                                                    "service": run_service}


# ----------------------------------------------------------------------------------- the run
def run_section(name: str, out: Path, seconds: float) -> dict[str, Any]:
    """Runs one section in its own process group, killed at its box; what it wrote, with how it ended."""
    log = out / f"{name}.log"
    command = [sys.executable, "-m", "bench.gpu", "--section", name, "--out", str(out), "--seconds", f"{seconds:.0f}"]
    started = time.perf_counter()
    with log.open("w") as sink:
        child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = child.wait(timeout=seconds + KILL_GRACE_S)  # its own deadline first; then the box
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            code = None
    path = out / f"{name}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
    if code is None:
        data["status"] = f"killed at its time box ({seconds:.0f} s + {KILL_GRACE_S} s); figures so far kept"
    elif code != 0:
        data["status"] = f"failed (exit {code}): {tail[0] if tail else ''}"
    elif data.get("status") != "done":
        data["status"] = f"ended without its figures: {tail[0] if tail else 'no output'}"
    data["seconds"] = round(time.perf_counter() - started, 1)
    return data


def render(results: dict[str, Any]) -> str:
    """The run's markdown: one table per section (bench/common.py's Table)."""
    from bench.common import Table

    parts = [f"Machine: {results['machine']}\n", f"Command: {results['command']}\n"]
    step = results.get("model_step", {})
    table = Table(f"MAE-base, bf16, full GPU configuration: training step ({step.get('device', '?')}, "
                  f"peak {step.get('peak_bf16_tflops')} TFLOPS dense bf16)",
                  ["size", "batch", "tokens", "params (M)", "step ms", "samples/s", "TFLOP/step", "TFLOPS", "MFU"])
    for r in step.get("rows", []):
        table.add(r["size"], r["batch"], r["tokens"], r["params"] / 1e6, r["step_ms"], r["samples_per_s"],
                  r["tflop_per_step"], r["achieved_tflops"], "-" if r["mfu"] is None else f"{r['mfu']:.1%}")
    table.notes += [f"section: {step.get('status', 'not run')}",
                    "random cubes on the GPU (no data loader); FLOPs: FlopCounterMode over forward + backward"]
    parts.append(table.render())
    memory = results.get("memory", {})
    table = Table(f"GPU memory per size against mae_sizes.yaml's reservation (batch {memory.get('batch')}, "
                  f"{memory.get('total_gib', 0):.0f} GiB GPU)",
                  ["size", "params (M)", "peak allocated GiB", "peak reserved GiB", "device used GiB",
                   "+ DDP buckets GiB (estimate)", "reserved GiB / worker", "workers", "fits"])
    for r in memory.get("rows", []):
        if "skipped" in r or "error" in r:
            table.add(r["size"], r.get("skipped") or r.get("error"), "", "", "", "", r.get("reserved_gib", ""), "", "")
            continue
        table.add(r["size"], r["params"] / 1e6, r["peak_allocated_gib"], r["peak_reserved_gib"], r["device_used_gib"],
                  "-" if r["ddp_buckets_gib"] is None else r["ddp_buckets_gib"], r["reserved_gib"], r["workers"],
                  "yes" if r["fits"] else "no")
    table.notes += [f"section: {memory.get('status', 'not run')}",
                    f"CUDA context before any model: {memory.get('context_gib', 0):.2f} GiB (in 'device used')",
                    "fits: device used (+ DDP buckets) <= the reservation"]
    parts.append(table.render())
    service = results.get("service", {})
    start = service.get("trial_start", {})
    table = Table("Through the service on the GPU", ["measure", "value"])
    if start:
        firsts = start["first_report_s"]
        table.add("trial start to first report, first trial (new actor) s", firsts[0] if firsts else "-")
        table.add("trial start to first report, later trials (median) s",
                  statistics.median(firsts[1:]) if len(firsts) > 1 else "-")
    for label, figures in service.get("packing", {}).items():
        if "skipped" in figures:
            table.add(f"small trials {label}", figures["skipped"])
            continue
        per_trial = list(figures["samples_per_s"].values())
        table.add(f"small trials {label}: samples/s per trial (median)", statistics.median(per_trial) if per_trial else "-")
        table.add(f"small trials {label}: samples/s, sum", figures["sum_samples_per_s"])
        table.add(f"small trials {label}: samples trained / wall s (validation, checkpoints included)",
                  "-" if figures["samples_per_wall_s"] is None else figures["samples_per_wall_s"])
        table.add(f"small trials {label}: trained at once", figures["trained_at_once"])
    packing = service.get("packing", {})
    if all(k in packing and "sum_samples_per_s" in packing[k] for k in ("alone", "four packed")):
        for key, what in (("sum_samples_per_s", "summed training samples/s"),
                          ("samples_per_wall_s", "samples trained / wall s")):
            alone, packed = packing["alone"][key], packing["four packed"][key]
            if alone and packed is not None:
                table.add(f"four packed / alone, {what}", packed / alone)
    table.notes += [f"section: {service.get('status', 'not run')}",
                    "samples/s: the loop's training phase of each epoch (validation and checkpoint excluded), "
                    "its first epoch left out"]
    parts.append(table.render())
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu.json and gpu.md (default: $OUT, "
                        "else ./gpu-results)")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="the whole run's time, seconds")
    parser.add_argument("--section", choices=sorted(SECTIONS), help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/gpu.py: skipped: no CUDA GPU here (torch.cuda.is_available() is False)")
        return 0
    out = args.out or Path(os.environ.get("OUT") or "gpu-results")
    out.mkdir(parents=True, exist_ok=True)
    if args.section:  # a section's own process (run_section)
        section = Section(args.section, out, args.seconds)
        SECTIONS[args.section](section)
        section.save(status="done")
        return 0
    from bench.common import machine

    results: dict[str, Any] = {"machine": machine(), "command": "python -m bench.gpu " + " ".join(sys.argv[1:]),
                               "budget_s": args.budget_s}
    for name, share in SHARES.items():
        print(f"bench/gpu.py: {name} (up to {share * args.budget_s:.0f} s) ...", flush=True)
        results[name] = run_section(name, out, share * args.budget_s)
        print(f"bench/gpu.py: {name}: {results[name]['status']} in {results[name]['seconds']} s", flush=True)
        (out / "gpu.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "gpu.md").write_text(render(results))
    print((out / "gpu.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
