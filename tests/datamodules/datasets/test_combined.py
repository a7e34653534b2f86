"""The four datasets mixed, roots from the environment."""

from __future__ import annotations

import pytest

from datamodules.batch import validate_batch
from datamodules.combined import CombinedDataModule


def test_needs_a_root(monkeypatch):
    for name in ("NFY_VOXCELEB", "NFY_FAKEAVCELEB", "NFY_HDTF", "NFY_CELEBVHQ"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="NFY_HDTF"):
        CombinedDataModule()


def test_mixes_all_four(trees, prepared, monkeypatch):
    for name, var in (("voxceleb", "NFY_VOXCELEB"), ("fakeavceleb", "NFY_FAKEAVCELEB"), ("hdtf", "NFY_HDTF"),
                      ("celebvhq", "NFY_CELEBVHQ")):
        prepared(name)  # cached once for the session
        monkeypatch.setenv(var, str(trees[name]))
    module = CombinedDataModule(cache_dir=str(prepared.cache), batch_size=4, num_workers=0, image_size=32,
                                english_only=False, num_frames=4, motion_frames=2)
    module.prepare_data()  # everything is cached: nothing is redone
    module.setup("fit")
    datasets = {r["dataset"] for part in module.datasets["train"].datasets for r in part.records}
    assert datasets == {"voxceleb", "fakeavceleb", "hdtf", "celebvhq"}
    batch = next(iter(module.train_dataloader()))
    validate_batch(batch)
    assert batch["video"].shape[1:] == (6, 3, 32, 32)
