"""Plain ``nn.Module`` networks of nfy: the NFY network and its components (no Lightning imports)."""

from lightning_modules.networks.encoders import (
    AppearanceEncoder,
    AudioProfileEncoder,
    AudioSequenceEncoder,
    StructureEncoder,
    TextEncoder,
)
from lightning_modules.networks.entangled import EntangledEncoder
from lightning_modules.networks.layers import PretrainedNotFoundError
from lightning_modules.networks.nfy import NFYNetwork
from lightning_modules.networks.speech_decoder import AudioDecoder
from lightning_modules.networks.video_denoiser import VideoDenoiser
from lightning_modules.networks.vocoder import Vocoder

__all__ = [
    "AppearanceEncoder",
    "AudioDecoder",
    "AudioProfileEncoder",
    "AudioSequenceEncoder",
    "EntangledEncoder",
    "NFYNetwork",
    "PretrainedNotFoundError",
    "StructureEncoder",
    "TextEncoder",
    "VideoDenoiser",
    "Vocoder",
]
