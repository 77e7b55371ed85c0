"""Shared fixtures: one real local Ray cluster per test session, and small real specs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


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

    from trainables.search.cluster import connect

    connect(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny test models: intra-op threads cost more than they save, and on a shared 2-core
    machine their spin-waiting turned a 2 s training test into 90 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
