"""Generative metrics (PSNR, SSIM, STOI, PESQ, LSE, FID...) on validation samples during training.

Protocol with the LightningModule (``lightning_modules.nfy_module.NFYLitModule`` implements it
with :class:`lightning_modules.generation_requests.GenerationRequests`): the callback calls
``pl_module.request_generation(name, rows, seed)`` before a validation batch, and the validation
step returns ``{"generated": {name: {"batch": rows, "output": out}}}`` with::

    out = {
        "video": (B, T, 3, H, W) float in [0, 1] or uint8, 25 fps,
        "wav":   (B, S) float in [-1, 1], 16 kHz,
        "wav_lengths": (B,) int64, optional: valid samples per row of "wav",
    }

``batch`` is a validation :class:`~datamodules.batch.NFYBatch`; its ground truth is ``video``
(B, F, 3, H, W) float in [-1, 1] starting at clip frame ``frame_start``, and ``wav`` (B, S) float
in [-1, 1] with ``wav_lengths``. When the generated video covers the whole utterance, the frames
``frame_start .. frame_start + F - 1`` are compared with the ground-truth window.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from callbacks.distributed import requested_output, want_generation
from metrics.suite import SPECS, Clip, MetricSuite

log = logging.getLogger(__name__)


class GenerativeMetricsCallback(Callback):
    """Generate samples for validation batches and log ``val/<metric>`` for each configured metric.

    Args:
        metrics: keys of :data:`metrics.suite.SUITE` (``"psnr"``, ``"ssim"``, ``"stoi"``,
            ``"pesq"``, ``"lse"``, ``"fid"``...). Metrics whose weights or packages are missing,
            or that need transcripts, are skipped with a warning naming the reason.
        every_n_epochs: evaluate after every n-th validation epoch.
        num_samples: validation samples generated per evaluation (per process under DDP, the
            metric states synchronised by torchmetrics at compute time; under FSDP every process
            scores process 0's samples, generated at their ground-truth lengths).
        seed: seed of the generation noise (forked RNG: training draws stay unchanged).
        metric_kwargs: per metric key, constructor arguments (e.g. an injected network).

    Raises:
        ValueError: unknown metric names, or ``every_n_epochs``/``num_samples`` below 1.
    """

    def __init__(
        self,
        metrics: Sequence[str] = ("psnr", "ssim", "stoi"),
        every_n_epochs: int = 1,
        num_samples: int = 8,
        seed: int = 0,
        metric_kwargs: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        unknown = sorted(set(metrics) - set(SPECS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(SPECS)}")
        if every_n_epochs < 1 or num_samples < 1:
            raise ValueError(f"every_n_epochs and num_samples must be >= 1, got {every_n_epochs}, {num_samples}")
        self.metric_names = list(metrics)
        self.every_n_epochs, self.num_samples, self.seed = every_n_epochs, num_samples, seed
        self.metric_kwargs = metric_kwargs or {}
        self.name = f"metrics@{id(self):x}"
        self._suite: MetricSuite | None = None
        self._requested = 0
        self.last_results: dict[str, float] = {}
        self._warned = False

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """On a due epoch (not the sanity check), a fresh metric suite."""
        self._suite, self._requested = None, 0
        if trainer.sanity_checking or not self._due(trainer):
            return
        self._suite = MetricSuite(self.metric_names, paired=True, overrides=self.metric_kwargs)
        for key, reason in self._suite.skipped.items():
            log.warning("GenerativeMetricsCallback: %s skipped: %s", key, reason)

    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        """Ask for this batch's rows until ``num_samples`` are requested."""
        if self._suite is None or self._requested >= self.num_samples:
            return
        if want_generation(self, trainer, pl_module, every_rank=True):
            rows = min(self.num_samples - self._requested, len(batch["wav"]))
            # at the ground truth's length: the pairs cover the ground-truth window whatever the stop head says
            pl_module.request_generation(self.name, rows, self.seed, ground_truth_length=True)
            self._requested += rows

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Score what the validation step generated for this callback against its ground truth."""
        served = requested_output(outputs, self.name)
        if served is not None and self._suite is not None:
            for pred, gt in pairs_from_batch(served["batch"], served["output"]):
                self._suite.update(pred, gt)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log ``val/<column>`` for every value the metrics give (states synchronised across processes)."""
        suite, self._suite = self._suite, None
        if suite is None or self._requested == 0:
            return
        results, failed = suite.compute()
        for key, reason in failed.items():
            log.warning("GenerativeMetricsCallback: %s failed: %s", key, reason)
        self.last_results = results
        for column, value in results.items():
            if not math.isnan(value):
                pl_module.log(f"val/{column}", value, on_epoch=True)

    def _due(self, trainer: Trainer) -> bool:
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0


# --------------------------------------------------------------------------------------------
# Batch -> clips
# --------------------------------------------------------------------------------------------


def to_uint8_video(video: torch.Tensor, signed: bool) -> torch.Tensor:
    """``(T, 3, H, W)`` float ([-1, 1] if ``signed`` else [0, 1]) or uint8 -> uint8 on the CPU."""
    if video.dtype == torch.uint8:
        return video.cpu()
    unit = (video.float() + 1) / 2 if signed else video.float()
    return (unit.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def _valid(wav: torch.Tensor, lengths: torch.Tensor | None, row: int) -> torch.Tensor:
    end = int(lengths[row]) if lengths is not None else wav.shape[-1]
    return wav[row, :end].float().cpu()


def pairs_from_batch(batch: dict[str, Any], out: dict[str, torch.Tensor]) -> list[tuple[Clip, Clip]]:
    """Generated and ground-truth clips of every row, the generated frames cut to the GT window (from the
    clip's first frame on: window frames before it, ``frame_start < 0``, are left out)."""
    pairs = []
    for row in range(out["video"].shape[0]):
        gt_video = to_uint8_video(batch["video"][row], signed=True)  # (F, 3, H, W)
        pred_video = to_uint8_video(out["video"][row], signed=False)  # (T, 3, H, W)
        start = int(batch["frame_start"][row]) if "frame_start" in batch else 0
        if start < 0:  # the window's first frames precede the clip (the first window's motion context)
            gt_video, start = gt_video[-start:], 0
        if pred_video.shape[0] >= start + gt_video.shape[0]:
            pred_video = pred_video[start : start + gt_video.shape[0]]
        pred = Clip(pred_video, _valid(out["wav"], out.get("wav_lengths"), row))
        gt = Clip(gt_video, _valid(batch["wav"], batch.get("wav_lengths"), row))
        pairs.append((pred, gt))
    return pairs
