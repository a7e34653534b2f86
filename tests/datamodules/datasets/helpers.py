"""Checks every DataModule test repeats: the batch contract and the T-frames / T*640-samples pairing."""

from __future__ import annotations

import torch

from datamodules.batch import validate_batch
from datamodules.conventions import SAMPLES_PER_FRAME


def check_whole_utterance_batch(batch: dict, image_size: int) -> None:
    """Whole-utterance window: T x 3 x S x S video, 16 kHz audio of T / 25 * 16000 samples."""
    validate_batch(batch)
    assert batch["video"].shape[2:] == (3, image_size, image_size)
    assert batch["video"].shape[0] == len(batch["key"])
    assert int(batch["wav_lengths"].max()) == batch["video"].shape[1] * SAMPLES_PER_FRAME
    # the reference is the clip's first frame (PNG) and frame 0 comes back through H.264
    first = batch["frame_start"] == 0
    assert first.any()
    error = (batch["ref_image"][first] - batch["video"][first, 0]).abs().mean()
    assert float(error) < 0.05
