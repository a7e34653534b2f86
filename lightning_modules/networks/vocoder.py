"""Vocoder ("HiFi Generator", paper Sec. 3.3): log-mel (B, 80, T) -> 16 kHz waveform (B, 256 T).

The real vocoder is speechbrain's ``HifiganGenerator`` with the hyperparameters of its 16 kHz LibriTTS
recipe (``speechbrain/tts-hifigan-libritts-16kHz``), whose ``generator.ckpt`` loads from a local folder
or a hub id. The tiny configuration uses torchaudio's Griffin-Lim instead: no weights, no training.
"""

from __future__ import annotations

import logging
import os

import torch
import torchaudio
from speechbrain.lobes.models.HifiGAN import HifiganGenerator
from torch import nn

from common.frozen import freeze
from datamodules.conventions import (
    F_MAX,
    F_MIN,
    HOP_LENGTH,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    WIN_LENGTH,
)
from lightning_modules.networks.layers import (
    PretrainedNotFoundError,
    building_from_checkpoint,
    describe_missing_files,
)

log = logging.getLogger(__name__)

HIFIGAN_LIBRITTS_16K: dict = {
    "in_channels": N_MELS, "out_channels": 1, "resblock_type": "1",
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "resblock_kernel_sizes": [3, 7, 11],
    "upsample_kernel_sizes": [16, 16, 4, 4], "upsample_initial_channel": 512, "upsample_factors": [8, 8, 2, 2],
    "inference_padding": 5, "cond_channels": 0, "conv_post_bias": True,
}
"""Generator hyperparameters of speechbrain's ``tts-hifigan-libritts-16kHz`` (product of factors = hop 256)."""


def hifigan_generator(channels: int = 512) -> HifiganGenerator:
    """The LibriTTS 16 kHz generator architecture, with ``upsample_initial_channel=channels``."""
    return HifiganGenerator(**{**HIFIGAN_LIBRITTS_16K, "upsample_initial_channel": channels})


def _generator_file(source: str) -> str:
    """Path of ``generator.ckpt`` in a local folder, or in the (cached) hub repository ``source``."""
    if os.path.isdir(source):
        path = os.path.join(source, "generator.ckpt")
        if not os.path.isfile(path):
            raise PretrainedNotFoundError("HiFi-GAN vocoder", source, describe_missing_files(source, [("generator.ckpt",)]))
        return path
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(source, "generator.ckpt")
    except Exception as error:  # hub errors (offline, missing repo, missing file) share no base class
        reason = describe_missing_files(source, [("generator.ckpt",)], error=error)
        raise PretrainedNotFoundError("HiFi-GAN vocoder", source, reason) from error


class Vocoder(nn.Module):
    """Frozen mel -> waveform converter.

    Args:
        pretrained: local folder or hub id holding speechbrain's ``generator.ckpt`` (LibriTTS 16 kHz);
            ``None`` uses Griffin-Lim (``griffin_lim=True``) or a random HiFi-GAN of ``channels``.
        griffin_lim: without ``pretrained``, invert the mel with Griffin-Lim (tiny configs).
        channels: ``upsample_initial_channel`` of a random HiFi-GAN.
        griffin_lim_iters: Griffin-Lim iterations.
    """

    def __init__(self, pretrained: str | None = None, griffin_lim: bool = True, channels: int = 512,
                 griffin_lim_iters: int = 32) -> None:
        super().__init__()
        self.generator: HifiganGenerator | None = None
        if pretrained is not None or not griffin_lim:
            self.generator = hifigan_generator(512 if pretrained is not None else channels)
            if pretrained is not None and not building_from_checkpoint():  # else the checkpoint's weights
                state = torch.load(_generator_file(pretrained), map_location="cpu", weights_only=True)
                self.generator.load_state_dict(state)
            freeze(self.generator)
        else:  # the filter bank is computed on the CPU even under a meta-device context (parameter counts)
            with torch.device("cpu"):
                self._build_griffin_lim(griffin_lim_iters)

    def _build_griffin_lim(self, iters: int) -> None:
        self.inverse_mel = torchaudio.transforms.InverseMelScale(
            n_stft=N_FFT // 2 + 1, n_mels=N_MELS, sample_rate=SAMPLE_RATE, f_min=F_MIN, f_max=F_MAX,
            norm="slaney", mel_scale="slaney",
        )
        # Zero initial phase: the speech depends on the mel alone (a random start would draw from the
        # global RNG, so a clip's speech would change with whatever ran before it or beside it in a batch).
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=N_FFT, n_iter=iters, win_length=WIN_LENGTH, hop_length=HOP_LENGTH, power=1.0, rand_init=False,
        )

    @torch.no_grad()
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 80, T) log-mel -> (B, 256 T) waveform in [-1, 1]."""
        samples = mel.shape[-1] * HOP_LENGTH
        if self.generator is not None:
            # speechbrain's inference pads the mel by ``inference_padding`` frames on both sides (replicate);
            # cut those frames' samples off again so that sample 256 t belongs to mel frame t (lip sync).
            lead = self.generator.inference_padding * HOP_LENGTH
            wav = self.generator.inference(mel).squeeze(1)[..., lead:]  # (B, 256 (T + padding))
        else:
            magnitude = self.inverse_mel(mel.float().exp())  # (B, 513, T) linear magnitudes
            # the STFT of Griffin-Lim needs n_fft / hop = 4 frames: pad very short mels with silence
            magnitude = nn.functional.pad(magnitude, (0, max(0, N_FFT // HOP_LENGTH + 1 - magnitude.shape[-1])))
            wav = self.griffin_lim(magnitude)  # (B, 256 (T - 1))
        wav = nn.functional.pad(wav, (0, max(0, samples - wav.shape[-1])))[..., :samples]
        return wav.clamp(-1.0, 1.0)
