"""What the DataModule tests share: the crop size, the face-detector stand-in, and the checks every test
repeats (the batch contract, the T-frames / T*640-samples pairing)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from datamodules import face as facelib
from datamodules.batch import validate_batch
from datamodules.conventions import SAMPLES_PER_FRAME
from tests.datamodules import fixtures

IMAGE_SIZE = 32
"""Small crops keep the tests fast; the code path is the one used at 512."""


@contextlib.contextmanager
def fake_detection():
    """MTCNN replaced by :func:`fixtures.fake_detect_face` for the drawn faces, inside the block only.

    Never session-wide: other tests in the same worker (generation, real photos) need the real detector.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(facelib, "detect_face", fixtures.fake_detect_face)
        yield


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
