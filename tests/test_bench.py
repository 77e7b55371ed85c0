"""The benchmarks still run: each once, briefly (``python -m bench.run_all --quick``).

Their figures are not asserted (tests never assert times); what is checked is that every
benchmark completes and prints its table with a row per variant.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.run_all import BENCHMARKS
from tests.specs import PROJECT_ROOT

# The chaos soak's quick mode runs in tests/test_chaos.py, which checks every invariant.
QUICK = [name for name in BENCHMARKS if name != "chaos"]


@pytest.mark.slow
def test_every_benchmark_runs_quickly(tmp_path):
    out = tmp_path / "results.md"
    run = subprocess.run([sys.executable, "-m", "bench.run_all", "--quick", "--out", str(out), "--only", *QUICK],
                         cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    assert text.count("\n## ") == len(QUICK), text
    for row in ("service: whole search (launch_search", "service: its trials", "bare Ray Tune, default settings",
                "one worker", "DDP, 2 workers", "MAE tiny", "digits classifier", "raw h5py reads",
                "data too large for memory", "(a) service default", "(c) Optuna alone", "(d) bare Ray Tune",
                "one more trial:"):
        assert row in text, f"{row!r} missing from\n{text}"
