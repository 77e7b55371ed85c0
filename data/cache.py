"""Generate-once files in a shared cache directory.

Several trials (processes, possibly on several nodes sharing a file system) may ask
for the same generated file at the same moment; it must be written once and never be
seen half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

DATA_DIR_ENV = "HPSEARCH_DATA_DIR"


def cache_dir(override: str | None) -> Path:
    """The directory generated data goes to: the override, else $HPSEARCH_DATA_DIR, else ~/.cache/hpsearch/data."""
    chosen = override or os.environ.get(DATA_DIR_ENV) or "~/.cache/hpsearch/data"
    return Path(chosen).expanduser().resolve()


def settings_digest(settings: Mapping[str, Any]) -> str:
    """A short stable hash of JSON-able settings, used in file names so different settings never collide."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def generate_once(target: Path, write: Callable[[Path], None]) -> Path:
    """Return `target`, calling `write(tmp_path)` first if it does not exist yet.

    The file is written under a temporary name and renamed into place, so its mere
    existence means it is complete; that makes the lock-free fast path safe. The lock
    makes concurrent callers wait for one writer instead of all generating; should a
    file system not honour the lock across nodes, the rename still keeps every reader
    on a complete file (the losers just did redundant work).
    """
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{target}.lock"):
        if target.exists():
            return target
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            write(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target
