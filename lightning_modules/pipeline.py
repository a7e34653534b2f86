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

Speed and memory (each a keyword of the constructor, defaults in brackets): the conditions are
encoded once per clip and shared by the speech step and every window; both guidance branches run
as one denoiser call on a doubled batch (``batched_guidance`` [on]); the VAE decodes
``decode_slice`` frames at a time [4], so the decoder's peak memory does not grow with the window;
``dtype`` [float32] runs the networks under autocast (``torch.bfloat16`` on CUDA, or on CPU), the
sampler's arithmetic and the vocoder staying in float32; ``compile`` [off] wraps the denoiser in
``torch.compile``; :meth:`NFYPipeline.from_training_scheduler` picks the sampler by name (``"ddim"``,
or ``"dpm++"``: DPM-Solver++ in about 10 steps instead of 25).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any, Callable

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor
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
DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)
"""What ``dtype`` may be: float32 runs as is, the others under autocast."""
DECODE_SLICE: int = 4
"""Frames the VAE decodes at a time by default: 4 frames of 512 x 512 in bf16 need about 2 GiB."""


class NFYPipeline:
    """Text + face photo + voice profile -> speech and a talking-face video.

    Args:
        network: an :class:`~lightning_modules.networks.NFYNetwork` (or anything with
            :data:`NETWORK_INTERFACE`); it is put in eval mode for each call and restored afterwards.
        scheduler: the sampler, a diffusers ``DDIMScheduler`` (or ``DPMSolverMultistepScheduler``) on
            the noise schedule the network was trained with (:meth:`from_training_scheduler` builds it).
        dtype: ``torch.float32`` runs the networks as they are; ``torch.bfloat16`` (or ``float16``)
            under ``torch.autocast`` on the inputs' device (CUDA; CPU too, slower there). Latents, the
            sampler's steps, the vocoder and the outputs stay float32.
        batched_guidance: run the conditional and unconditional branches of classifier-free guidance
            as one denoiser call on a batch of 2 B (same numbers up to rounding, half the calls).
        decode_slice: frames the VAE decodes at a time (``None``: the whole window at once); the
            result is the same, the decoder's peak memory scales with the slice instead of the window.
            With ``reference_residual`` each slice also decodes the reference latent once.
        compile: wrap the network's ``denoise`` in ``torch.compile`` (the network itself is unchanged;
            the first window pays the compilation).

    Raises:
        ValueError: ``network`` lacking part of :data:`NETWORK_INTERFACE`; ``dtype`` not in
            :data:`DTYPES`; ``decode_slice`` below 1.
    """

    def __init__(self, network: torch.nn.Module, scheduler: DDIMScheduler | DPMSolverMultistepScheduler, *,
                 dtype: torch.dtype = torch.float32, batched_guidance: bool = True,
                 decode_slice: int | None = DECODE_SLICE, compile: bool = False) -> None:
        missing = [name for name in NETWORK_INTERFACE if not hasattr(network, name)]
        if missing:
            raise ValueError(f"network ({type(network).__name__}) lacks {missing} of the NFYNetwork interface")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if decode_slice is not None and decode_slice < 1:
            raise ValueError(f"decode_slice must be >= 1 or None, got {decode_slice}")
        self.network, self.scheduler = network, scheduler
        self.dtype, self.batched_guidance, self.decode_slice = dtype, batched_guidance, decode_slice
        self.compiled = compile
        self._compiled_denoise: Callable[..., torch.Tensor] | None = torch.compile(network.denoise) if compile else None

    def _denoise(self, *args: Any) -> torch.Tensor:
        """The network's ``denoise``, compiled with ``compile``."""
        return (self._compiled_denoise or self.network.denoise)(*args)

    @classmethod
    def from_training_scheduler(cls, network: torch.nn.Module, train_scheduler: Any, sampler: str = "ddim",
                                **options: Any) -> NFYPipeline:
        """The pipeline with a ``sampler`` (``"ddim"`` or ``"dpm++"``) on ``train_scheduler``'s noise schedule
        (:func:`~lightning_modules.diffusion.sampling_scheduler`); ``options`` are the constructor's keywords."""
        return cls(network, sampling_scheduler(train_scheduler, sampler), **options)

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Autocast to :attr:`dtype` on ``device`` (nothing in float32)."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

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
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        progress: bool = False,
        motion_frames: torch.Tensor | None = None,
        max_frames: int | None = None,
        max_mel_frames: int = 625,
        mel_frames: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Speech first (autoregressive until the stop head fires, then the vocoder), then video.

        Args:
            text_ids: (B, L) int64 token ids; ``text_mask`` (B, L) bool.
            ref_image: (B, 3, H, W) float in [-1, 1], the face photo.
            face_mask: (B, 1, H, W) float {0, 1}; ``lip_mask`` likewise.
            profile_wav: (B, 32000) float in [-1, 1], 2 s of the target voice at 16 kHz.
            num_inference_steps: DDIM steps per video window.
            guidance_scale: classifier-free guidance scale (1 = off).
            generator: seeds the randomness: the diffusion noise, and the pre-net dropout where the
                network keeps it on when generating. A list of B generators gives each row its own
                streams, so that a row comes out as its clip generated alone with that generator
                (whatever the other rows' texts and lengths); one generator serves the whole batch
                (a row then depends on its place). ``None``: the global RNG.
            progress: show a tqdm bar over video windows.
            motion_frames: (B, M, 3, H, W) in [-1, 1], the last frames of a preceding clip the
                first window continues (``None``: start from the reference image).
            max_frames: generate at most this many video frames, e.g. the ones a metric scores
                (``None``: every frame the speech covers).
            max_mel_frames: cap on autoregressive mel frames (62.5 per second).
            mel_frames: (B,) int >= 1: speak exactly this many mel frames per row (a given duration;
                the stop head is not consulted and ``max_mel_frames`` does not cap them; the
                decoder's positions still do). ``None``: until the stop head fires.

        Returns:
            ``video`` (B, T, 3, H, W) float in [0, 1], T = ceil(longest speech / 640 samples)
            (at most ``max_frames``);
            ``wav`` (B, S) float in [-1, 1]; ``wav_lengths`` (B,); ``mel`` (B, 80, T_mel);
            ``mel_lengths`` (B,); ``num_frames`` (B,) int64 frames covering each row's speech.

        Raises:
            ValueError: ``max_frames`` below 1; ``mel_frames`` not (B,) or below 1; a list of generators
                not one per row.
        """
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
        _check_mel_frames(max_mel_frames)
        _check_targets(mel_frames, ref_image.shape[0])
        speech_rng, noise_rng = _streams(generator, ref_image.shape[0])
        conditions = (ref_image, face_mask, lip_mask, text_ids, text_mask, profile_wav)
        with _eval(self.network):
            with self._autocast(ref_image.device):  # once per clip: the speech step and every window share them
                cond = self.network.encode_conditions(text_ids, text_mask, ref_image, face_mask, lip_mask, profile_wav)
            speech = self._speech(cond, max_mel_frames, text_ids.device, mel_frames, speech_rng)
            num_frames = frames_for_samples(speech["wav_lengths"])  # (B,)
            total = int(num_frames.max()) if max_frames is None else min(int(num_frames.max()), max_frames)
            video = self.video(*conditions, speech["audio_hidden"], total, num_inference_steps, guidance_scale,
                               noise_rng, progress, motion_frames, conditions=cond)  # (B, T, 3, H, W) in [-1, 1]
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
               max_mel_frames: int = 625, mel_frames: torch.Tensor | None = None,
               generator: torch.Generator | Sequence[torch.Generator] | None = None) -> dict[str, torch.Tensor]:
        """Autoregressive speech until the stop head fires (or ``max_mel_frames``), then the vocoder;
        ``mel_frames`` and ``generator`` as in :meth:`__call__`.

        Returns:
            ``mel`` (B, 80, T) (pad value after each length), ``mel_lengths`` (B,), ``wav`` (B, 256 T)
            16 kHz in [-1, 1] (0 after each length), ``wav_lengths`` (B,), ``audio_hidden`` (B, T, W) (each
            row's last state held after its length).

        Raises:
            ValueError: ``max_mel_frames`` below 1; bad ``mel_frames`` or ``generator`` list.
        """
        _check_mel_frames(max_mel_frames)
        _check_targets(mel_frames, ref_image.shape[0])
        with self._autocast(ref_image.device):
            cond = self.network.encode_conditions(text_ids, text_mask, ref_image, face_mask, lip_mask, profile_wav)
        return self._speech(cond, max_mel_frames, text_ids.device, mel_frames,
                            _streams(generator, ref_image.shape[0])[0])

    def _speech(self, cond: dict, max_mel_frames: int, device: torch.device, mel_frames: torch.Tensor | None = None,
                generators: list[torch.Generator] | None = None) -> dict[str, torch.Tensor]:
        """:meth:`speech` from encoded conditions ``cond``; ``generators`` one per row or ``None``."""
        net = self.network
        targets = None if mel_frames is None else mel_frames.to(device=device, dtype=torch.long)
        with self._autocast(device):
            out = net.generate_mel(cond, max_mel_frames, targets, generators)
        out = {k: v.float() if v.is_floating_point() else v for k, v in out.items()}
        valid = torch.arange(out["mel"].shape[2], device=device)[None] < out["lengths"][:, None]  # (B, T)
        mel = torch.where(valid[:, None], out["mel"], torch.full_like(out["mel"], MEL_PAD_VALUE))
        # Each row is vocoded at its own length (float32: a vocoder's STFT is no place for bf16), so that
        # its speech does not depend on how long the batch's other rows are.
        wav = mel.new_zeros(mel.shape[0], mel.shape[2] * HOP_LENGTH)  # (B, 256 T)
        for row, length in enumerate(out["lengths"].tolist()):
            wav[row, : length * HOP_LENGTH] = net.vocoder(mel[row : row + 1, :, :length])[0]
        wav_lengths = out["lengths"] * HOP_LENGTH
        # Past its length a row's states are the decoder's continuation: hold its last state instead, as
        # a row alone is held (window_states), so that a short row's last window matches its clip alone.
        last = (out["lengths"] - 1).clamp(min=0)[:, None]  # (B, 1)
        index = torch.minimum(torch.arange(out["hidden"].shape[1], device=device)[None], last)  # (B, T)
        out["hidden"] = out["hidden"].gather(1, index[..., None].expand(-1, -1, out["hidden"].shape[2]))
        return {"mel": mel, "mel_lengths": out["lengths"], "wav": wav, "wav_lengths": wav_lengths,
                "audio_hidden": out["hidden"]}

    # ------------------------------------------------------------------ video
    @torch.no_grad()
    def video(self, ref_image: torch.Tensor, face_mask: torch.Tensor, lip_mask: torch.Tensor,
              text_ids: torch.Tensor, text_mask: torch.Tensor, profile_wav: torch.Tensor,
              audio_hidden: torch.Tensor, total_frames: int, num_inference_steps: int = 25,
              guidance_scale: float = 1.0, generator: torch.Generator | Sequence[torch.Generator] | None = None,
              progress: bool = False, motion_frames: torch.Tensor | None = None,
              conditions: dict | None = None) -> torch.Tensor:
        """``total_frames`` frames window by window, each conditioned on the previous window's last frames.

        Args:
            audio_hidden: (B, T, W) decoder states of the whole utterance (2.5 per video frame).
            motion_frames: (B, M, 3, H, W) in [-1, 1] before the first window, or ``None``.
            conditions: the network's ``encode_conditions`` of these inputs, when already computed
                (``None``: encoded here, once for all windows).

        Returns:
            (B, total_frames, 3, H, W) in [-1, 1].
        """
        window, context = int(self.network.num_frames), int(self.network.motion_frames)
        if conditions is None:
            with self._autocast(ref_image.device):
                conditions = self.network.encode_conditions(text_ids, text_mask, ref_image, face_mask, lip_mask,
                                                            profile_wav)
        inputs = (ref_image, face_mask, lip_mask, text_ids, text_mask, profile_wav)
        motion = motion_frames
        frames: list[torch.Tensor] = []
        for index in tqdm(range(max(1, math.ceil(total_frames / window))), desc="video windows", unit="window",
                          disable=not progress):
            hidden = window_states(audio_hidden, index * window, window)  # (B, ceil(2.5 F), W)
            clip = self.video_window(*inputs, hidden, num_frames=window, motion_frames=motion,
                                     num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                     generator=generator, conditions=conditions)  # (B, F, 3, H, W)
            frames.append(clip)
            motion = clip[:, -context:] if context > 0 else None
        return torch.cat(frames, dim=1)[:, :total_frames]  # (B, T, 3, H, W)

    @torch.no_grad()
    def video_window(self, ref_image: torch.Tensor, face_mask: torch.Tensor, lip_mask: torch.Tensor,
                     text_ids: torch.Tensor, text_mask: torch.Tensor, profile_wav: torch.Tensor,
                     audio_hidden: torch.Tensor, num_frames: int, motion_frames: torch.Tensor | None = None,
                     num_inference_steps: int = 25, guidance_scale: float = 1.0,
                     generator: torch.Generator | Sequence[torch.Generator] | None = None,
                     conditions: dict | None = None) -> torch.Tensor:
        """One window of ``num_frames`` frames by the sampler, conditioned on the previous window's last frames.

        Args:
            audio_hidden: (B, >= 1, W) decoder states of this window's time span (2.5 per frame, the
                window starting at index 0); shorter spans repeat their last state.
            motion_frames: (B, M, 3, H, W) in [-1, 1], or ``None`` at the start of a clip.
            guidance_scale: classifier-free guidance on the cross-attention tokens (1 = off).
            generator: draws the initial noise; a list of B generators draws each row's from its own.
            conditions: the network's ``encode_conditions`` of these inputs (``None``: encoded here).

        Returns:
            (B, num_frames, 3, H, W) in [-1, 1], float32.

        Raises:
            ValueError: ``num_inference_steps`` or ``num_frames`` below 1.
        """
        if num_inference_steps < 1 or num_frames < 1:
            raise ValueError(f"num_inference_steps and num_frames must be >= 1, got {num_inference_steps}, {num_frames}")
        net = self.network
        b, device = ref_image.shape[0], ref_image.device
        with self._autocast(device):
            # 1. Conditions: tokens, the reference and motion latents, the audio windows (DC)
            cond = conditions if conditions is not None else net.encode_conditions(
                text_ids, text_mask, ref_image, face_mask, lip_mask, profile_wav)
            windows = net.audio_windows(audio_hidden, torch.zeros(b, dtype=torch.long, device=device), num_frames)
            maps, cross = net.denoiser_inputs(cond, net.motion_latents(motion_frames, ref_image), windows, num_frames)
        # 2. The sampler from Gaussian noise (its arithmetic in float32)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        shape = (b, 4, num_frames, net.latent_size, net.latent_size)
        noise = randn_tensor(shape, generator=list(generator) if isinstance(generator, Sequence) else generator,
                             device=device, dtype=torch.float32)
        latents = noise * self.scheduler.init_noise_sigma
        for t in self.scheduler.timesteps:
            pred = self._guided(latents, t, maps, cross, guidance_scale)
            latents = self.scheduler.step(pred.float(), t, latents).prev_sample
        # 3. Latents -> frames
        return self._decode(latents, cond["ref_latent"], ref_image).clamp(-1, 1)  # (B, F, 3, H, W)

    def _guided(self, latents: torch.Tensor, t: torch.Tensor, maps: torch.Tensor, cross: dict,
                scale: float) -> torch.Tensor:
        """Classifier-free guidance: the unconditional branch sees zeroed cross-attention tokens, as the
        ``guidance_dropout`` rows of training do; with ``batched_guidance`` both branches in one call."""
        unguided = scale == 1.0 or cross["tokens"].shape[1] == 0
        with self._autocast(latents.device):
            if unguided:
                return self._denoise(latents, t, maps, cross)
            uncond_cross = {**cross, "tokens": torch.zeros_like(cross["tokens"])}
            if self.batched_guidance:  # (2 B, ...): the conditional rows first; (2 B F, ...) for per-frame tensors
                both = {k: torch.cat([v, uncond_cross[k]]) if torch.is_tensor(v) else v for k, v in cross.items()}
                cond, uncond = self._denoise(torch.cat([latents, latents]), t, torch.cat([maps, maps]), both).chunk(2)
            else:
                cond = self._denoise(latents, t, maps, cross)
                uncond = self._denoise(latents, t, maps, uncond_cross)
        return uncond.float() + scale * (cond.float() - uncond.float())

    def _decode(self, latents: torch.Tensor, ref_latent: torch.Tensor, ref_image: torch.Tensor) -> torch.Tensor:
        """The network's ``decode_diffused`` (B, 4, F, h, w) -> (B, F, 3, H, W) float32, ``decode_slice`` frames a call."""
        step = latents.shape[2] if self.decode_slice is None else self.decode_slice
        parts = []
        with self._autocast(latents.device):
            for start in range(0, latents.shape[2], step):
                parts.append(self.network.decode_diffused(latents[:, :, start : start + step], ref_latent,
                                                          ref_image).float())
        return torch.cat(parts, dim=1)


def _check_mel_frames(max_mel_frames: int) -> None:
    if max_mel_frames < 1:
        raise ValueError(f"max_mel_frames must be >= 1, got {max_mel_frames}")


def _check_targets(mel_frames: torch.Tensor | None, rows: int) -> None:
    if mel_frames is None:
        return
    if tuple(mel_frames.shape) != (rows,) or bool((mel_frames < 1).any()):
        raise ValueError(f"mel_frames must be ({rows},) integers >= 1 (one per row), got "
                         f"{mel_frames.tolist()}")


def _streams(generator: torch.Generator | Sequence[torch.Generator] | None,
             rows: int) -> tuple[list[torch.Generator] | None, list[torch.Generator] | torch.Generator | None]:
    """The speech (pre-net dropout) and diffusion-noise generators of one call.

    A list gives each row two streams of its own, seeded by two draws from the row's generator: a
    call takes exactly two draws from each, whatever the lengths, so that the next call (the next
    sentence) continues from the same state in a batch as alone. One generator is split into rows
    by its draws (the rows then depend on their places); ``None`` leaves both to the global RNG.
    """
    if generator is None:
        return None, None
    if isinstance(generator, torch.Generator):
        if rows == 1:
            generator = [generator]
        else:
            seeds = torch.randint(0, 2**62, (rows,), generator=generator, device=generator.device).tolist()
            generator = [torch.Generator(device=generator.device).manual_seed(seed) for seed in seeds]
    if len(generator) != rows:
        raise ValueError(f"generator: one per row expected, got a list of {len(generator)} for {rows} rows")
    speech, noise = [], []
    for row in generator:
        first, second = torch.randint(0, 2**62, (2,), generator=row, device=row.device).tolist()
        speech.append(torch.Generator(device=row.device).manual_seed(first))
        noise.append(torch.Generator(device=row.device).manual_seed(second))
    return speech, noise


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
