"""Sampling of the NFY model: speech, then the talking-face video window by window (paper Sec. 3).

:class:`NFYPipeline` holds the network and a sampling scheduler and owns every generation loop, in
the idiom of diffusers' pipelines (``DiTPipeline``: modules plus a scheduler, an explicit denoising
and guidance loop). The network (:class:`~lightning_modules.networks.NFYNetwork`) only computes;
the LightningModule only trains. ``experiments.generate``, the sample/metric callbacks (through
``NFYLitModule.generate_batch``) and the benchmarks all sample through this class.

One utterance, as :meth:`NFYPipeline.__call__` runs it::

    conditions -> speech decoder, autoregressive until the stop head fires -> mel (B, 80, T)
               -> vocoder -> wav (B, 256 T) at 16 kHz
    for each window of F frames (2.5 decoder states per frame, the previous window's last M frames
    as motion context): DDIM from Gaussian noise, classifier-free guidance on the cross-attention
    tokens -> frames (B, F, 3, H, W)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from diffusers import DDIMScheduler
from tqdm.auto import tqdm

from datamodules.conventions import (
    HOP_LENGTH,
    MEL_FRAMES_PER_VIDEO_FRAME,
    MEL_PAD_VALUE,
    SAMPLES_PER_FRAME,
)
from lightning_modules.diffusion import sampling_scheduler

NETWORK_INTERFACE: tuple[str, ...] = (
    "encode_conditions", "generate_mel", "vocoder", "audio_windows", "motion_latents", "denoiser_inputs",
    "denoise", "decode_diffused", "image_size", "num_frames", "motion_frames", "latent_size",
)
"""What the pipeline uses of a network (:class:`NFYNetwork` has it all; test stand-ins mimic it)."""


class NFYPipeline:
    """Text + face photo + voice profile -> speech and a talking-face video.

    Args:
        network: an :class:`~lightning_modules.networks.NFYNetwork` (or anything with
            :data:`NETWORK_INTERFACE`); it is put in eval mode for each call and restored afterwards.
        scheduler: the sampler, a diffusers ``DDIMScheduler`` on the noise schedule the network was
            trained with (:meth:`from_training_scheduler` builds it).

    Raises:
        ValueError: ``network`` lacking part of :data:`NETWORK_INTERFACE`.
    """

    def __init__(self, network: torch.nn.Module, scheduler: DDIMScheduler) -> None:
        missing = [name for name in NETWORK_INTERFACE if not hasattr(network, name)]
        if missing:
            raise ValueError(f"network ({type(network).__name__}) lacks {missing} of the NFYNetwork interface")
        self.network, self.scheduler = network, scheduler

    @classmethod
    def from_training_scheduler(cls, network: torch.nn.Module, train_scheduler: Any) -> NFYPipeline:
        """The pipeline with a DDIM sampler on ``train_scheduler``'s noise schedule (``diffusion.sampling_scheduler``)."""
        return cls(network, sampling_scheduler(train_scheduler))

    # ------------------------------------------------------------------ one utterance
    @torch.no_grad()
    def __call__(
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
        max_mel_frames: int = 625,
    ) -> dict[str, torch.Tensor]:
        """Speech first (autoregressive until the stop head fires, then the vocoder), then video.

        Args:
            text_ids: (B, L) int64 token ids; ``text_mask`` (B, L) bool.
            ref_image: (B, 3, H, W) float in [-1, 1], the face photo.
            face_mask: (B, 1, H, W) float {0, 1}; ``lip_mask`` likewise.
            profile_wav: (B, 32000) float in [-1, 1], 2 s of the target voice at 16 kHz.
            num_inference_steps: DDIM steps per video window.
            guidance_scale: classifier-free guidance scale (1 = off).
            generator: seeds the diffusion noise.
            progress: show a tqdm bar over video windows.
            motion_frames: (B, M, 3, H, W) in [-1, 1], the last frames of a preceding clip the
                first window continues (``None``: start from the reference image).
            max_frames: generate at most this many video frames, e.g. the ones a metric scores
                (``None``: every frame the speech covers).
            max_mel_frames: cap on autoregressive mel frames (62.5 per second).

        Returns:
            ``video`` (B, T, 3, H, W) float in [0, 1], T = ceil(longest speech / 640 samples)
            (at most ``max_frames``);
            ``wav`` (B, S) float in [-1, 1]; ``wav_lengths`` (B,); ``mel`` (B, 80, T_mel);
            ``mel_lengths`` (B,); ``num_frames`` (B,) int64 frames covering each row's speech.

        Raises:
            ValueError: ``max_frames`` below 1.
        """
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
        conditions = (ref_image, face_mask, lip_mask, text_ids, text_mask, profile_wav)
        with _eval(self.network):
            speech = self.speech(text_ids, text_mask, ref_image, face_mask, lip_mask, profile_wav, max_mel_frames)
            num_frames = frames_for_samples(speech["wav_lengths"])  # (B,)
            total = int(num_frames.max()) if max_frames is None else min(int(num_frames.max()), max_frames)
            video = self.video(*conditions, speech["audio_hidden"], total, num_inference_steps, guidance_scale,
                               generator, progress, motion_frames)  # (B, T, 3, H, W) in [-1, 1]
        return {
            "video": ((video + 1.0) / 2.0).clamp(0.0, 1.0),
            "wav": speech["wav"].clamp(-1.0, 1.0),
            "wav_lengths": speech["wav_lengths"],
            "mel": speech["mel"],
            "mel_lengths": speech["mel_lengths"],
            "num_frames": num_frames,
        }

    # ------------------------------------------------------------------ speech
    @torch.no_grad()
    def speech(self, text_ids: torch.Tensor, text_mask: torch.Tensor, ref_image: torch.Tensor,
               face_mask: torch.Tensor, lip_mask: torch.Tensor, profile_wav: torch.Tensor,
               max_mel_frames: int = 625) -> dict[str, torch.Tensor]:
        """Autoregressive speech until the stop head fires (or ``max_mel_frames``), then the vocoder.

        Returns:
            ``mel`` (B, 80, T) (pad value after each length), ``mel_lengths`` (B,), ``wav`` (B, 256 T)
            16 kHz in [-1, 1] (0 after each length), ``wav_lengths`` (B,), ``audio_hidden`` (B, T, W).

        Raises:
            ValueError: ``max_mel_frames`` below 1.
        """
        if max_mel_frames < 1:
            raise ValueError(f"max_mel_frames must be >= 1, got {max_mel_frames}")
        net = self.network
        cond = net.encode_conditions(text_ids, text_mask, ref_image, face_mask, lip_mask, profile_wav)
        out = net.generate_mel(cond, max_mel_frames)
        valid = torch.arange(out["mel"].shape[2], device=text_ids.device)[None] < out["lengths"][:, None]  # (B, T)
        mel = torch.where(valid[:, None], out["mel"], torch.full_like(out["mel"], MEL_PAD_VALUE))
        wav = net.vocoder(mel)  # (B, 256 T)
        wav_lengths = out["lengths"] * HOP_LENGTH
        wav = wav * (torch.arange(wav.shape[1], device=wav.device)[None] < wav_lengths[:, None])
        return {"mel": mel, "mel_lengths": out["lengths"], "wav": wav, "wav_lengths": wav_lengths,
                "audio_hidden": out["hidden"]}

    # ------------------------------------------------------------------ video
    @torch.no_grad()
    def video(self, ref_image: torch.Tensor, face_mask: torch.Tensor, lip_mask: torch.Tensor,
              text_ids: torch.Tensor, text_mask: torch.Tensor, profile_wav: torch.Tensor,
              audio_hidden: torch.Tensor, total_frames: int, num_inference_steps: int = 25,
              guidance_scale: float = 1.0, generator: torch.Generator | None = None, progress: bool = False,
              motion_frames: torch.Tensor | None = None) -> torch.Tensor:
        """``total_frames`` frames window by window, each conditioned on the previous window's last frames.

        Args:
            audio_hidden: (B, T, W) decoder states of the whole utterance (2.5 per video frame).
            motion_frames: (B, M, 3, H, W) in [-1, 1] before the first window, or ``None``.

        Returns:
            (B, total_frames, 3, H, W) in [-1, 1].
        """
        window, context = int(self.network.num_frames), int(self.network.motion_frames)
        conditions = (ref_image, face_mask, lip_mask, text_ids, text_mask, profile_wav)
        motion = motion_frames
        frames: list[torch.Tensor] = []
        for index in tqdm(range(max(1, math.ceil(total_frames / window))), desc="video windows", unit="window",
                          disable=not progress):
            hidden = window_states(audio_hidden, index * window, window)  # (B, ceil(2.5 F), W)
            clip = self.video_window(*conditions, hidden, num_frames=window, motion_frames=motion,
                                     num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                     generator=generator)  # (B, F, 3, H, W)
            frames.append(clip)
            motion = clip[:, -context:] if context > 0 else None
        return torch.cat(frames, dim=1)[:, :total_frames]  # (B, T, 3, H, W)

    @torch.no_grad()
    def video_window(self, ref_image: torch.Tensor, face_mask: torch.Tensor, lip_mask: torch.Tensor,
                     text_ids: torch.Tensor, text_mask: torch.Tensor, profile_wav: torch.Tensor,
                     audio_hidden: torch.Tensor, num_frames: int, motion_frames: torch.Tensor | None = None,
                     num_inference_steps: int = 25, guidance_scale: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """One window of ``num_frames`` frames by DDIM, conditioned on the previous window's last frames.

        Args:
            audio_hidden: (B, >= 1, W) decoder states of this window's time span (2.5 per frame, the
                window starting at index 0); shorter spans repeat their last state.
            motion_frames: (B, M, 3, H, W) in [-1, 1], or ``None`` at the start of a clip.
            guidance_scale: classifier-free guidance on the cross-attention tokens (1 = off).

        Returns:
            (B, num_frames, 3, H, W) in [-1, 1].

        Raises:
            ValueError: ``num_inference_steps`` or ``num_frames`` below 1.
        """
        if num_inference_steps < 1 or num_frames < 1:
            raise ValueError(f"num_inference_steps and num_frames must be >= 1, got {num_inference_steps}, {num_frames}")
        net = self.network
        b, device = ref_image.shape[0], ref_image.device
        # 1. Conditions: tokens, the reference and motion latents, the audio windows (DC)
        cond = net.encode_conditions(text_ids, text_mask, ref_image, face_mask, lip_mask, profile_wav)
        windows = net.audio_windows(audio_hidden, torch.zeros(b, dtype=torch.long, device=device), num_frames)
        maps, cross = net.denoiser_inputs(cond, net.motion_latents(motion_frames, ref_image), windows, num_frames)
        # 2. DDIM from Gaussian noise
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        shape = (b, 4, num_frames, net.latent_size, net.latent_size)
        latents = torch.randn(shape, generator=generator, device=device) * self.scheduler.init_noise_sigma
        for t in self.scheduler.timesteps:
            pred = self._guided(latents, t, maps, cross, guidance_scale)
            latents = self.scheduler.step(pred, t, latents).prev_sample
        # 3. Latents -> frames
        return net.decode_diffused(latents, cond["ref_latent"], ref_image).clamp(-1, 1)  # (B, F, 3, H, W)

    def _guided(self, latents: torch.Tensor, t: torch.Tensor, maps: torch.Tensor, cross: dict,
                scale: float) -> torch.Tensor:
        """Classifier-free guidance: the unconditional branch sees zeroed cross-attention tokens, as the
        ``guidance_dropout`` rows of training do."""
        cond = self.network.denoise(latents, t, maps, cross)
        if scale == 1.0 or cross["tokens"].shape[1] == 0:
            return cond
        uncond = self.network.denoise(latents, t, maps, {**cross, "tokens": torch.zeros_like(cross["tokens"])})
        return uncond + scale * (cond - uncond)


class _eval:
    """Context manager: ``module`` in eval mode inside, its previous mode restored after."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.was_training = module, module.training

    def __enter__(self) -> None:
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        self.module.train(self.was_training)


def frames_for_samples(wav_lengths: torch.Tensor) -> torch.Tensor:
    """Video frames (25 fps) that cover ``wav_lengths`` samples (16 kHz), at least one."""
    return torch.clamp((wav_lengths + SAMPLES_PER_FRAME - 1) // SAMPLES_PER_FRAME, min=1).long()


def window_states(audio_hidden: torch.Tensor, first_frame: int, num_frames: int) -> torch.Tensor:
    """Decoder states (B, T_mel, W) of video frames ``first_frame`` .. + ``num_frames`` - 1.

    2.5 mel frames per video frame; a window that runs past the speech is padded with the last
    state (the face keeps its final mouth shape rather than attending to zeros).

    Returns:
        (B, ceil(2.5 num_frames), W).
    """
    start = math.floor(first_frame * MEL_FRAMES_PER_VIDEO_FRAME)
    length = math.ceil(num_frames * MEL_FRAMES_PER_VIDEO_FRAME)
    part = audio_hidden[:, start : start + length]  # (B, <= length, W)
    if part.shape[1] < length:
        if audio_hidden.shape[1]:
            fill = audio_hidden[:, -1:]  # (B, 1, W)
        else:
            fill = audio_hidden.new_zeros(audio_hidden.shape[0], 1, audio_hidden.shape[2])
        part = torch.cat([part, fill.expand(-1, length - part.shape[1], -1)], dim=1)
    return part  # (B, length, W)


__all__ = ["NETWORK_INTERFACE", "NFYPipeline", "frames_for_samples", "window_states"]
