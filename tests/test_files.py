"""Atomic writes: the target holds the old content or the new, and a failed write leaves no temporary behind."""

from __future__ import annotations

import pytest

from shared_components.files import atomic_dir, atomic_path, write_bytes_atomic, write_text_atomic


def test_write_text_and_bytes_replace_the_file(tmp_path):
    target = tmp_path / "sub" / "a.json"
    assert write_text_atomic(target, "old") == target
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    write_bytes_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]


def test_atomic_dir_replaces_the_folder_or_leaves_it(tmp_path):
    dest = tmp_path / "bundle"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("failed export")
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    assert [p.name for p in dest.iterdir()] == ["old.txt"]
    with atomic_dir(dest) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in dest.iterdir()] == ["new.txt"]
    assert dest.stat().st_mode & 0o777 == 0o755
