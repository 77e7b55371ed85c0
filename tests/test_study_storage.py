"""The persisted Optuna study opens even while someone else (optuna-dashboard, a second
reader) creates the same new database at the same moment."""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import pytest

from trainables.search.searcher import _study_storage


def _open_concurrently(url: str, open_storage, openers: int = 4) -> list[str]:
    errors: list[str] = []

    def open_one() -> None:
        try:
            open_storage(url)
        except Exception as exc:  # noqa: BLE001 - collected and asserted on
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")

    threads = [threading.Thread(target=open_one) for _ in range(openers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_study_storage_survives_a_concurrent_schema_creation(tmp_path: Path) -> None:
    engine = {"connect_args": {"timeout": 30}}
    # Optuna alone: the openers race on CREATE TABLE ("table ... already exists").
    raced = _open_concurrently(f"sqlite:///{tmp_path / 'bare.db'}",
                               lambda url: optuna.storages.RDBStorage(url, engine_kwargs=engine))
    if not raced:
        pytest.skip("the openers did not race on this machine: nothing to show")
    assert _open_concurrently(f"sqlite:///{tmp_path / 'ours.db'}", lambda url: _study_storage(url, engine)) == []
