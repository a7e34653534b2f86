"""FakeAVCeleb on its fixture tree: the malformed CSV, nested root, categories, missing files."""

from __future__ import annotations

import pytest

from datamodules import fakeavceleb
from datamodules.preprocess import PreprocessConfig, load_rejects, preprocess_clip
from tests.datamodules import fixtures
from tests.datamodules.datasets.helpers import IMAGE_SIZE, check_whole_utterance_batch



def test_discover_categories_through_the_csv(trees):
    real = fakeavceleb.discover(trees["fakeavceleb"])
    assert len(real) == 5  # the duplicated row counted once; the missing file still listed
    paths = {s.extra["relative_path"] for s in real}
    assert "RealVideo-RealAudio/Asian (East)/women/id00579/00010.mp4" in paths  # spaces and parentheses
    assert {s.speaker for s in real if s.video_path.endswith("00109.mp4")} == {"id00076", "id00580"}  # repeated basename
    every = fakeavceleb.discover(trees["fakeavceleb"], categories=("A", "B", "C", "D"))
    assert {s.extra["category"] for s in every} == {"A", "B", "C", "D"}
    assert next(s for s in every if s.extra["category"] == "C").extra["method"] == "wav2lip"
    with pytest.raises(ValueError, match="categories"):
        fakeavceleb.discover(trees["fakeavceleb"], categories=("E",))


def test_missing_csv(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta_data.csv"):
        fakeavceleb.discover(tmp_path)


def test_datamodule_splits_by_source(prepared):
    module = prepared("fakeavceleb", english_only=False, num_frames=4, motion_frames=2)
    rejects = [r for r in load_rejects(prepared.cache) if r["dataset"] == "fakeavceleb"]
    assert [r["reason"] for r in rejects] == ["unreadable"] and "id00099" in rejects[0]["path"]
    module.setup("fit")
    speakers = {s: {r["speaker"] for r in d.records} for s, d in module.datasets.items()}
    assert sum(len(v) for v in speakers.values()) == 4 and all(speakers.values())
    assert not (speakers["train"] & speakers["test"])
    batch = next(iter(module.train_dataloader()))
    assert batch["video"].shape[1:] == (6, 3, IMAGE_SIZE, IMAGE_SIZE)


def test_real_photo_with_mtcnn(shared_data, tmp_path):
    """A clip made from a real photo goes through the real detector (no box in FakeAVCeleb)."""
    from PIL import Image

    import numpy as np

    face = np.asarray(Image.open(shared_data / "faces" / "man.jpg").convert("RGB"))
    path = fixtures.write_clip(tmp_path / "00109.mp4", size=(224, 224), face=face)
    source = fakeavceleb.ClipSource(key="k", video_path=str(path), speaker="id00076", dataset="fakeavceleb")
    meta = preprocess_clip(source, tmp_path / "cache", PreprocessConfig(image_size=IMAGE_SIZE))
    x0, y0, x1, y1 = meta["crop_box"]
    assert 0 < x1 - x0 <= 224 and abs((x0 + x1) / 2 - 112) < 40  # the face sits in the middle of the frame
