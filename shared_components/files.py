"""Atomic file writes: a temporary file (or folder) next to the target, fsynced, then renamed into place.

A killed run leaves either the old file or the new one, never half of one; on an exception the temporary is
removed. Standard library only, so any module (and any exported bundle that vendors it) can use it cheaply.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


def _temp_name(path: Path) -> Path:
    # same folder, so os.replace is a rename; hidden and ending in .tmp, so no ``*.json``-style glob picks it up
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder (not yet created, suffix ``.tmp``) to write the file to; on
    success it is fsynced and renamed to ``path``, on an exception removed. The folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, newline: str | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (``newline`` as for :func:`open`); returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "w", newline=newline) as f:
        f.write(text)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty folder next to ``path`` to fill; on success it replaces ``path`` (an existing folder there
    is removed first) with mode 0o755, on an exception it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.chmod(0o755)  # mkdtemp makes it private
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
