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

    from trainables.cluster import connect

    connect(num_cpus=2)
    yield ray
    ray.shutdown()
