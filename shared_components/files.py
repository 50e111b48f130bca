"""Atomic file writes: a temporary file (or folder) next to the target, fsynced, then renamed into place.

A killed run leaves either the old file or the new one, never half of one; on an exception the temporary is
removed. Standard library only, so any module (and any exported bundle that vendors it) can use it cheaply.
"""

from __future__ import annotations

import contextlib
import json
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


JOURNAL = ".staged_files.json"


class StagedFiles:
    """Files of one folder written as a set: ``path(target)`` gives a temporary to write each one to and
    ``remove(target)`` marks one for deletion; on leaving the block without an exception a journal of the renames
    is written (atomically) and then carried out, so a kill before it leaves every file as it was, and a kill during
    it leaves the journal, which the next ``StagedFiles`` of the folder (or :func:`complete_staged`) completes. On an
    exception the temporaries are removed."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._moves: list[tuple[Path, Path]] = []
        self._removals: list[Path] = []

    def path(self, target: str | os.PathLike) -> Path:
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_name(target)
        self._moves.append((tmp, target))
        return tmp

    def write_text(self, target: str | os.PathLike, text: str) -> Path:
        self.path(target).write_text(text)
        return Path(target)

    def copy(self, source: str | os.PathLike, target: str | os.PathLike) -> Path:
        shutil.copyfile(source, self.path(target))
        return Path(target)

    def remove(self, target: str | os.PathLike) -> None:
        self._removals.append(Path(target))

    def __enter__(self) -> StagedFiles:
        complete_staged(self.root)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            for tmp, _ in self._moves:
                tmp.unlink(missing_ok=True)
            return
        for tmp, _ in self._moves:
            _fsync(tmp)
        journal = {"moves": [[str(t), str(p)] for t, p in self._moves], "removals": [str(p) for p in self._removals]}
        write_text_atomic(self.root / JOURNAL, json.dumps(journal, indent=4) + "\n")
        complete_staged(self.root)


def complete_staged(root: str | os.PathLike) -> bool:
    """Carry out the renames and removals of an interrupted :class:`StagedFiles` of ``root`` (its journal);
    whether there was one."""
    journal = Path(root) / JOURNAL
    if not journal.is_file():
        return False
    entries = json.loads(journal.read_text())
    for tmp, target in entries["moves"]:
        if Path(tmp).exists():  # not yet renamed
            os.replace(tmp, target)
    for target in map(Path, entries["removals"]):
        target.unlink(missing_ok=True)
        if target.parent != Path(root) and target.parent.is_dir() and not any(target.parent.iterdir()):
            target.parent.rmdir()  # a folder emptied by the removals goes too
    journal.unlink()
    return True
