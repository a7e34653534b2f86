"""Signal conventions shared by every part of nfy (DESIGN.md section 2).

One place for the numbers that link datasets, model, generation and metrics. Change them
here and the CLI, the DataModules and the metric suite follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# Video
FPS: int = 25
"""Frames per second of every preprocessed clip and every generated video."""
IMAGE_SIZE: int = 512
"""Side of the square face crop in the paper (Sec. 4.1)."""

# Audio
SAMPLE_RATE: int = 16_000
"""Mono float32 samples in [-1, 1] at this rate, everywhere after decoding."""
SAMPLES_PER_FRAME: int = SAMPLE_RATE // FPS  # 640
PROFILE_SECONDS: float = 2.0
"""Length of the voice profile: the first 2 s of the utterance (Sec. 4.1)."""
PROFILE_SAMPLES: int = int(PROFILE_SECONDS * SAMPLE_RATE)  # 32000

# Mel spectrogram: the settings of speechbrain's 16 kHz LibriTTS HiFi-GAN recipe, so that a
# pretrained vocoder can turn our mels into speech.
N_MELS: int = 80
N_FFT: int = 1024
HOP_LENGTH: int = 256
WIN_LENGTH: int = 1024
F_MIN: float = 0.0
F_MAX: float = 8000.0
MEL_SETTINGS: Mapping[str, object] = MappingProxyType({  # the same numbers as keyword arguments (read-only)
    "sample_rate": SAMPLE_RATE,
    "hop_length": HOP_LENGTH,
    "win_length": WIN_LENGTH,
    "n_fft": N_FFT,
    "n_mels": N_MELS,
    "f_min": F_MIN,
    "f_max": F_MAX,
    "power": 1,
    "normalized": False,
    "norm": "slaney",
    "mel_scale": "slaney",
    "compression": True,
})
"""Keyword arguments of speechbrain's ``mel_spectrogram`` (all but ``audio``): the one log-mel of nfy
(:func:`datamodules.audio.log_mel` for data, the networks' reference mel of the voice profile)."""
MEL_FRAMES_PER_SECOND: float = SAMPLE_RATE / HOP_LENGTH  # 62.5
MEL_FRAMES_PER_VIDEO_FRAME: float = MEL_FRAMES_PER_SECOND / FPS  # 2.5
MEL_PAD_VALUE: float = -11.5129  # log(1e-5): the floor of the mel's dynamic range compression
"""Value of mel frames past an utterance's length (batch padding, generated speech after the stop)."""

# Clips
MAX_SOURCE_SECONDS: float = 20.0
"""The paper crops every source video to its first 20 s (Sec. 4.1)."""
MAX_UTTERANCE_SECONDS: float = 10.0
"""Utterances are cut at transcript segment boundaries to at most about 10 s."""
