"""Log-mel: shape, equality with speechbrain's HiFi-GAN feature function, an independent librosa check."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch
from speechbrain.lobes.models.HifiGAN import mel_spectrogram

from datamodules.audio import log_mel, mel_frames
from datamodules.media import read_audio

# speechbrain recipes/LibriTTS/vocoder/hifigan/hparams/train.yaml (16 kHz); its mel_normalized: null
# means no STFT normalisation, which current torchaudio takes only as False
RECIPE = dict(sample_rate=16000, hop_length=256, win_length=1024, n_fft=1024, n_mels=80, f_min=0.0,
              f_max=8000, power=1, normalized=False, norm="slaney", mel_scale="slaney", compression=True)


def _speechlike(seconds: float = 1.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 1200), 1))
    return (0.2 * tone * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("num_samples", [16000, 20801, 32000])
def test_shape_is_80_by_samples_over_hop(num_samples: int) -> None:
    mel = log_mel(_speechlike(num_samples / 16000))
    assert mel.shape == (80, num_samples // 256 + 1) == (80, mel_frames(num_samples))
    assert mel.dtype == torch.float32
    assert float(mel.min()) >= np.log(1e-5) - 1e-6


def test_equals_speechbrain_recipe_function_batched() -> None:
    wav = torch.from_numpy(np.stack([_speechlike(seed=0), _speechlike(seed=1)]))
    expected = mel_spectrogram(audio=wav, **RECIPE)
    torch.testing.assert_close(log_mel(wav), expected, rtol=0, atol=0)


def test_matches_independent_librosa_slaney_mel() -> None:
    wav = _speechlike()
    spec = torch.stft(torch.from_numpy(wav), 1024, 256, 1024, window=torch.hann_window(1024), center=True,
                      pad_mode="reflect", return_complex=True).abs().numpy()  # (513, T) magnitude
    bank = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=80, fmin=0.0, fmax=8000.0, htk=False, norm="slaney")
    expected = np.log(np.maximum(bank @ spec, 1e-5))
    np.testing.assert_allclose(log_mel(wav).numpy(), expected, atol=2e-4)


def test_real_speech(shared_data) -> None:
    wav = read_audio(shared_data / "clips" / "kid_1.mp4")
    mel = log_mel(wav)
    assert mel.shape == (80, wav.size // 256 + 1)
    # speech energy sits in the low bands: lower half of the mel louder than the top quarter
    assert float(mel[:40].mean()) > float(mel[60:].mean())


def test_rejects_too_short_or_badly_shaped() -> None:
    with pytest.raises(ValueError, match="S > 512"):
        log_mel(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="shape"):
        log_mel(np.zeros((1, 1, 4000), np.float32))


def test_the_networks_reference_mel_is_the_data_log_mel() -> None:
    from lightning_modules.networks.layers import reference_mel

    wav = _speechlike(0.5)[None]  # (1, S)
    torch.testing.assert_close(reference_mel(torch.as_tensor(wav)), log_mel(wav), rtol=0, atol=0)
