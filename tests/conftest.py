"""Shared fixtures: one real local Ray cluster per test session, and small real specs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic data goes to a per-session folder, never the user's ~/.cache."""
    path = tmp_path_factory.mktemp("data-cache")
    os.environ["HPSEARCH_DATA_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def ray_cluster(data_cache: Path):
    """A real local Ray cluster, started once (5-10 s) and shared by every integration test."""
    import ray

    # Trial processes import test-only models (tests/fault_models.py) through `imports`.
    root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))

    from trainables.cluster import connect

    connect(num_cpus=2)
    yield ray
    ray.shutdown()
