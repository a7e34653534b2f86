"""Training logic of the NFY model (paper Sec. 3.4 and 4.1) around an injected :class:`NFYNetwork`.

The network (``lightning_modules/networks/nfy.py``) computes the unweighted loss terms of one
teacher-forced pass; this module weights them, logs each on its own, owns the optimiser and the
schedule, and turns the network's two generation calls (speech, then video window by window)
into whole talking-face clips for the sample/metric callbacks and the generation API.

Loss (Sec. 3.4 plus the two terms a diffusion model and a stop head need)::

    L = w_video * L1(frames) + w_audio * MSE(mel) + w_denoise * L_denoise + w_stop * BCE(stop)

with the paper's L_video + 0.1 * L_audio as the defaults of the first two weights.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric
from tqdm.auto import tqdm

from datamodules.batch import NFYBatch, validate_batch
from datamodules.conventions import (
    MEL_FRAMES_PER_VIDEO_FRAME,
    N_MELS,
    SAMPLES_PER_FRAME,
)

log = logging.getLogger(__name__)

LOSS_TERMS: tuple[str, ...] = ("video_l1", "audio_mse", "denoise", "stop")
"""Unweighted loss terms every :class:`NFYNetwork` forward returns."""
STAGES: tuple[str, ...] = ("train", "val", "test")
MIN_USEFUL_LR: float = 1e-7
"""Below this rate an AdamW step changes fp32 weights of order 1e-2 by less than their rounding."""


class NFYLitModule(LightningModule):
    """Weights, logs and optimises the NFY network; generates whole clips from a batch.

    Args:
        net: the network (``lightning_modules.networks.NFYNetwork`` or anything with its
            interface: ``forward(batch) -> dict`` of loss terms, ``generate_speech``,
            ``generate_video`` and the ``image_size``/``num_frames``/``motion_frames`` attributes).
        optimizer: partial optimiser, called with the trainable parameters (AdamW by default).
        scheduler: partial LR scheduler, called with the optimiser; stepped every ``scheduler_interval``.
            ``None`` keeps the LR constant. When fitting starts, a warning says if the schedule takes the
            rate below ``MIN_USEFUL_LR`` before training ends.
        video_weight: weight of the pixel L1 between decoded x0 estimate and ground truth frames.
        audio_weight: weight of the mel MSE (0.1 in the paper).
        denoise_weight: weight of the diffusion denoising objective.
        stop_weight: weight of the stop-head binary cross-entropy.
        num_inference_steps: DDIM steps used by :meth:`generate_batch` (samples and metrics).
        guidance_scale: classifier-free guidance scale used by :meth:`generate_batch`.
        max_mel_frames: cap on autoregressive mel frames per utterance at generation
            (62.5 per second; 625 = 10 s, the longest training utterance).
        mel_statistics_batches: training batches whose valid mel frames give the speech decoder its
            per-bin mean and standard deviation when fitting starts (``net.audio_decoder.set_mel_statistics``;
            once: a checkpoint keeps them). 0 keeps the decoder's constants.
        scheduler_interval: ``"step"`` (every optimiser step) or ``"epoch"``. ete.yaml reads the paper's
            StepLR(1000, 0.5) per epoch, as PyTorch documents StepLR: over its 10 epochs the rate stays
            1e-4. Per optimiser step (about 4,500 per epoch on the paper's 36,000 clips) it would fall
            below 1e-7 after 10,000 steps and 90 % of training would learn nothing.

    Raises:
        ValueError: a negative loss weight, or ``net`` lacking part of the interface.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        video_weight: float = 1.0,
        audio_weight: float = 0.1,
        denoise_weight: float = 1.0,
        stop_weight: float = 1.0,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        max_mel_frames: int = 625,
        mel_statistics_batches: int = 8,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__()
        weights = {"video_l1": video_weight, "audio_mse": audio_weight, "denoise": denoise_weight, "stop": stop_weight}
        for name, value in weights.items():
            if value < 0:
                raise ValueError(f"loss weight for {name!r} must be >= 0, got {value}")
        for attr in ("generate_speech", "generate_video", "image_size", "num_frames", "motion_frames"):
            if not hasattr(net, attr):
                raise ValueError(f"net ({type(net).__name__}) lacks {attr!r} of the NFYNetwork interface")
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        if mel_statistics_batches < 0:
            raise ValueError(f"mel_statistics_batches must be >= 0, got {mel_statistics_batches}")
        if num_inference_steps < 1 or max_mel_frames < 1:
            raise ValueError(
                f"num_inference_steps and max_mel_frames must be >= 1, got {num_inference_steps}, {max_mel_frames}"
            )
        # Under LightningCLI the hyperparameters are the parsed class_path configs (of the network
        # and the optimiser too), so load_from_checkpoint rebuilds everything. Built by hand, the
        # network is an object whose weights the checkpoint holds anyway, and the optimiser
        # partials may be lambdas that cannot be pickled: keep only the primitive arguments.
        by_cli = _given_hyperparameters.get() is not None
        self.save_hyperparameters(ignore=[] if by_cli else ["net", "optimizer", "scheduler"])
        self.net = net
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loss_weights = weights
        self._batch_checked = False
        self.tokenizer: Any = None  # from the DataModule (setup) or the checkpoint; used by generation
        # One MeanMetric per stage and term (plus the weighted total): epoch means sync over DDP.
        # (ModuleDict keys "train"/"val" would clash with nn.Module.train, hence "train_loss" ...)
        self.losses = nn.ModuleDict(
            {f"{stage}_{name}": MeanMetric() for stage in STAGES for name in (*LOSS_TERMS, "loss")}
        )

    # ------------------------------------------------------------------ training
    def forward(self, batch: NFYBatch) -> dict[str, torch.Tensor]:
        """One teacher-forced pass; see :meth:`NFYNetwork.forward` for the returned keys."""
        return self.net(batch)

    def _step(self, batch: NFYBatch, stage: str) -> dict[str, torch.Tensor]:
        """Shared by every stage: forward, weight the terms, log each term and the total."""
        if not self._batch_checked:
            validate_batch(batch)  # cheap, once: a DataModule breaking the contract fails at step 0
            self._batch_checked = True
        out = self(batch)
        missing = [name for name in LOSS_TERMS if name not in out]
        if missing:
            raise KeyError(f"{type(self.net).__name__}.forward returned no {missing}; expected {list(LOSS_TERMS)}")
        loss = sum(self.loss_weights[name] * out[name] for name in LOSS_TERMS)
        batch_size = batch["text_ids"].shape[0]
        values = {**{name: out[name] for name in LOSS_TERMS}, "loss": loss}
        for name, value in values.items():
            metric = self.losses[f"{stage}_{name}"]
            metric(value.detach())
            self.log(
                f"{stage}/{name}", metric, on_step=stage == "train", on_epoch=True,
                prog_bar=name == "loss", batch_size=batch_size,
            )
        return {**out, "loss": loss}

    def training_step(self, batch: NFYBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Weighted ``loss`` of one batch, with its unweighted terms (detached) for callbacks."""
        out = self._step(batch, "train")
        return {"loss": out["loss"], **{name: out[name].detach() for name in LOSS_TERMS}}

    def validation_step(self, batch: NFYBatch, batch_idx: int) -> None:
        """Log the validation loss terms."""
        self._step(batch, "val")

    def test_step(self, batch: NFYBatch, batch_idx: int) -> None:
        """Log the test loss terms."""
        self._step(batch, "test")

    def setup(self, stage: str) -> None:
        """For fitting, take the DataModule's ``tokenizer``: every checkpoint then stores it.

        ``tokenizer`` (a ``tokenizers.Tokenizer``, set by the DataModule's ``setup``) is the one
        attribute every nfy DataModule exposes for this (:mod:`datamodules.batch`); no other
        place is searched. Without it a warning says that the checkpoints cannot generate, unless
        ``self.tokenizer`` was set by hand.
        """
        if stage != "fit":
            return
        datamodule = self.trainer.datamodule
        tokenizer = getattr(datamodule, "tokenizer", None)
        if tokenizer is not None:
            self.tokenizer = tokenizer
        elif self.tokenizer is None:
            if datamodule is None:
                why = "fit without a DataModule"
            elif not hasattr(datamodule, "tokenizer"):
                why = f"{type(datamodule).__name__} has no `tokenizer` attribute"
            else:
                why = f"{type(datamodule).__name__}.tokenizer is None after setup()"
            rank_zero_warn(f"{why}: checkpoints of this run hold no tokenizer and experiments.generate refuses "
                           "them. Set the DataModule's `tokenizer` in its setup() to the tokenizers.Tokenizer "
                           "that encodes text_ids (or set module.tokenizer)")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the RNG states and the tokenizer (as JSON).

        The RNG states make diffusion noise, timesteps and shuffling resume where they were;
        generation needs the exact vocabulary the model was trained on.
        """
        checkpoint["nfy_rng_states"] = _rng_states()
        if self.tokenizer is not None:
            checkpoint["nfy_tokenizer"] = _tokenizer_json(self.tokenizer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the stored tokenizer and, on resume, the RNG states.

        On resume (Lightning isolates the sanity check's RNG after this) the DataModule's tokenizer,
        set in :meth:`setup`, is kept: it encodes the text being trained on; a warning says when it
        differs from the checkpoint's. ``load_from_checkpoint`` (no trainer attached) leaves the
        caller's RNG alone.
        """
        stored = checkpoint.get("nfy_tokenizer")
        if stored is not None and self.tokenizer is None:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_str(stored)
        elif stored is not None and _tokenizer_json(self.tokenizer) != stored:
            rank_zero_warn("the DataModule's tokenizer differs from the one stored in the checkpoint: the text ids "
                           "now mean other tokens than the model was trained on. Training goes on with the "
                           "DataModule's (give it the run's original tokenizer.json to avoid this)")
        if "nfy_rng_states" in checkpoint and self._trainer is not None:
            _set_rng_states(checkpoint["nfy_rng_states"])

    def on_fit_start(self) -> None:
        """Warn about a schedule that ends below ``MIN_USEFUL_LR``; set the speech decoder's per-bin mel
        statistics from training batches, unless already set."""
        self._check_schedule()
        decoder = getattr(self.net, "audio_decoder", None)
        batches = int(self.hparams.mel_statistics_batches)
        if batches == 0 or not hasattr(decoder, "set_mel_statistics") or bool(decoder.mel_statistics_set):
            return
        datamodule = self.trainer.datamodule
        if datamodule is None:
            log.info("fit without a DataModule: the speech decoder keeps its constant mel statistics")
            return
        sums = torch.zeros(3, N_MELS, dtype=torch.float64)  # frames, sum, sum of squares per bin
        with torch.random.fork_rng(devices=[]):  # random windows must not shift the run's RNG stream
            for index, batch in enumerate(datamodule.train_dataloader()):
                if index >= batches:
                    break
                mel = batch["mel"].double()  # (B, 80, T)
                valid = torch.arange(mel.shape[2])[None] < batch["mel_lengths"][:, None]  # (B, T)
                frames = mel.transpose(1, 2)[valid]  # (N, 80)
                sums += torch.stack([torch.full((N_MELS,), float(len(frames)), dtype=torch.float64),
                                     frames.sum(0), (frames**2).sum(0)])
        sums = self.trainer.strategy.reduce(sums.to(self.device), reduce_op="sum").cpu()  # every rank the same
        if float(sums[0, 0]) == 0:
            return
        mean = sums[1] / sums[0]
        std = (sums[2] / sums[0] - mean**2).clamp(min=0).sqrt()
        decoder.set_mel_statistics(mean.float().to(decoder.mel_mean.device), std.float().to(decoder.mel_std.device))
        log.info("speech decoder mel statistics from %d frames: mean %.2f, std %.2f (averaged over bins)",
                 int(sums[0, 0]), float(mean.mean()), float(std.mean()))

    def _check_schedule(self) -> None:
        """Replay the configured schedule on a stand-in optimiser over the whole fit; warn where it ends up."""
        if self.scheduler is None:
            return
        interval = self.hparams.get("scheduler_interval", "step")
        total = self.trainer.estimated_stepping_batches if interval == "step" else self.trainer.max_epochs
        if total is None or not math.isfinite(total) or total < 0:
            return
        below = lr_floor_step(self.optimizer, self.scheduler, int(total))
        if below is not None:
            rank_zero_warn(f"the learning-rate schedule, stepped per {interval}, takes the rate below "
                           f"{MIN_USEFUL_LR:g} after {below:,} of this fit's {int(total):,} {interval}s: the rest "
                           "learns almost nothing. Step it per epoch (model.scheduler_interval: epoch) or give "
                           "the scheduler a step_size that suits the run's length")

    def on_train_start(self) -> None:
        """Drop the sanity-check values from the validation means."""
        for name in (*LOSS_TERMS, "loss"):
            self.losses[f"val_{name}"].reset()

    def configure_optimizers(self) -> Any:
        """The injected optimiser on trainable parameters, and the scheduler stepped per step."""
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer(params)
        if self.scheduler is None:
            return optimizer
        scheduler = self.scheduler(optimizer)
        interval = self.hparams.get("scheduler_interval", "step")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_batch(self, batch: NFYBatch, max_frames: int | None = None) -> dict[str, torch.Tensor]:
        """Generate speech and video for the conditioning of ``batch`` (used by the callbacks).

        Args:
            batch: a batch of the contract (only its conditioning is read).
            max_frames: generate at most this many video frames (all the speech covers when ``None``).

        Returns:
            ``video`` (B, T, 3, H, W) float in [0, 1] at 25 fps and ``wav`` (B, S) float at
            16 kHz, plus ``wav_lengths`` (B,) and ``mel`` (B, 80, T_mel).
        """
        return self.generate(
            text_ids=batch["text_ids"],
            text_mask=batch["text_mask"],
            ref_image=batch["ref_image"],
            face_mask=batch["face_mask"],
            lip_mask=batch["lip_mask"],
            profile_wav=batch["profile_wav"],
            num_inference_steps=self.hparams.num_inference_steps,
            guidance_scale=self.hparams.guidance_scale,
            max_frames=max_frames,
        )

    @torch.no_grad()
    def generate(
        self,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        ref_image: torch.Tensor,
        face_mask: torch.Tensor,
        lip_mask: torch.Tensor,
        profile_wav: torch.Tensor,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        progress: bool = False,
        motion_frames: torch.Tensor | None = None,
        max_frames: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Speech first (autoregressive until the stop head fires, then the vocoder), then video.

        Args:
            text_ids: (B, L) int64 token ids; ``text_mask`` (B, L) bool.
            ref_image: (B, 3, H, W) float in [-1, 1], the face photo.
            face_mask: (B, 1, H, W) float {0, 1}; ``lip_mask`` likewise.
            profile_wav: (B, 32000) float in [-1, 1], 2 s of the target voice at 16 kHz.
            num_inference_steps: DDIM steps per video window.
            guidance_scale: classifier-free guidance scale.
            generator: seeds the diffusion noise.
            progress: show a tqdm bar over video windows.
            motion_frames: (B, 2, 3, H, W) in [-1, 1], the last frames of a preceding clip the
                first window continues (``None``: start from the reference image).
            max_frames: generate at most this many video frames, e.g. the ones a metric scores
                (``None``: every frame the speech covers).

        Returns:
            ``video`` (B, T, 3, H, W) float in [0, 1], T = ceil(longest speech / 640 samples)
            (at most ``max_frames``);
            ``wav`` (B, S) float in [-1, 1]; ``wav_lengths`` (B,); ``mel`` (B, 80, T_mel);
            ``mel_lengths`` (B,); ``num_frames`` (B,) int64 frames covering each row's speech.
        """
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
        was_training = self.net.training
        self.net.eval()
        try:
            speech = self.net.generate_speech(
                text_ids, text_mask, ref_image, face_mask, lip_mask, profile_wav,
                max_mel_frames=self.hparams.max_mel_frames,
            )
            num_frames = _frames_for_samples(speech["wav_lengths"])  # (B,)
            total = int(num_frames.max()) if max_frames is None else min(int(num_frames.max()), max_frames)
            video = self._generate_windows(
                ref_image, face_mask, lip_mask, text_ids, text_mask, profile_wav,
                speech["audio_hidden"], total, num_inference_steps, guidance_scale,
                generator, progress, motion_frames,
            )  # (B, T, 3, H, W) in [-1, 1]
        finally:
            self.net.train(was_training)
        return {
            "video": ((video + 1.0) / 2.0).clamp(0.0, 1.0),
            "wav": speech["wav"].clamp(-1.0, 1.0),
            "wav_lengths": speech["wav_lengths"],
            "mel": speech["mel"],
            "mel_lengths": speech["mel_lengths"],
            "num_frames": num_frames,
        }

    def _generate_windows(
        self, ref_image, face_mask, lip_mask, text_ids, text_mask, profile_wav, audio_hidden,
        total_frames: int, num_inference_steps: int, guidance_scale: float,
        generator: torch.Generator | None, progress: bool, motion: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Video window by window, each conditioned on the previous window's last frames."""
        window, context = int(self.net.num_frames), int(self.net.motion_frames)
        windows = max(1, math.ceil(total_frames / window))
        frames: list[torch.Tensor] = []
        for index in tqdm(range(windows), desc="video windows", unit="window", disable=not progress):
            hidden = _window_hidden(audio_hidden, index * window, window)  # (B, ceil(2.5 F), D)
            clip = self.net.generate_video(
                ref_image, face_mask, lip_mask, text_ids, text_mask, profile_wav, hidden,
                num_frames=window, motion_frames=motion, num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale, generator=generator,
            )  # (B, F, 3, H, W)
            frames.append(clip)
            motion = clip[:, -context:] if context > 0 else None
        return torch.cat(frames, dim=1)[:, :total_frames]  # (B, T, 3, H, W)


def lr_floor_step(optimizer: OptimizerCallable, scheduler: LRSchedulerCallable, total: int,
                  floor: float = None) -> int | None:
    """The first of ``total`` scheduler steps after which the rate is below ``floor`` (``None``: never).

    The partial ``optimizer`` and ``scheduler`` are replayed on one stand-in parameter, so nothing of
    the model is touched.
    """
    floor = MIN_USEFUL_LR if floor is None else floor
    stand_in = optimizer([nn.Parameter(torch.zeros(1))])
    schedule = scheduler(stand_in)
    for step in range(1, total + 1):
        stand_in.step()  # keeps the scheduler's "step before optimizer.step" check quiet
        schedule.step()
        if min(group["lr"] for group in stand_in.param_groups) < floor:
            return step
    return None


def _tokenizer_json(tokenizer: Any) -> str:
    """JSON of a HF ``tokenizers.Tokenizer`` (or of a wrapper holding one as ``.tokenizer``)."""
    inner = tokenizer if hasattr(tokenizer, "to_str") else getattr(tokenizer, "tokenizer", None)
    if inner is None or not hasattr(inner, "to_str"):
        raise TypeError(f"cannot store tokenizer of type {type(tokenizer).__name__}: expected a tokenizers.Tokenizer")
    return inner.to_str()


def _rng_states() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python RNG states, as types ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`_rng_states`."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(tuple(states["python"][:1]) + (tuple(states["python"][1]),) + tuple(states["python"][2:]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _frames_for_samples(wav_lengths: torch.Tensor) -> torch.Tensor:
    """Video frames (25 fps) that cover ``wav_lengths`` samples (16 kHz), at least one."""
    return torch.clamp((wav_lengths + SAMPLES_PER_FRAME - 1) // SAMPLES_PER_FRAME, min=1).long()


def _window_hidden(audio_hidden: torch.Tensor, first_frame: int, num_frames: int) -> torch.Tensor:
    """Decoder states (B, T_mel, D) of video frames ``first_frame`` .. + ``num_frames`` - 1.

    2.5 mel frames per video frame; a window that runs past the speech is padded with the last
    state (the face keeps its final mouth shape rather than attending to zeros).
    """
    start = math.floor(first_frame * MEL_FRAMES_PER_VIDEO_FRAME)
    length = math.ceil(num_frames * MEL_FRAMES_PER_VIDEO_FRAME)
    part = audio_hidden[:, start : start + length]  # (B, <= length, D)
    if part.shape[1] < length:
        if audio_hidden.shape[1]:
            fill = audio_hidden[:, -1:]  # (B, 1, D)
        else:
            fill = audio_hidden.new_zeros(audio_hidden.shape[0], 1, audio_hidden.shape[2])
        part = torch.cat([part, fill.expand(-1, length - part.shape[1], -1)], dim=1)
    return part  # (B, length, D)


__all__: list[str] = ["LOSS_TERMS", "MIN_USEFUL_LR", "NFYLitModule", "lr_floor_step"]
