"""VoxCeleb on its fixture tree: layout quirks, official splits, nationality, batches."""

from __future__ import annotations

import pytest

from datamodules import voxceleb
from datamodules.preprocess import load_rejects
from tests.datamodules.datasets.helpers import IMAGE_SIZE, check_whole_utterance_batch


def test_discover_both_releases(trees):
    found = {s.key: s for s in voxceleb.discover(trees["voxceleb"])}
    assert len(found) == 7  # 4 Vox2 mp4 (test without test/ prefix) + 3 Vox1 wav
    test = found["vox2_id00017_5MkXgwdrmJw_00001"]
    assert test.split == "test" and test.speaker == "id00017"  # from the BOM/" ," meta
    assert test.face_box == pytest.approx((56.0, 56.0, 168.0, 168.0))  # normalised box x 224
    vox1 = found["vox1_id10001_1zcIwhmdeo4_00001"]
    assert vox1.audio_path.endswith("wav/id10001/1zcIwhmdeo4/00001.wav") and vox1.video_path.endswith(".mp4")
    assert (vox1.language, vox1.split) == ("en", "dev")  # Ireland
    assert found["vox1_id10002_6WO410QOeuo_00001"].language is None  # India: left to language ID
    assert found["vox1_id10270_5r0dWxy17C8_00001"].split == "test"


def test_missing_layout_names_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="vox2/dev/mp4"):
        voxceleb.discover(tmp_path)


def test_datamodule_batches_and_rejects(prepared):
    module = prepared("voxceleb", english_only=False, num_frames=None, motion_frames=0)
    rejects = {r["key"]: r["reason"] for r in load_rejects(prepared.cache) if r["dataset"] == "voxceleb"}
    assert rejects == {"vox1_id10270_5r0dWxy17C8_00001": "unreadable"}  # wav without rebuilt video
    module.setup("fit")
    splits = {s: {r["speaker"] for r in d.records} for s, d in module.datasets.items()}
    assert "id00017" in splits["test"] and "id10270" not in set().union(*splits.values())
    assert not splits["train"] & splits["test"] and not splits["train"] & splits["val"]
    check_whole_utterance_batch(next(iter(module.train_dataloader())), IMAGE_SIZE)


def test_english_filter_uses_nationality(prepared):
    module = prepared("voxceleb", english_only=True)
    module.setup("fit")
    kept = {r["speaker"] for d in module.datasets.values() for r in d.records}
    assert kept == {"id10001"}  # Ireland; Vox2 and India have no transcript with language ID yet
    assert any("no language" in e["reason"] for e in module.excluded)
