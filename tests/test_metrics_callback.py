"""GenerativeMetricsCallback with a dummy LightningModule that serves generation requests in its validation step."""

from __future__ import annotations

import logging
import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from pystoi import stoi as pystoi_stoi
from torch.utils.data import DataLoader

from callbacks.metrics_callback import (
    GenerativeMetricsCallback,
    pairs_from_batch,
    to_uint8_video,
)
from lightning_modules.generation_requests import GenerationRequests
from metrics.image_quality import VideoPSNR

FRAMES, SIDE, SAMPLES = 6, 16, 16000


def _sample(i: int) -> dict:
    g = torch.Generator().manual_seed(i)
    t = torch.arange(SAMPLES) / 16000
    wav = 0.3 * torch.sin(2 * math.pi * (150 + 20 * i) * t) * (0.6 + 0.4 * torch.sin(2 * math.pi * 3 * t))
    return {
        "video": torch.rand(FRAMES, 3, SIDE, SIDE, generator=g) * 2 - 1,  # ground truth in [-1, 1]
        "wav": wav.float(),
        "wav_lengths": torch.tensor(SAMPLES - 800 * i),
        "mel_lengths": torch.tensor((SAMPLES - 800 * i) // 256),
        "frame_start": torch.tensor(1),
    }


class DummyModule(GenerationRequests, pl.LightningModule):
    """Generates a longer, slightly altered copy of the ground truth (frame 0 is extra)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.generated = 0

    def training_step(self, batch, batch_idx):
        return self.layer(batch["wav"][:, :1]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        served = self.serve_generation_requests(batch)
        return {"generated": served} if served else None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def generate_batch(self, batch: dict, mel_frames=None, seed=None) -> dict:
        self.generated += len(batch["wav"])
        unit = (batch["video"] + 1) / 2 * 0.9 + 0.05  # (B, F, 3, H, W) in [0, 1]
        video = torch.cat([torch.zeros_like(unit[:, :1]), unit], 1)  # generated from clip frame 0
        return {"video": video, "wav": batch["wav"] * 0.8, "wav_lengths": batch["wav_lengths"]}


def _fit(callback: GenerativeMetricsCallback, epochs: int = 1) -> tuple[pl.Trainer, DummyModule]:
    data = [_sample(i) for i in range(6)]
    module = DummyModule()
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        limit_train_batches=1, limit_val_batches=3, num_sanity_val_steps=1, callbacks=[callback],
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(data, batch_size=2), DataLoader(data, batch_size=2))
    return trainer, module


def test_logs_metrics_equal_to_direct_computation() -> None:
    callback = GenerativeMetricsCallback(metrics=["psnr", "stoi"], num_samples=3)
    trainer, module = _fit(callback)
    assert module.generated == 3  # only num_samples rows, none during the sanity check
    batch = {k: torch.stack([_sample(i)[k] for i in range(3)]) for k in _sample(0)}
    pairs = pairs_from_batch(batch, module.generate_batch(batch))
    psnr = VideoPSNR()
    for pred, gt in pairs:
        psnr.update(pred.video[None], gt.video[None])
    stoi = np.mean([pystoi_stoi(gt.wav.double().numpy(), pred.wav.double().numpy(), 16000) for pred, gt in pairs])
    logged = trainer.callback_metrics
    assert float(logged["val/psnr"]) == pytest.approx(float(psnr.compute()), rel=1e-5)
    assert float(logged["val/stoi"]) == pytest.approx(stoi, abs=1e-5)


def test_pairs_cut_generated_frames_to_the_ground_truth_window() -> None:
    batch = {k: torch.stack([_sample(i)[k] for i in range(2)]) for k in _sample(0)}
    out = DummyModule().generate_batch(batch)
    pred, gt = pairs_from_batch(batch, out)[1]
    assert pred.video.shape == gt.video.shape == (FRAMES, 3, SIDE, SIDE)
    assert pred.wav.shape == (SAMPLES - 800,)  # wav_lengths respected
    expected = to_uint8_video(out["video"][1, 1:], signed=False)
    assert torch.equal(pred.video, expected)
    assert to_uint8_video(torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1, 1), signed=True).flatten().tolist() == [0, 128, 255]


def test_pairs_leave_out_window_frames_before_the_clip_starts() -> None:
    """A window starting before the clip (frame_start < 0: the motion context of the first window) is
    compared from the clip's first frame on, with the generated frames from 0."""
    batch = {k: torch.stack([_sample(i)[k] for i in range(2)]) for k in _sample(0)}
    batch["frame_start"] = torch.tensor([-2, 0])
    out = DummyModule().generate_batch(batch)
    (pred, gt), (pred_1, gt_1) = pairs_from_batch(batch, out)
    assert gt.video.shape[0] == FRAMES - 2 and pred.video.shape == gt.video.shape
    assert torch.equal(gt.video, to_uint8_video(batch["video"][0, 2:], signed=True))
    assert torch.equal(pred.video, to_uint8_video(out["video"][0, : FRAMES - 2], signed=False))
    assert pred_1.video.shape == gt_1.video.shape == (FRAMES, 3, SIDE, SIDE)


def test_epochs_not_due_generate_nothing_and_missing_weights_are_skipped(caplog) -> None:
    callback = GenerativeMetricsCallback(metrics=["psnr"], every_n_epochs=2, num_samples=2)
    trainer, module = _fit(callback, epochs=1)
    assert module.generated == 0 and "val/psnr" not in trainer.callback_metrics
    from metrics.registry import available

    if not available("syncnet"):
        with caplog.at_level(logging.WARNING):
            trainer, _ = _fit(GenerativeMetricsCallback(metrics=["psnr", "lse"], num_samples=2))
        assert "lse skipped: missing weights ['syncnet']" in caplog.text
        assert "val/psnr" in trainer.callback_metrics


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        GenerativeMetricsCallback(metrics=["psnr", "nope"])
    with pytest.raises(ValueError, match="num_samples"):
        GenerativeMetricsCallback(num_samples=0)
