"""Atomic writes: complete file or none, the umask's mode, no temporary file left behind."""

from __future__ import annotations

import os
import stat

import pytest

from common.files import AtomicFile, replace_folder, write_text_atomic


def test_written_file_has_the_umask_mode_and_no_temporary_file_is_left(tmp_path) -> None:
    old = os.umask(0o027)
    try:
        path = write_text_atomic(tmp_path / "out.csv", "a,b\r\n1,2\n")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"a,b\r\n1,2\n"  # newlines exactly as given
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with AtomicFile(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]


def test_the_temporary_file_keeps_the_destination_extension(tmp_path) -> None:
    writer = AtomicFile(tmp_path / "clip.mp4")
    assert writer.tmp.suffix == ".mp4" and writer.tmp.parent == tmp_path and writer.tmp.name.startswith(".clip.mp4.")
    writer.abort()
    assert not any(tmp_path.iterdir())


def test_replace_folder_swaps_a_whole_folder(tmp_path) -> None:
    final, new = tmp_path / "corpus", tmp_path / ".corpus.building"
    final.mkdir()
    (final / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    replace_folder(new, final)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]  # the old folder, moved aside, is gone
