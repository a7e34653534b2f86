"""The batch contract: collate pads correctly and validate_batch rejects each kind of breach."""

from __future__ import annotations

import pytest
import torch

from datamodules.batch import MEL_PAD_VALUE, collate, validate_batch


def _sample(text_len: int, samples: int, mel_frames: int, size: int = 16, frames: int = 6) -> dict:
    return {
        "text_ids": torch.randint(1, 50, (text_len,)),
        "ref_image": torch.rand(3, size, size) * 2 - 1,
        "face_mask": (torch.rand(1, size, size) > 0.5).float(),
        "lip_mask": (torch.rand(1, size, size) > 0.8).float(),
        "profile_wav": torch.rand(32000) * 2 - 1,
        "video": torch.rand(frames, 3, size, size) * 2 - 1,
        "frame_start": -2,
        "wav": torch.rand(samples) * 2 - 1,
        "mel": torch.randn(80, mel_frames),
        "key": f"clip{text_len}",
        "speaker": "spk0",
        "dataset": "demo",
    }


def test_collate_pads_and_masks() -> None:
    batch = collate([_sample(5, 40000, 157), _sample(3, 48000, 188)])
    validate_batch(batch)
    assert batch["text_ids"].shape == (2, 5)
    assert batch["text_mask"].tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    assert (batch["text_ids"][1, 3:] == 0).all()
    assert batch["wav_lengths"].tolist() == [40000, 48000]
    assert (batch["wav"][0, 40000:] == 0).all()
    assert batch["mel_lengths"].tolist() == [157, 188]
    assert (batch["mel"][0, :, 157:] == MEL_PAD_VALUE).all()
    assert batch["frame_start"].tolist() == [-2, -2]


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("ref_image", lambda b: b["ref_image"] * 3, "must lie in"),
        ("profile_wav", lambda b: b["profile_wav"][:, :100], "shape"),
        ("text_ids", lambda b: b["text_ids"].int(), "torch.int64"),
        ("lip_mask", lambda b: b["lip_mask"][:, :, :8], "shape"),
        ("speaker", lambda b: ["a"], "list of 2 strings"),
        ("mel_lengths", lambda b: b["mel_lengths"] + 1000, "exceed"),
    ],
)
def test_validate_batch_rejects(key, value, message) -> None:
    batch = collate([_sample(5, 40000, 157), _sample(3, 48000, 188)])
    batch[key] = value(batch)
    with pytest.raises(ValueError, match=message):
        validate_batch(batch)


def test_validate_batch_names_missing_keys() -> None:
    batch = dict(collate([_sample(5, 40000, 157)]))
    del batch["mel"]
    with pytest.raises(ValueError, match="lacks keys \\['mel'\\]"):
        validate_batch(batch)
