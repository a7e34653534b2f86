"""A tiny random OpenAI Whisper checkpoint in the registry's cache, for offline recogniser tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from metrics import registry

NAME = "whisper_base_en"  # the registry entry the tiny checkpoint stands in for
MAX_TOKENS = 8


def save_tiny_whisper(path: Path, seed: int = 0) -> Path:
    """Save a random 1-layer English-only Whisper in OpenAI's format (``{"dims", "model_state_dict"}``).

    The real tokenizer ships with openai-whisper, so the vocabulary is base.en's (51864 tokens);
    the audio side keeps Whisper's 80 mels and 1500 encoder positions (30 s of log-mel).
    """
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(
        n_mels=80, n_audio_ctx=1500, n_audio_state=16, n_audio_head=2, n_audio_layer=1,
        n_vocab=51864, n_text_ctx=32, n_text_state=16, n_text_head=2, n_text_layer=1,
    )
    torch.manual_seed(seed)
    model = Whisper(dims)
    with torch.no_grad():
        for param in model.parameters():  # the decoder's positional embedding starts uninitialised
            param.normal_(0.0, 0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


def install_tiny_whisper(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the tiny checkpoint at the registry path of :data:`NAME` under ``cache`` (as ``$NFY_CACHE``).

    The registry checks every file's sha256 when it is loaded, so the entry is replaced, for the
    test only, by one that carries the digest of the tiny file.
    """
    monkeypatch.setenv("NFY_CACHE", str(cache))
    path = save_tiny_whisper(registry.expected_path(NAME))
    entry = dataclasses.replace(registry.REGISTRY[NAME], sha256=registry.sha256_of(path))
    monkeypatch.setitem(registry.REGISTRY, NAME, entry)
    return path
