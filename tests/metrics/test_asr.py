"""Recogniser choice: OpenAI Whisper checkpoints from the weights registry decode as openai-whisper does."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metrics import registry
from metrics.asr import PocketSphinxRecognizer, WhisperRecognizer, make_recognizer
from metrics.registry import WeightsNotFoundError
from tests.metrics._tiny_whisper import (
    MAX_TOKENS,
    NAME,
    install_tiny_whisper,
    save_tiny_whisper,
)

whisper = pytest.importorskip("whisper", reason="openai-whisper is the nfy[whisper] extra")


def _clips() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    t = np.arange(16_000) / 16_000
    tone = (0.4 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    noise = np.clip(0.3 * rng.standard_normal(12_000), -1, 1).astype(np.float32)
    return [tone, noise, tone[:6_000]]  # three lengths, one batch of 2 and one of 1


def _openai_reference(checkpoint: Path, clips: list[np.ndarray]) -> list[str]:
    """openai-whisper on its own, clip by clip: load_model, pad_or_trim, log_mel_spectrogram, decode."""
    model = whisper.load_model(str(checkpoint), device="cpu")
    options = whisper.DecodingOptions(language="en", temperature=0.0, without_timestamps=True, fp16=False,
                                      sample_len=MAX_TOKENS)
    texts = []
    for clip in clips:
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(clip)), model.dims.n_mels)
        texts.append(whisper.decode(model, mel, options).text)
    return texts


def test_registry_checkpoint_decodes_as_openai_whisper(tmp_path, monkeypatch) -> None:
    checkpoint = install_tiny_whisper(tmp_path, monkeypatch)
    assert checkpoint == tmp_path / NAME / "base.en.pt"
    clips = _clips()
    recognizer = make_recognizer(NAME, batch_size=2, max_new_tokens=MAX_TOKENS)
    assert isinstance(recognizer, WhisperRecognizer) and recognizer.backend == "openai-whisper"
    assert recognizer.description == f"{NAME} (openai-whisper {whisper.__version__})"
    texts = recognizer(clips)
    assert texts == _openai_reference(checkpoint, clips)
    assert all(texts) and texts[0] != texts[1]  # the random model still hears a difference
    # a tensor batch, the .pt path itself and a loaded model object give the same transcripts
    batch = torch.from_numpy(np.stack([clips[0], clips[0]]))  # (2, S)
    assert recognizer(batch) == [texts[0], texts[0]]
    assert WhisperRecognizer(str(checkpoint), max_new_tokens=MAX_TOKENS)(clips[1]) == texts[1:2]
    model = whisper.load_model(str(checkpoint), device="cpu")
    assert WhisperRecognizer(model, max_new_tokens=MAX_TOKENS)(clips[2]) == texts[2:]


def test_registry_checks_the_digest_when_loading(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NFY_CACHE", str(tmp_path))
    save_tiny_whisper(registry.expected_path(NAME))  # OpenAI's digest of base.en.pt is kept
    with pytest.raises(WeightsNotFoundError, match="sha256 .* expected 25a8566e"):
        WhisperRecognizer(NAME)


def test_missing_checkpoint_says_which_file_where_and_whence(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NFY_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as info:
        make_recognizer("whisper_tiny")
    message = str(info.value)
    assert "'tiny.pt'" in message and str(tmp_path / "whisper_tiny" / "tiny.pt") in message
    assert registry.REGISTRY["whisper_tiny"].url in message and "metrics.registry download whisper_tiny" in message


def test_missing_package_names_the_extra(tmp_path, monkeypatch) -> None:
    install_tiny_whisper(tmp_path, monkeypatch)
    monkeypatch.setitem(sys.modules, "whisper", None)  # import whisper now fails
    with pytest.raises(ImportError, match=r"nfy\[whisper\]"):
        WhisperRecognizer(NAME)


def test_specs_and_wrong_names(tmp_path, monkeypatch) -> None:
    assert isinstance(make_recognizer("pocketsphinx"), PocketSphinxRecognizer)
    assert make_recognizer().description.startswith("pocketsphinx (pocketsphinx 5.")
    with pytest.raises(ValueError, match="'vggish' is not a Whisper checkpoint"):
        make_recognizer("vggish")
    with pytest.raises(FileNotFoundError, match="whisper_base_en"):  # unknown source: the registry names are listed
        make_recognizer(str(tmp_path / "no_such_model"))
