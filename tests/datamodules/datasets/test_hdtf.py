"""HDTF on its fixture tree: both naming schemes, raw cuts with crops, missing audio, person split."""

from __future__ import annotations

import pytest

from datamodules import hdtf
from datamodules.preprocess import load_manifest, load_rejects
from tests.datamodules.datasets.helpers import IMAGE_SIZE, check_whole_utterance_batch


def test_discover(trees):
    found = {s.key: s for s in hdtf.discover(trees["hdtf"])}
    assert set(found) == {"RD_Radio11_000", "RD_Radio11_001", "RD_Radio12_000", "WDA_AdamSchiff_000",
                          "WRA_AdamKinzinger0_000", "WRA_AdamKinzinger1_000"}  # WDA read through its BOM
    raw = found["RD_Radio11_000"]
    assert raw.video_path.endswith("_videos_raw/RD_Radio11.mp4") and (raw.start, raw.end) == (0.0, 3.0)
    # the core scales the box by 1.45 back to the annotated crop x=50 w=60 y=30 h=60
    x0, y0, x1, y1 = raw.face_box
    assert ((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * 1.45) == pytest.approx((80, 60, 60))
    assert found["RD_Radio11_001"].video_path.endswith("RD_Radio11_001.mp4")  # universome name wins
    assert found["WRA_AdamKinzinger1_000"].video_path.endswith("AdamKinzinger1_0.mp4")  # official name
    assert found["WRA_AdamKinzinger0_000"].speaker == found["WRA_AdamKinzinger1_000"].speaker == "AdamKinzinger"
    assert found["WRA_AdamKinzinger0_000"].split == "test"
    assert all(s.language == "en" for s in found.values())


def test_missing_annotations(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotion_time"):
        hdtf.discover(tmp_path)


def test_datamodule(prepared):
    module = prepared("hdtf", num_frames=None, motion_frames=0)
    rejects = {r["key"]: r["reason"] for r in load_rejects(prepared.cache) if r["dataset"] == "hdtf"}
    assert rejects == {"RD_Radio12_000": "unreadable", "WDA_AdamSchiff_000": "no_audio"}
    kept = {r["key"]: r for r in load_manifest(prepared.cache) if r["dataset"] == "hdtf"}
    assert kept["RD_Radio11_000"]["num_frames"] == 75  # 3 s of 30 fps resampled to 25 fps
    module.setup("fit")
    test = {r["speaker"] for r in module.datasets["test"].records}
    assert test == {"AdamKinzinger"}  # splits/test.txt, and the same person's other clip follows it
    check_whole_utterance_batch(next(iter(module.test_dataloader())), IMAGE_SIZE)
