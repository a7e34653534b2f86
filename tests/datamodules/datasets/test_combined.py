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


def test_every_argument_is_a_config_key():
    """jsonargparse builds the module from YAML: no argument may hide in **kwargs."""
    import inspect

    params = inspect.signature(CombinedDataModule.__init__).parameters.values()
    assert not [p.name for p in params if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    from experiments.fit import NFYCLI

    cli = NFYCLI(args=["--config", "ete.yaml", "--config", "tiny.yaml", "--data", "datamodules.combined.CombinedDataModule",
                       "--data.hdtf_root", "/nowhere", "--data.image_size", "64", "--data.num_frames", "4",
                       "--trainer.logger=false"])
    assert (cli.datamodule.image_size, cli.model.net.image_size) == (64, 64)
    assert cli.datamodule.modules["hdtf"].num_frames == cli.model.net.num_frames == 4


def test_streaming_mode_mixes_per_dataset_chunks(prepared, tmp_path, monkeypatch):
    from datamodules.streaming import optimize_splits

    for var in ("NFY_VOXCELEB", "NFY_FAKEAVCELEB", "NFY_HDTF", "NFY_CELEBVHQ"):
        monkeypatch.delenv(var, raising=False)
    roots, keys = {}, {}
    for name in ("fakeavceleb", "hdtf"):
        module = prepared(name, english_only=False)
        records = [{**r, "split": "train"} for r in module.streaming_records()[:3]]
        optimize_splits(records, prepared.cache, str(tmp_path / "chunks" / name), num_workers=1)
        roots[f"{name}_root"], keys[name] = str(module.root), {r["key"] for r in records}
    combined = CombinedDataModule(**roots, cache_dir=str(tmp_path / "unused"), streaming_dir=str(tmp_path / "chunks"),
                                  image_size=32, num_frames=4, motion_frames=2, batch_size=2, num_workers=0)
    combined.prepare_data()  # streaming: nothing to preprocess, the cache is not touched
    combined.setup("fit")
    assert not (tmp_path / "unused").exists()
    seen = set()
    for batch in combined.train_dataloader():
        validate_batch(batch)
        assert batch["video"].shape[1:] == (6, 3, 32, 32)
        seen |= set(batch["key"])
    assert seen == keys["fakeavceleb"] | keys["hdtf"]  # every item of both datasets, once per epoch


def test_tokenizer_is_trained_by_prepare_data_and_only_read_by_setup(trees, prepared, tmp_path, monkeypatch):
    """What DDP relies on: setup (every rank) never trains; prepare_data (local rank 0) trains once."""
    import shutil

    from tests.datamodules.datasets.helpers import fake_detection

    for var in ("NFY_VOXCELEB", "NFY_FAKEAVCELEB", "NFY_HDTF", "NFY_CELEBVHQ"):
        monkeypatch.delenv(var, raising=False)
    prepared("fakeavceleb")  # the clips cached for the session
    cache = tmp_path / "cache"
    shutil.copytree(prepared.cache, cache)
    (cache / "tokenizer.json").unlink(missing_ok=True)

    def make() -> CombinedDataModule:
        return CombinedDataModule(fakeavceleb_root=str(trees["fakeavceleb"]), cache_dir=str(cache), image_size=32,
                                  english_only=False, num_frames=4, batch_size=2, num_workers=0)

    with pytest.raises(FileNotFoundError, match="prepare_data"):
        make().setup("fit")
    assert not (cache / "tokenizer.json").exists()
    with fake_detection():
        make().prepare_data()  # the clips are cached: only the tokenizer is trained
    from datamodules.tokenizer import load_tokenizer

    trained = load_tokenizer(cache / "tokenizer.json").to_str()
    rank1 = make()
    rank1.setup("fit")
    assert rank1.tokenizer.to_str() == trained and len(rank1.datasets["train"]) > 0
