"""Speaker-disjoint, seeded splits; official splits kept; split files."""

from __future__ import annotations

import pytest

from datamodules.splits import SplitConfig, assign_splits, read_split_files, write_split_files


def _clips(num_speakers: int, per_speaker: int, split=None):
    return [(f"s{s}_{k}", f"s{s}", split) for s in range(num_speakers) for k in range(per_speaker)]


def test_speaker_disjoint_and_deterministic():
    clips = _clips(300, 5)
    first, again = assign_splits(clips), assign_splits(clips)
    assert first == again and assign_splits(clips, SplitConfig(seed=1)) != first
    by_speaker = {}
    for key, speaker, _ in clips:
        by_speaker.setdefault(speaker, set()).add(first[key])
    assert all(len(s) == 1 for s in by_speaker.values())
    counts = {name: sum(v == name for v in first.values()) for name in ("train", "val", "test")}
    assert counts["test"] >= 200 and counts["val"] > 0 and counts["train"] > 1000  # the paper's 200 test clips


def test_small_dataset_keeps_every_split():
    splits = assign_splits(_clips(3, 2))
    assert sorted(set(splits.values())) == ["test", "train", "val"]


def test_official_split_kept():
    clips = _clips(10, 2, "dev") + [("t0", "x", "test"), ("t1", "y", "test")]
    splits = assign_splits(clips)
    assert splits["t0"] == splits["t1"] == "test"
    assert {splits[k] for k, s, _ in clips if s.startswith("s")} <= {"train", "val"}
    with pytest.raises(ValueError, match="speaker-disjoint"):
        assign_splits([("a", "s", "dev"), ("b", "s", "test")])
    with pytest.raises(ValueError, match="official split"):
        assign_splits([("a", "s", "holdout")])


def test_split_files_round_trip(tmp_path):
    clips = _clips(6, 2)
    splits = assign_splits(clips)
    folder = write_split_files(tmp_path, "demo", [(k, s) for k, s, _ in clips], splits)
    assert read_split_files(folder) == splits
    (folder / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match="val.txt"):
        read_split_files(folder)
