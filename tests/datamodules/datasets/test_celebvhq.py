"""CelebV-HQ on its fixture tree: id parsing, talk filter, raw cut and crop, language metadata."""

from __future__ import annotations

import pytest

from datamodules import celebvhq
from datamodules.preprocess import load_manifest
from tests.datamodules.datasets.helpers import IMAGE_SIZE, check_whole_utterance_batch


def test_ids_and_crop():
    assert celebvhq.youtube_id("_0tf2n3rlJU_0") == "_0tf2n3rlJU"
    assert celebvhq.youtube_id("-abcDEF1234_2") == "-abcDEF1234"
    # 160x120 frame, bbox grown by 0.02: x 0.28..0.72 -> 44.8..115.2, y 0.18..0.72 -> 21.6..86.4
    x0, y0, x1, y1 = celebvhq.official_crop({"top": 0.2, "bottom": 0.7, "left": 0.3, "right": 0.7}, 160, 120)
    assert (x1 - x0, (x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx((64.0, 80.0, 54.0))


def test_discover(trees):
    found = {s.key: s for s in celebvhq.discover(trees["celebvhq"])}
    assert set(found) == {"M2Ohb0FAaJU_1", "_0tf2n3rlJU_0", "-abcDEF1234_2"}  # not downloaded / not talking left out
    raw = found["M2Ohb0FAaJU_1"]
    assert (raw.start, raw.end, raw.extra["scheme"]) == (1.0, 3.5, "raw")
    assert found["_0tf2n3rlJU_0"].language == "de"  # language.csv
    assert found["-abcDEF1234_2"].speaker == "-abcDEF1234"
    assert len(celebvhq.discover(trees["celebvhq"], talk_only=False)) == 3  # the silent clip is not downloaded
    assert "talk" in raw.extra["actions"] and raw.extra["emotion"]["labels"] == "neutral"


def test_missing_info(tmp_path):
    with pytest.raises(FileNotFoundError, match="celebvhq_info.json"):
        celebvhq.discover(tmp_path)


def test_datamodule(prepared):
    module = prepared("celebvhq", english_only=False, num_frames=None, motion_frames=0)
    kept = {r["key"]: r for r in load_manifest(prepared.cache) if r["dataset"] == "celebvhq"}
    assert set(kept) == {"M2Ohb0FAaJU_1", "_0tf2n3rlJU_0", "-abcDEF1234_2"}
    assert abs(kept["M2Ohb0FAaJU_1"]["num_frames"] - 62.5) <= 1  # 2.5 s cut, at 25 fps
    assert kept["-abcDEF1234_2"]["sample_rate"] == 16000 and kept["-abcDEF1234_2"]["image_size"] == IMAGE_SIZE
    module.setup("fit")
    check_whole_utterance_batch(next(iter(module.train_dataloader())), IMAGE_SIZE)
    english = prepared("celebvhq", english_only=True)
    english.setup("fit")
    reasons = {e["key"]: e["reason"] for e in english.excluded}
    assert "metadata language 'de'" in reasons["_0tf2n3rlJU_0"]
