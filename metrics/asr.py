"""Speech recognisers that turn generated speech into text for :class:`metrics.wer.NormalizedWER`.

- :class:`PocketSphinxRecognizer`: CMU PocketSphinx 5 with the US-English acoustic model,
  dictionary and language model shipped in its wheel: works fully offline. Weak recogniser,
  but a stable one: WER 0.10-0.31 on the clean example clips.
- :class:`WhisperRecognizer`: OpenAI Whisper through ``transformers``
  (``WhisperForConditionalGeneration``), from a hub id such as ``"openai/whisper-base"`` or a
  local folder saved with ``save_pretrained``; greedy decoding, English transcription.

Both take mono float audio in [-1, 1] at 16 kHz, as ``(S,)``, ``(B, S)`` or a list of
``(S_i,)`` tensors/arrays, and return one string per clip. Nothing is loaded at import.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metrics.audio_features import (
    SILENCE_PEAK,
    AudioInput,
    as_clip_list,
    signal_problem,
)
from metrics.errors import MetricInputError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
WHISPER_MAX_SECONDS = 30.0


def _clips(audio: AudioInput, name: str, sample_rate: int) -> list[np.ndarray]:
    if sample_rate != SAMPLE_RATE:
        raise MetricInputError(name, f"sample_rate={sample_rate} Hz, expected {SAMPLE_RATE} Hz audio")
    clips = as_clip_list(audio, name, "audio")
    for i, clip in enumerate(clips):
        problem = signal_problem(clip, "audio")
        if problem is not None and "silent" not in problem:  # silence transcribes to ""
            raise MetricInputError(name, f"clip {i}: {problem}")
    return clips


class PocketSphinxRecognizer:
    """Offline English recogniser (PocketSphinx 5, models shipped in the wheel).

    Args:
        sample_rate: Hz of the audio to transcribe; must be 16000.

    Example:
        >>> recognizer = PocketSphinxRecognizer()
        >>> recognizer(np.zeros(16000, np.float32))
        ['']
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self.sample_rate = sample_rate
        self._decoder = None

    def _get_decoder(self):
        if self._decoder is None:
            from pocketsphinx import Decoder

            # default config = the en-us model in the wheel; logfn silences its C-level log
            self._decoder = Decoder(samprate=self.sample_rate, logfn="/dev/null")
        return self._decoder

    def transcribe_one(self, wav: np.ndarray) -> str:
        """Transcribe one ``(S,)`` float clip in [-1, 1]; lower-case words, ``""`` for silence."""
        if np.abs(wav).max(initial=0.0) < SILENCE_PEAK:
            return ""  # PocketSphinx invents words in digital silence
        decoder = self._get_decoder()
        pcm = (np.clip(wav, -1.0, 1.0) * 32767.0).astype(np.int16)  # (S,) the decoder reads int16
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return "" if hyp is None else hyp.hypstr

    def __call__(self, audio: AudioInput) -> list[str]:
        """Transcribe every clip of ``audio`` (``(S,)``, ``(B, S)`` or a list); one string per clip."""
        return [self.transcribe_one(clip) for clip in _clips(audio, "PocketSphinxRecognizer", self.sample_rate)]


class WhisperRecognizer:
    """Whisper (transformers) English transcription with greedy decoding.

    Args:
        model: hub id (``"openai/whisper-base"``), a local folder saved with
            ``save_pretrained``, or a ``WhisperForConditionalGeneration`` object.
        processor: a ``WhisperProcessor``; loaded from ``model`` when it is an id or a path.
        device: where the model runs.
        batch_size: clips per ``generate`` call.
        max_new_tokens: longest transcript in tokens.

    Raises:
        FileNotFoundError: the model cannot be loaded (not cached locally and no internet),
            with the id/path that was tried.
    """

    def __init__(
        self,
        model: str | Path | nn.Module = "openai/whisper-base",
        processor: Any | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        max_new_tokens: int = 128,
    ) -> None:
        if isinstance(model, (str, Path)):
            network, processor = self._load(str(model), processor)
        elif processor is None:
            raise ValueError("WhisperRecognizer: pass `processor` (a WhisperProcessor) with a model object")
        else:
            network = model
        self.model = network.to(device).eval()
        self.processor = processor
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens

    @staticmethod
    def _load(name: str, processor: Any | None) -> tuple[nn.Module, Any]:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        try:
            model = WhisperForConditionalGeneration.from_pretrained(name)
            processor = processor or WhisperProcessor.from_pretrained(name)
        except OSError as err:
            raise FileNotFoundError(
                f"WhisperRecognizer: cannot load Whisper from {name!r} ({err}). Give a local folder "
                f"saved with save_pretrained, or a hub id that is in the Hugging Face cache "
                f"(download it on a machine with internet access, e.g. `huggingface-cli download {name}`)."
            ) from err
        return model, processor

    def _generate_kwargs(self) -> dict:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": False, "num_beams": 1}
        if getattr(self.model.generation_config, "lang_to_id", None):  # multilingual checkpoints
            kwargs.update(language="en", task="transcribe")
        return kwargs

    @torch.no_grad()
    def _transcribe_batch(self, clips: list[np.ndarray]) -> list[str]:
        features = self.processor.feature_extractor(
            [clip.astype(np.float32) for clip in clips], sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features  # (B, n_mels, 3000): log-mel of 30 s, zero-padded
        features = features.to(self.device, dtype=self.model.dtype)
        ids = self.model.generate(features, **self._generate_kwargs())  # (B, L)
        return [text.strip() for text in self.processor.batch_decode(ids, skip_special_tokens=True)]

    def __call__(self, audio: AudioInput) -> list[str]:
        """Transcribe every clip of ``audio`` (16 kHz); one string per clip."""
        clips = _clips(audio, "WhisperRecognizer", SAMPLE_RATE)
        for i, clip in enumerate(clips):
            if clip.size > WHISPER_MAX_SECONDS * SAMPLE_RATE:
                log.warning("WhisperRecognizer: clip %d is %.1f s; Whisper reads only the first 30 s", i, clip.size / SAMPLE_RATE)
        texts: list[str] = []
        for start in range(0, len(clips), self.batch_size):
            texts += self._transcribe_batch(clips[start : start + self.batch_size])
        return texts
