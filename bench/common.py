"""What every benchmark shares: repeats and medians, a printed table, the machine, Ray."""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPEATS = 3  # medians of at least 3 repeats: this machine is shared and noisy


@dataclass
class Table:
    """A benchmark's printed result: one row per measured thing, ratios against a baseline."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *row: Any) -> None:
        self.rows.append(list(row))

    def render(self) -> str:
        cells = [self.columns] + [[_cell(value) for value in row] for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = [f"## {self.title}", ""]
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |")
        lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for row in cells[1:]:
            lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def median(values: list[float]) -> float:
    return statistics.median(values)


def interleaved(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each variant ``repeats`` times, alternating between them (A B C A B C ...), so a
    noisy neighbour slows all of them alike instead of whichever happened to run then."""
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, measure in variants.items():
            results[name].append(measure())
    return results


def machine() -> str:
    return (f"{platform.node()}: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")


@contextmanager
def ray_cluster(num_cpus: int | None = None) -> Iterator[None]:
    """One embedded Ray cluster for every variant of a benchmark, started the service's way."""
    import ray

    from trainables.search.cluster import connect

    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    _, started = connect(num_cpus=num_cpus)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{prefix}-") as folder:
        yield Path(folder)


def launch_quietly(raw_spec: dict[str, Any], folder: Path, options: Any = None) -> dict[str, Any]:
    """What ``python launch.py --space SPEC --out folder/out --quiet`` does, in this process
    (so one Ray cluster serves every run), through the same entry. The summary."""
    import yaml

    from trainables.search.run import SearchOptions, launch_search
    from trainables.spec.loading import load_spec

    spec_file = folder / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(raw_spec, sort_keys=False))
    spec, _ = load_spec(str(spec_file), [])
    options = options or SearchOptions(out_dir=folder / "out", verbose=0)
    return launch_search(spec, options, where=spec_file.name, echo=lambda _: None)


class Stopwatch:
    def __enter__(self) -> "Stopwatch":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
