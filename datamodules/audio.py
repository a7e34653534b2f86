"""Log-mel spectrograms with the vocoder's settings (DESIGN.md section 2).

The mel is computed by speechbrain's own HiFi-GAN feature function
(:func:`speechbrain.lobes.models.HifiGAN.mel_spectrogram`) with the settings of speechbrain's
16 kHz LibriTTS HiFi-GAN recipe (``recipes/LibriTTS/vocoder/hifigan/hparams/train.yaml``):
80 bins, n_fft 1024, hop 256, window 1024, 0-8000 Hz, magnitude (``power=1``), unnormalised
STFT, Slaney mel scale and Slaney band normalisation, and dynamic range compression
``log(clamp(x, 1e-5))``. Mels made here can therefore be turned into speech by a pretrained
speechbrain vocoder, and the model's generated mels are compared on the same scale.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

from datamodules.conventions import HOP_LENGTH, MEL_SETTINGS, N_FFT


def mel_frames(num_samples: int) -> int:
    """Number of mel frames for ``num_samples`` samples (centred STFT): ``num_samples // 256 + 1``."""
    return int(num_samples) // HOP_LENGTH + 1


def log_mel(wav: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
    """Log-mel spectrogram of 16 kHz mono audio.

    Args:
        wav: (S,) or (B, S) float audio in [-1, 1] at 16 kHz (numpy or torch).

    Returns:
        float32 tensor (80, T) or (B, 80, T) with ``T = S // 256 + 1``; values are
        ``log(max(mel, 1e-5))``, so at least ``log(1e-5) = -11.51`` (the batch pad value).

    Raises:
        ValueError: ``wav`` is not 1-D/2-D or shorter than one FFT window's half (512 samples).
    """
    from speechbrain.lobes.models.HifiGAN import mel_spectrogram

    audio = torch.as_tensor(np.asarray(wav) if not isinstance(wav, torch.Tensor) else wav).float()
    if audio.dim() not in (1, 2) or audio.shape[-1] <= N_FFT // 2:
        raise ValueError(f"wav must be (S,) or (B, S) with S > {N_FFT // 2} samples, got shape {tuple(audio.shape)}")
    with torch.no_grad():
        return mel_spectrogram(audio=audio, **MEL_SETTINGS).float()  # (80, T) or (B, 80, T)
