"""Keep Tune's last complete experiment snapshot, so a kill mid-write cannot strand a search.

Tune rewrites its experiment state in place (no write-then-rename), and with one kept
checkpoint per trial it snapshots at every checkpoint; a `kill -9` landing in that write
leaves a truncated `experiment_state-*.json` and `Tuner.restore` fails on it (seen here in
about one kill in six). A Tune callback copies each snapshot aside once it reads back whole,
and ``repair`` puts the copy back before a resume when the original is damaged.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

BACKUP_DIR = "snapshot-backup"
PATTERNS = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")
CHECK_EVERY_S = 1.0


class SnapshotBackup(Callback):
    """Copies each new, complete snapshot file of the experiment folder into BACKUP_DIR."""

    def __init__(self, experiment_dir: Path) -> None:
        self.experiment_dir = experiment_dir
        self._seen: dict[str, float] = {}
        self._last_check = 0.0

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last_check < CHECK_EVERY_S:
            return
        self._last_check = time.monotonic()
        backup = self.experiment_dir / BACKUP_DIR
        for pattern in PATTERNS:
            for path in self.experiment_dir.glob(pattern):
                mtime = path.stat().st_mtime
                if self._seen.get(path.name) == mtime or not _complete(path):
                    continue
                backup.mkdir(exist_ok=True)
                shutil.copy2(path, backup / f".{path.name}.tmp")
                (backup / f".{path.name}.tmp").replace(backup / path.name)
                self._seen[path.name] = mtime


def repair(experiment_dir: Path) -> list[str]:
    """Replace damaged snapshot files with their backups; returns the names replaced."""
    replaced = []
    for pattern in PATTERNS:
        for path in experiment_dir.glob(pattern):
            copy = experiment_dir / BACKUP_DIR / path.name
            if not _complete(path) and copy.exists():
                shutil.copy2(copy, path)
                replaced.append(path.name)
    return replaced


def _complete(path: Path) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if path.suffix == ".json":
        try:
            json.loads(data)
        except ValueError:
            return False
        return True
    return len(data) > 0
