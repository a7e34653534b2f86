"""Training logic of the NFY model (paper Sec. 3.4 and 4.1) around an injected :class:`NFYNetwork`.

The network (``lightning_modules/networks/nfy.py``) only computes; this module owns the training
objective of one teacher-forced pass (the diffusion noise and timesteps from the injected DDPM
scheduler, guidance dropout, every loss term), weights the terms, logs each on its own and owns the
optimiser and the LR schedule. Sampling is :class:`lightning_modules.pipeline.NFYPipeline`'s
(:meth:`NFYLitModule.pipeline`, :meth:`NFYLitModule.generate_batch`).

Loss (Sec. 3.4 plus the two terms a diffusion model and a stop head need)::

    L = w_video * L1(frames) + w_audio * MSE(mel) + w_denoise * L_denoise + w_stop * BCE(stop)

with the paper's L_video + 0.1 * L_audio as the defaults of the first two weights. A trainable VAE
adds its own reconstruction L1 to the pixel term (``vae_recon``, also logged on its own). Two
switches, off in the paper's configuration: ``mouth_loss_weight`` weights the lip-mask pixels (and
latents) in the video terms; the speech decoder's alignment aid adds ``w_duration * duration``, the
squared log error of the predicted utterance length.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric

from datamodules.batch import NFYBatch, validate_batch
from datamodules.conventions import MEL_FRAMES_PER_VIDEO_FRAME, N_MELS
from lightning_modules.diffusion import PREDICTION_TYPES, training_scheduler
from lightning_modules.generation_requests import GenerationRequests
from lightning_modules.pipeline import NETWORK_INTERFACE, NFYPipeline

log = logging.getLogger(__name__)

LOSS_TERMS: tuple[str, ...] = ("video_l1", "audio_mse", "denoise", "stop")
"""Unweighted loss terms :meth:`NFYLitModule.forward` returns."""
OPTIONAL_TERMS: tuple[str, ...] = ("duration",)
"""Terms returned only with a switch on (``duration``: the speech decoder's alignment aid)."""
STAGES: tuple[str, ...] = ("train", "val", "test")
OBJECTIVE_INTERFACE: tuple[str, ...] = (
    "encode_conditions", "decode_speech", "audio_windows", "encode_frames", "diffusion_target", "motion_latents",
    "denoiser_inputs", "denoise", "decode_diffused", "decode_latents", "trains_vae", "motion_frames",
)
"""What the training objective uses of a network, besides the pipeline's ``NETWORK_INTERFACE``."""
MIN_USEFUL_LR: float = 1e-7
"""Below this rate an AdamW step changes fp32 weights of order 1e-2 by less than their rounding."""


class NFYLitModule(GenerationRequests, LightningModule):
    """The training objective of the NFY network; weights, logs and optimises it; samples through the pipeline.

    Args:
        net: the network (``lightning_modules.networks.NFYNetwork`` or anything with its compute
            interface: :data:`OBJECTIVE_INTERFACE` and ``pipeline.NETWORK_INTERFACE``).
        optimizer: partial optimiser, called with the trainable parameters (AdamW by default).
        scheduler: partial LR scheduler, called with the optimiser; stepped every ``scheduler_interval``.
            ``None`` keeps the LR constant. When fitting starts, a warning says if the schedule takes the
            rate below ``MIN_USEFUL_LR`` before training ends.
        train_scheduler: the diffusion noise schedule of training, a diffusers ``DDPMScheduler``
            (``class_path: diffusers.DDPMScheduler`` in the configs); its ``prediction_type`` says what the
            denoiser predicts: the noise (``"epsilon"``), the velocity (``"v_prediction"``) or the clean
            latent (``"sample"``). ``None``: ``diffusion.training_scheduler()`` (SD-1.5's, epsilon). Sampling
            uses DDIM on the same schedule.
        video_weight: weight of the pixel L1 between decoded x0 estimate and ground truth frames.
        audio_weight: weight of the mel MSE (0.1 in the paper).
        denoise_weight: weight of the diffusion denoising objective.
        stop_weight: weight of the stop-head binary cross-entropy.
        stop_pos_weight: weight of the one positive (last) frame per utterance in the stop-head BCE
            (ESPnet's TTS decoders use 5), against the class imbalance of one stop in hundreds of frames.
        guidance_dropout: probability that a training row's cross-attention tokens are zeroed, so that the
            unconditional branch of classifier-free guidance is learned.
        duration_weight: weight of the predicted length's squared log error (the speech decoder's
            ``alignment_aid`` only).
        mouth_loss_weight: extra weight w of the lip-mask pixels in the pixel L1 and the VAE's
            reconstruction, and of the lip-mask latents in the denoising loss (1 + w there, 1 elsewhere,
            normalised); 0 = the paper's unweighted losses. The mouth is about 3 % of a face crop, so an
            unweighted loss barely sees it (Wav2Lip: under 4 % of the reconstruction loss).
        pixel_loss_frames: frames per window whose x0 estimate is decoded for the pixel L1 (and the VAE's
            reconstruction term): ``None`` all of them; k picks k frames at random per row, which bounds the
            VAE decoder's activation memory at large image sizes.
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
        ValueError: a bad loss weight or option (named), or ``net`` lacking part of the interface.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        train_scheduler: DDPMScheduler | None = None,
        video_weight: float = 1.0,
        audio_weight: float = 0.1,
        denoise_weight: float = 1.0,
        stop_weight: float = 1.0,
        duration_weight: float = 1.0,
        mouth_loss_weight: float = 0.0,
        stop_pos_weight: float = 5.0,
        guidance_dropout: float = 0.1,
        pixel_loss_frames: int | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        max_mel_frames: int = 625,
        mel_statistics_batches: int = 8,
        scheduler_interval: str = "step",
    ) -> None:
        super().__init__()
        weights = {"video_l1": video_weight, "audio_mse": audio_weight, "denoise": denoise_weight, "stop": stop_weight,
                   "duration": duration_weight, "mouth_loss_weight": mouth_loss_weight}
        for name, value in weights.items():
            if value < 0:
                raise ValueError(f"loss weight for {name!r} must be >= 0, got {value}")
        missing = [attr for attr in (*OBJECTIVE_INTERFACE, *NETWORK_INTERFACE) if not hasattr(net, attr)]
        if missing:
            raise ValueError(f"net ({type(net).__name__}) lacks {sorted(set(missing))} of the NFYNetwork interface")
        train_scheduler = training_scheduler() if train_scheduler is None else train_scheduler
        _check_objective(train_scheduler, stop_pos_weight, guidance_dropout, pixel_loss_frames)
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        if mel_statistics_batches < 0:
            raise ValueError(f"mel_statistics_batches must be >= 0, got {mel_statistics_batches}")
        if num_inference_steps < 1 or max_mel_frames < 1:
            raise ValueError(
                f"num_inference_steps and max_mel_frames must be >= 1, got {num_inference_steps}, {max_mel_frames}"
            )
        # Under LightningCLI the hyperparameters are the parsed class_path configs (of the network,
        # the noise schedule and the optimiser too), so load_from_checkpoint rebuilds everything.
        # Built by hand, the network is an object whose weights the checkpoint holds anyway, and the
        # optimiser partials may be lambdas that cannot be pickled: keep only the primitive arguments.
        by_cli = _given_hyperparameters.get() is not None
        self.save_hyperparameters(ignore=[] if by_cli else ["net", "optimizer", "scheduler", "train_scheduler"])
        self.net = net
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_scheduler = train_scheduler
        self.mouth_loss_weight = weights.pop("mouth_loss_weight")
        self.loss_weights = weights
        self.stop_pos_weight, self.guidance_dropout = stop_pos_weight, guidance_dropout
        self.pixel_loss_frames = pixel_loss_frames
        self._batch_checked = False
        self.tokenizer: Any = None  # from the DataModule (setup) or the checkpoint; used by generation
        # One MeanMetric per stage and term (plus the weighted total): epoch means sync over DDP.
        # (ModuleDict keys "train"/"val" would clash with nn.Module.train, hence "train_loss" ...)
        self.losses = nn.ModuleDict(
            {f"{stage}_{name}": MeanMetric() for stage in STAGES for name in (*LOSS_TERMS, *OPTIONAL_TERMS, "loss")}
        )

    # ------------------------------------------------------------------ objective
    def forward(self, batch: NFYBatch) -> dict[str, torch.Tensor]:
        """The training objective of one batch: a teacher-forced pass and its unweighted loss terms.

        The random draws come in a fixed order (pre-net dropout, guidance dropout, noise, timesteps, the
        pixel-loss frames) from the global RNG, so that a seeded run and a resumed one are reproducible.

        Returns:
            ``video_l1`` (pixel L1 of the decoded one-step x0 estimate), ``audio_mse`` (mel MSE over valid
            frames), ``denoise`` (noise / v / x0 MSE), ``stop`` (stop-head BCE), and ``pred_frames``
            (B, F', 3, H, W) in [-1, 1] (F' = ``pixel_loss_frames`` or F), ``pred_mel`` (B, 80, T),
            ``audio_hidden`` (B, T, W). With a trainable VAE, ``vae_recon`` (L1 of the VAE's own
            reconstruction of the target frames) too, already included in ``video_l1``.

        Raises:
            ValueError: ``batch["video"]`` without a frame after the motion frames.
        """
        net, m = self.net, int(self.net.motion_frames)
        f = batch["video"].shape[1] - m
        if f < 1:
            raise ValueError(f"batch['video'] has {batch['video'].shape[1]} frames, need motion_frames={m} + >= 1")
        cond = net.encode_conditions(batch["text_ids"], batch["text_mask"], batch["ref_image"], batch["face_mask"],
                                     batch["lip_mask"], batch["profile_wav"])
        out = self._speech_losses(net.decode_speech(cond, batch["mel"], batch["mel_lengths"]), batch["mel"],
                                  batch["mel_lengths"])
        first_mel = torch.floor((batch["frame_start"] + m).clamp(min=0) * MEL_FRAMES_PER_VIDEO_FRAME).long()
        windows = net.audio_windows(out["audio_hidden"], first_mel, f, batch["mel_lengths"])
        return {**out, **self._video_losses(cond, batch["video"], batch["ref_image"], windows, batch["lip_mask"])}

    def _speech_losses(self, speech: dict[str, torch.Tensor], mel: torch.Tensor,
                       lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mel MSE and stop BCE over each row's valid frames, from :meth:`NFYNetwork.decode_speech`."""
        valid = torch.arange(mel.shape[2], device=mel.device)[None] < lengths[:, None]  # (B, T)
        squared = ((speech["mel"] - mel) ** 2).mean(1)  # (B, T)
        audio_mse = (squared * valid).sum() / valid.sum().clamp(min=1)
        stop_target = (torch.arange(mel.shape[2], device=mel.device)[None] == lengths[:, None] - 1).float()
        pos_weight = speech["stop_logits"].new_tensor(self.stop_pos_weight)
        bce = nn.functional.binary_cross_entropy_with_logits(speech["stop_logits"], stop_target, reduction="none",
                                                             pos_weight=pos_weight)
        stop = (bce * valid).sum() / valid.sum().clamp(min=1)
        out = {"audio_mse": audio_mse, "stop": stop, "pred_mel": speech["mel"], "audio_hidden": speech["hidden"]}
        if "log_duration" in speech:  # the alignment aid's length prediction
            out["duration"] = ((speech["log_duration"] - lengths.clamp(min=1).to(mel.dtype).log()) ** 2).mean()
        return out

    def _mouth_weight(self, lip: torch.Tensor) -> torch.Tensor | None:
        """(B, 1, H, W) lip mask -> loss weights 1 + ``mouth_loss_weight`` * mask, or None (unweighted)."""
        return 1 + self.mouth_loss_weight * lip if self.mouth_loss_weight > 0 else None

    @staticmethod
    def _weighted_mean(error: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """Mean of ``error`` weighted by ``weight`` (broadcast to it); the plain mean when ``weight`` is None."""
        if weight is None:
            return error.mean()
        weight = weight.expand_as(error)
        return (error * weight).sum() / weight.sum()

    def _video_losses(self, cond: dict[str, torch.Tensor], video: torch.Tensor, ref_image: torch.Tensor,
                      windows: torch.Tensor | None, lip_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Denoising loss at a random timestep per row, then the pixel losses of its one-step x0 estimate."""
        net, m, sched = self.net, int(self.net.motion_frames), self.train_scheduler
        target = video[:, m:]  # (B, F, 3, H, W)
        b, f = target.shape[:2]
        # 1. What the denoiser diffuses, and its conditions
        latents = net.encode_frames(target)  # (B, 4, F, h, w)
        diffused = net.diffusion_target(latents, cond["ref_latent"])  # (B, 4, F, h, w)
        maps, cross = net.denoiser_inputs(cond, net.motion_latents(video[:, :m], ref_image), windows, f)
        if self.training and self.guidance_dropout > 0:  # learn the unconditional branch of guidance
            keep = (torch.rand(b, device=latents.device) >= self.guidance_dropout).to(latents.dtype)  # (B,)
            cross["tokens"] = cross["tokens"] * keep.repeat_interleave(f)[:, None, None]
        # 2. Noise at a random timestep, and the denoising objective
        noise = torch.randn_like(diffused)
        t = torch.randint(0, sched.config.num_train_timesteps, (b,), device=latents.device)
        noisy = sched.add_noise(diffused, noise, t)  # (B, 4, F, h, w)
        pred = net.denoise(noisy, t, maps, cross)
        kind = sched.config.prediction_type
        if kind == "epsilon":
            goal = noise
        elif kind == "sample":
            goal = diffused
        else:
            goal = sched.get_velocity(diffused, noise, t)
        # 3. One-step x0 estimate per row (the scheduler takes one timestep per call) for the pixel losses
        x0 = torch.cat([sched.step(pred[i : i + 1], int(t[i]), noisy[i : i + 1]).pred_original_sample
                        for i in range(b)])  # (B, 4, F, h, w)
        pixel = self._pixel_losses(x0, latents, target, cond["ref_latent"], ref_image, lip_mask)
        latent_weight = None
        if self.mouth_loss_weight > 0:  # the lip mask at latent size (B, 1, h, w) -> (B, 1, 1, h, w)
            lip_latent = nn.functional.interpolate(lip_mask, size=pred.shape[-2:], mode="area")
            latent_weight = self._mouth_weight(lip_latent)[:, :, None]
        return {"denoise": self._weighted_mean((pred - goal) ** 2, latent_weight), **pixel}

    def _pixel_losses(self, x0: torch.Tensor, latents: torch.Tensor, target: torch.Tensor,
                      ref_latent: torch.Tensor, ref_image: torch.Tensor,
                      lip_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pixel L1 of the decoded x0 (B, 4, F, h, w) against ``target`` (B, F, 3, H, W), on
        ``pixel_loss_frames`` random frames per row when set (only those are decoded)."""
        b, f = target.shape[:2]
        if self.pixel_loss_frames is not None and self.pixel_loss_frames < f:
            rows = torch.arange(b, device=x0.device)[:, None]  # (B, 1)
            chosen = torch.rand(b, f, device=x0.device).argsort(dim=1)[:, : self.pixel_loss_frames]  # (B, k)
            x0 = x0.transpose(1, 2)[rows, chosen].transpose(1, 2)  # (B, 4, k, h, w)
            latents = latents.transpose(1, 2)[rows, chosen].transpose(1, 2)  # (B, 4, k, h, w)
            target = target[rows, chosen]  # (B, k, 3, H, W)
        frames = self.net.decode_diffused(x0, ref_latent, ref_image)  # (B, F', 3, H, W)
        weight = self._mouth_weight(lip_mask)  # (B, 1, H, W) or None
        weight = None if weight is None else weight[:, None]  # (B, 1, 1, H, W)
        out = {"video_l1": self._weighted_mean((frames - target).abs(), weight), "pred_frames": frames.clamp(-1, 1)}
        if self.net.trains_vae:
            # A fine-tuned (or random) VAE also learns to reconstruct, or its latent space could collapse
            # into one the denoiser finds trivial; the term joins the pixel loss and is logged on its own.
            out["vae_recon"] = self._weighted_mean((self.net.decode_latents(latents) - target).abs(), weight)
            out["video_l1"] = out["video_l1"] + out["vae_recon"]
        return out

    # ------------------------------------------------------------------ training
    def _step(self, batch: NFYBatch, stage: str) -> dict[str, torch.Tensor]:
        """Shared by every stage: forward, weight the terms, log each term and the total."""
        if not self._batch_checked:
            validate_batch(batch)  # cheap, once: a DataModule breaking the contract fails at step 0
            self._batch_checked = True
        out = self(batch)
        terms = [*LOSS_TERMS, *(name for name in OPTIONAL_TERMS if name in out)]
        loss = sum(self.loss_weights[name] * out[name] for name in terms)
        batch_size = batch["text_ids"].shape[0]
        values = {**{name: out[name] for name in terms}, "loss": loss}
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
        terms = [*LOSS_TERMS, *(name for name in OPTIONAL_TERMS if name in out)]
        return {"loss": out["loss"], **{name: out[name].detach() for name in terms}}

    def validation_step(self, batch: NFYBatch, batch_idx: int) -> dict[str, Any] | None:
        """Log the validation loss terms; generate what callbacks requested for this batch
        (:mod:`lightning_modules.generation_requests`) and return it under ``"generated"``."""
        self._step(batch, "val")
        served = self.serve_generation_requests(batch)
        return {"generated": served} if served else None

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
        """Store the RNG states, the tokenizer (as JSON) and the pretrained parts' architectures.

        The RNG states make diffusion noise, timesteps and shuffling resume where they were;
        generation needs the exact vocabulary the model was trained on. The architectures (the
        network's ``pretrained_architectures``: class and config of each hub part) let
        ``experiments.generate`` rebuild those parts without the hub; their weights are in the
        state dict like every other weight.
        """
        checkpoint["nfy_rng_states"] = _rng_states()
        checkpoint["nfy_pretrained_architectures"] = getattr(self.net, "pretrained_architectures", {})
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
    def pipeline(self) -> NFYPipeline:
        """The sampling pipeline of this model: its network and DDIM on the training noise schedule."""
        return NFYPipeline.from_training_scheduler(self.net, self.train_scheduler)

    @torch.no_grad()
    def generate_batch(self, batch: NFYBatch, max_frames: int | None = None, mel_frames: torch.Tensor | None = None,
                       seed: int | None = None) -> dict[str, torch.Tensor]:
        """Generate speech and video for the conditioning of ``batch`` (used by the callbacks).

        Args:
            batch: a batch of the contract (only its conditioning is read).
            max_frames: generate at most this many video frames (all the speech covers when ``None``).
            mel_frames: (B,) speak exactly this many mel frames per row (``None``: until the stop head fires).
            seed: every row's randomness from its own generator with this seed (``None``: the global RNG).

        Returns:
            What :meth:`NFYPipeline.__call__` returns: ``video`` (B, T, 3, H, W) float in [0, 1] at
            25 fps, ``wav`` (B, S) float at 16 kHz, ``wav_lengths`` (B,), ``mel`` (B, 80, T_mel) ...
        """
        return self.pipeline()(
            batch["text_ids"], batch["text_mask"], batch["ref_image"], batch["face_mask"], batch["lip_mask"],
            batch["profile_wav"], num_inference_steps=self.hparams.num_inference_steps,
            guidance_scale=self.hparams.guidance_scale, max_frames=max_frames,
            max_mel_frames=self.hparams.max_mel_frames, mel_frames=mel_frames,
            generator=None if seed is None else [torch.Generator(device=self.device).manual_seed(seed)
                                                 for _ in range(batch["text_ids"].shape[0])],
        )


def _check_objective(train_scheduler: Any, stop_pos_weight: float, guidance_dropout: float,
                     pixel_loss_frames: int | None) -> None:
    """Raise a ValueError naming the first objective option out of range."""
    kind = getattr(getattr(train_scheduler, "config", None), "prediction_type", None)
    if not hasattr(train_scheduler, "add_noise") or kind not in PREDICTION_TYPES:
        raise ValueError(f"train_scheduler must be a diffusers DDPMScheduler with prediction_type in "
                         f"{PREDICTION_TYPES}, got {type(train_scheduler).__name__} with {kind!r}")
    if stop_pos_weight <= 0:
        raise ValueError(f"stop_pos_weight must be > 0, got {stop_pos_weight}")
    if not 0.0 <= guidance_dropout < 1.0:
        raise ValueError(f"guidance_dropout must lie in [0, 1), got {guidance_dropout}")
    if pixel_loss_frames is not None and pixel_loss_frames < 1:
        raise ValueError(f"pixel_loss_frames must be >= 1 or None, got {pixel_loss_frames}")


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


__all__: list[str] = ["LOSS_TERMS", "MIN_USEFUL_LR", "OBJECTIVE_INTERFACE", "OPTIONAL_TERMS", "NFYLitModule",
                      "lr_floor_step"]
