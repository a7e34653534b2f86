"""DemoDataModule on a tiny corpus in the demo layout: the batch contract through 2-worker DataLoaders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.batch import MEL_PAD_VALUE, collate, validate_batch
from datamodules.demo import DemoDataModule
from datamodules.media import write_mp4

SPLITS = {"s0": "train", "s1": "train", "s2": "val", "s3": "test"}
SENTENCES = ["the red fox runs home", "a quiet river flows on", "green hills under the sun", "we walk to the sea"]


def _write_clip(root: Path, key: str, seconds: float, seed: int) -> dict:
    """A 128x128 clip: a bright ellipse 'face' on a gradient, a mouth bar that opens, a modulated tone."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 25)
    yy, xx = np.mgrid[0:128, 0:128]
    frames = np.empty((n, 128, 128, 3), np.uint8)
    for k in range(n):
        image = np.stack([xx * 2, yy * 2, np.full_like(xx, 60 + 4 * seed)], -1).astype(np.uint8)
        image[((xx - 64) / 30) ** 2 + ((yy - 64) / 40) ** 2 <= 1] = (230, 190, 160)
        image[84 : 88 + (k % 6), 52:76] = (120, 20, 30)
        frames[k] = image
    t = np.arange(int(seconds * 16000)) / 16000
    audio = 0.3 * np.sin(2 * np.pi * (150 + 30 * seed) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    audio = (audio + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    write_mp4(root / "clips" / f"{key}.mp4", frames, audio=audio)
    return {"key": key, "speaker": f"spk{key}", "voice": "v", "face_id": seed, "transcript": SENTENCES[seed],
            "split": SPLITS[key], "duration": seconds, "num_frames": n, "fps": 25, "sample_rate": 16000,
            "width": 128, "height": 128, "face_box": [34, 24, 94, 104],
            "landmarks": [[52, 54], [76, 54], [64, 68], [54, 86], [74, 86]], "mouth_center": [64, 86],
            "mouth_open": 0.2}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    records = [_write_clip(root, key, seconds, i) for i, (key, seconds) in enumerate(
        [("s0", 2.4), ("s1", 3.0), ("s2", 2.2), ("s3", 2.6)])]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "corpus.json").write_text(json.dumps({"num_clips": len(records)}))
    return root


@pytest.fixture(scope="module")
def datamodule(tiny_root: Path) -> DemoDataModule:
    dm = DemoDataModule(root=str(tiny_root), image_size=64, num_frames=8, motion_frames=2, batch_size=2,
                        num_workers=2, vocab_size=300, build_if_missing=False)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_prepare_builds_cache_and_tokenizer(datamodule: DemoDataModule, tiny_root: Path) -> None:
    assert datamodule.cache_dir == tiny_root / "cache" / "64"
    assert (datamodule.cache_dir / "manifest.jsonl").is_file() and datamodule.tokenizer_path.is_file()
    assert {s: len(d) for s, d in datamodule.datasets.items()} == {"train": 2, "val": 1, "test": 1}
    assert datamodule.tokenizer.get_vocab_size() <= datamodule.vocab_size == 300
    datamodule.prepare_data()  # idempotent: everything is already there


def test_train_batches_from_two_workers_follow_contract(datamodule: DemoDataModule) -> None:
    loader = datamodule.train_dataloader()
    assert loader.num_workers == 2
    batch = next(iter(loader))
    validate_batch(batch)
    assert batch["video"].shape == (2, 10, 3, 64, 64) and batch["ref_image"].shape == (2, 3, 64, 64)
    assert sorted(batch["key"]) == ["s0", "s1"] and batch["dataset"] == ["demo", "demo"]
    assert (batch["frame_start"] >= -2).all()
    ids = batch["text_ids"]
    assert (ids[:, 0] == 1).all() and ((ids == 2).sum(1) == 1).all()  # <s> ... </s>
    texts = {k: datamodule.tokenizer.decode(row[m].tolist()) for k, row, m in zip(batch["key"], ids, batch["text_mask"])}
    assert texts == {"s0": SENTENCES[0], "s1": SENTENCES[1]}


def test_val_window_starts_the_clip_with_reference_motion_frames(datamodule: DemoDataModule) -> None:
    batch = next(iter(datamodule.val_dataloader()))
    validate_batch(batch)
    assert batch["frame_start"].tolist() == [-2]
    video, ref = batch["video"][0], batch["ref_image"][0]
    torch.testing.assert_close(video[0], ref)
    torch.testing.assert_close(video[1], ref)
    assert (video[2] - ref).abs().mean() < 0.05  # frame 0 decoded vs the lossless reference
    assert batch["wav_lengths"].tolist() == [int(2.2 * 16000)]
    torch.testing.assert_close(batch["profile_wav"][0], batch["wav"][0, :32000])


def test_random_train_windows_vary_and_stay_inside_clip(datamodule: DemoDataModule) -> None:
    dataset = datamodule.datasets["train"]
    torch.manual_seed(0)
    starts = {dataset[1]["frame_start"] for _ in range(12)}  # s1: 75 frames
    assert len(starts) > 3 and min(starts) >= -2 and max(starts) <= 75 - 8 - 2


def test_collate_pads_text_audio_and_mel(datamodule: DemoDataModule) -> None:
    dataset = datamodule.datasets["train"]
    a, b = dataset[0], dataset[1]  # 2.4 s and 3.0 s
    batch = collate([a, b])
    validate_batch(batch)
    assert batch["wav_lengths"].tolist() == [a["wav"].numel(), b["wav"].numel()] == [38400, 48000]
    assert (batch["wav"][0, 38400:] == 0).all()
    assert batch["mel_lengths"].tolist() == [38400 // 256 + 1, 48000 // 256 + 1]
    assert (batch["mel"][0, :, 151:] == MEL_PAD_VALUE).all()
    lengths = [a["text_ids"].numel(), b["text_ids"].numel()]
    assert batch["text_mask"].sum(1).tolist() == lengths
    assert (batch["text_ids"][batch["text_mask"].logical_not()] == 0).all()


def test_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="vocab_size must be >= 260"):
        DemoDataModule(root=str(tmp_path), vocab_size=100)
    dm = DemoDataModule(root=str(tmp_path / "none"), build_if_missing=False)
    with pytest.raises(FileNotFoundError, match="build_if_missing=False"):
        dm.prepare_data()
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()


# -- once per cache: prepare_data (local rank 0) writes, setup (every rank) reads --------------------


def _another_rank(tiny_root: Path) -> DemoDataModule:
    """A DataModule as a second DDP rank builds it: same config, its prepare_data never called."""
    return DemoDataModule(root=str(tiny_root), image_size=64, num_frames=8, motion_frames=2, batch_size=2,
                          num_workers=0, vocab_size=300, build_if_missing=False)


def _no_training(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the tokenizer was trained again")

    monkeypatch.setattr("datamodules.base.train_tokenizer", refuse)


def test_setup_on_another_rank_loads_the_tokenizer_prepare_data_wrote(datamodule, tiny_root, monkeypatch) -> None:
    _no_training(monkeypatch)
    other = _another_rank(tiny_root)
    other.setup("fit")
    assert other.tokenizer.to_str() == datamodule.tokenizer.to_str()
    assert {s: len(d) for s, d in other.datasets.items()} == {"train": 2, "val": 1, "test": 1}


def test_prepare_data_twice_keeps_the_tokenizer(datamodule, tiny_root, monkeypatch) -> None:
    before = datamodule.tokenizer_path.read_text(), datamodule.tokenizer_path.stat().st_mtime_ns
    _no_training(monkeypatch)
    _another_rank(tiny_root).prepare_data()  # a second run, or a second node on a shared cache
    assert (datamodule.tokenizer_path.read_text(), datamodule.tokenizer_path.stat().st_mtime_ns) == before


def test_setup_without_prepare_data_names_the_missing_tokenizer(tiny_root, tmp_path) -> None:
    dm = DemoDataModule(root=str(tiny_root), cache_dir=str(tmp_path / "empty_cache"), image_size=64,
                        build_if_missing=False)
    with pytest.raises(FileNotFoundError, match=r"no tokenizer at .*empty_cache.*prepare_data\(\)"):
        dm.setup("fit")
    assert not dm.tokenizer_path.exists()  # setup trained nothing
