"""A real small file system for the full-disk tests: a tmpfs mounted on a folder (root only;
CI runs as root), resized or unmounted at will."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@contextmanager
def small_disk(folder: Path, size_kb: int) -> Iterator[Path]:
    """``folder`` as a tmpfs of ``size_kb`` kB; the test is skipped where mounting is not permitted."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a real small file system needs `mount -t tmpfs`, which needs root (CI runs as root)")
    done = _mount("-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder))
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


def resize(folder: Path, size_kb: int) -> None:
    """Give the mounted tmpfs another size (a quota raised, a disk grown), keeping its files."""
    done = _mount("-o", f"remount,size={size_kb}k", str(folder))
    assert done.returncode == 0, done.stderr


def fill(folder: Path, name: str = "filler") -> Path:
    """Take every free byte of ``folder``'s file system with one file (as another job would)."""
    path = folder / name
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    with path.open("ab", buffering=0) as handle:  # the last partial page
        try:
            while True:
                handle.write(b"\0" * 512)
        except OSError:
            pass
    return path
