"""Speech recognisers that turn generated speech into text for :class:`metrics.wer.NormalizedWER`.

- :class:`PocketSphinxRecognizer`: CMU PocketSphinx 5 with the US-English acoustic model,
  dictionary and language model shipped in its wheel: works fully offline. Weak recogniser,
  but a stable one: WER 0.10-0.31 on the clean example clips.
- :class:`WhisperRecognizer`: OpenAI Whisper, English transcription with greedy decoding
  (temperature 0, no fallback) of the first 30 s of each clip. Two sources of weights:

  * OpenAI's own checkpoints (``tiny.pt``, ``base.en.pt``, ...) through the ``openai-whisper``
    package (``pip install 'nfy[whisper]'``): a registry name of :mod:`metrics.registry` such as
    ``"whisper_base_en"`` (file in ``$NFY_CACHE``, checked against OpenAI's sha256) or the path
    of a ``.pt`` file. Features and decoding are openai-whisper's (``pad_or_trim``,
    ``log_mel_spectrogram``, ``decode``).
  * ``transformers`` (``WhisperForConditionalGeneration``): a hub id such as
    ``"openai/whisper-base"`` or a local folder saved with ``save_pretrained``.

:func:`make_recognizer` builds either from one string (``"pocketsphinx"`` or any Whisper
source above); ``python -m experiments.evaluate --asr`` passes it through.

Both take mono float audio in [-1, 1] at 16 kHz, as ``(S,)``, ``(B, S)`` or a list of
``(S_i,)`` tensors/arrays, and return one string per clip. Nothing is loaded at import.
Each recogniser has a ``description`` (source and package version) for the outputs that
report a WER.

This is nfy's one speech-recognition stack: the transcribers of ``prepare``
(:mod:`datamodules.transcribe`) load Whisper with :func:`load_whisper` and decode with
:meth:`PocketSphinxRecognizer.decode`, adding language ID and timestamped segments.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
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
WHISPER_EXTRA = "pip install 'nfy[whisper]'  (or: pip install openai-whisper==20250625)"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown version"


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

    name = "pocketsphinx"

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self.sample_rate = sample_rate
        self._decoder = None

    @property
    def description(self) -> str:
        """What transcribes, for the outputs: ``"pocketsphinx (pocketsphinx 5.1.1, en-us model)"``."""
        return f"pocketsphinx (pocketsphinx {_version('pocketsphinx')}, en-us model)"

    def decode(self, wav: np.ndarray) -> Any:
        """Run the decoder on one ``(S,)`` float clip in [-1, 1]; returns the pocketsphinx ``Decoder``
        holding the result (``hyp()`` for the text, ``seg()`` for the timed words)."""
        if self._decoder is None:
            from pocketsphinx import Decoder

            # default config = the en-us model in the wheel; logfn silences its C-level log
            self._decoder = Decoder(samprate=self.sample_rate, logfn="/dev/null")
        pcm = (np.clip(wav, -1.0, 1.0) * 32767.0).astype(np.int16)  # (S,) the decoder reads int16
        self._decoder.start_utt()
        self._decoder.process_raw(pcm.tobytes(), full_utt=True)
        self._decoder.end_utt()
        return self._decoder

    def transcribe_one(self, wav: np.ndarray) -> str:
        """Transcribe one ``(S,)`` float clip in [-1, 1]; lower-case words, ``""`` for silence."""
        if np.abs(wav).max(initial=0.0) < SILENCE_PEAK:
            return ""  # PocketSphinx invents words in digital silence
        hyp = self.decode(wav).hyp()
        return "" if hyp is None else hyp.hypstr

    def __call__(self, audio: AudioInput) -> list[str]:
        """Transcribe every clip of ``audio`` (``(S,)``, ``(B, S)`` or a list); one string per clip."""
        return [self.transcribe_one(clip) for clip in _clips(audio, "PocketSphinxRecognizer", self.sample_rate)]


def _import_openai_whisper() -> Any:
    """The ``openai-whisper`` package (module ``whisper``), or an error naming the extra."""
    try:
        import whisper
    except ImportError as err:
        raise ImportError(f"OpenAI Whisper checkpoints need the openai-whisper package: {WHISPER_EXTRA}") from err
    if not hasattr(whisper, "load_model"):  # another PyPI project also installs a `whisper` module
        raise ImportError(f"the installed `whisper` module ({whisper.__file__}) is not openai-whisper: {WHISPER_EXTRA}")
    return whisper


def load_whisper(source: str, processor: Any | None = None, dtype: torch.dtype | None = None,
                 alternatives: str = "a local folder saved with save_pretrained") -> tuple[nn.Module, Any]:
    """A transformers Whisper model and its processor from a hub id or a ``save_pretrained`` folder.

    The one place Whisper is loaded through transformers: for WER (:class:`WhisperRecognizer`)
    and for the transcripts of ``prepare`` (:class:`datamodules.transcribe.WhisperTranscriber`).

    Args:
        source: hub id (``"openai/whisper-base"``) or local folder.
        processor: a ``WhisperProcessor``; loaded from ``source`` when ``None``.
        dtype: of the weights (``None``: as stored, float32 for OpenAI's).
        alternatives: what else the caller accepts, for the error message.

    Raises:
        FileNotFoundError: the model cannot be loaded (not cached locally and no internet, a
            missing folder, a malformed id); the message names ``source`` and what to give instead.
    """
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    try:
        model = WhisperForConditionalGeneration.from_pretrained(source, **({"dtype": dtype} if dtype else {}))
        processor = processor or WhisperProcessor.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"cannot load Whisper from {source!r} ({err}). Give {alternatives}, or a hub id that is in the "
            f"Hugging Face cache (download it on a machine with internet access, e.g. "
            f"`huggingface-cli download {source}`)."
        ) from err
    return model, processor


def whisper_registry_names() -> list[str]:
    """Registry names of the OpenAI Whisper checkpoints (``"whisper_tiny"``, ``"whisper_base_en"``, ...)."""
    from metrics.registry import REGISTRY

    return sorted(name for name in REGISTRY if name.startswith("whisper_"))


class WhisperRecognizer:
    """Whisper English transcription with greedy decoding (temperature 0, no fallback).

    Args:
        model: where the weights come from (see the module docstring):

            * a registry name, e.g. ``"whisper_base_en"``: OpenAI's checkpoint from
              :func:`metrics.registry.weights_path`, run with ``openai-whisper``;
            * the path of an OpenAI checkpoint file (``{"dims", "model_state_dict"}``, e.g.
              ``base.en.pt``), run with ``openai-whisper``;
            * a hub id (``"openai/whisper-base"``) or a folder saved with ``save_pretrained``,
              run with ``transformers``;
            * a ``whisper.model.Whisper`` object, or a ``WhisperForConditionalGeneration`` with
              its ``processor``.
        processor: a ``WhisperProcessor`` (transformers only); loaded from ``model`` when it is
            an id or a folder.
        device: where the model runs.
        batch_size: clips decoded together.
        max_new_tokens: longest transcript in tokens (224 by default: Whisper's own limit, half its
            448-token context; OpenAI checkpoints never go beyond half their context).

    Raises:
        metrics.registry.WeightsNotFoundError: a registry checkpoint is absent or fails its
            sha256; the message names the file, where to put it and where to get it.
        FileNotFoundError: a transformers model cannot be loaded (not cached locally and no
            internet), with the id/path that was tried.
        ImportError: an OpenAI checkpoint without the ``openai-whisper`` package (``nfy[whisper]``).
    """

    def __init__(
        self,
        model: str | Path | nn.Module = "openai/whisper-base",
        processor: Any | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        max_new_tokens: int = 224,
    ) -> None:
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.processor = processor
        self.name = str(model) if isinstance(model, (str, Path)) else type(model).__name__
        checkpoint = self._openai_checkpoint(str(model)) if isinstance(model, (str, Path)) else None
        if checkpoint is not None:
            network, self.backend = _import_openai_whisper().load_model(str(checkpoint), device=self.device), "openai-whisper"
        elif isinstance(model, (str, Path)):
            alternatives = (f"a registry name ({', '.join(whisper_registry_names())}; see `python -m metrics.registry "
                            f"list`), the path of an OpenAI .pt checkpoint, a local folder saved with save_pretrained")
            (network, self.processor), self.backend = load_whisper(str(model), processor, None, alternatives), "transformers"
        elif type(model).__module__.split(".")[0] == "whisper":  # a whisper.model.Whisper
            network, self.backend = model, "openai-whisper"
        elif processor is None:
            raise ValueError("WhisperRecognizer: pass `processor` (a WhisperProcessor) with a transformers model object")
        else:
            network, self.backend = model, "transformers"
        self.model = network.to(self.device).eval()

    @property
    def description(self) -> str:
        """What transcribes, for the outputs, e.g. ``"whisper_base_en (openai-whisper 20250625)"``."""
        return f"{self.name} ({self.backend} {_version(self.backend)})"

    @staticmethod
    def _openai_checkpoint(name: str) -> Path | None:
        """The OpenAI checkpoint file ``name`` stands for, or ``None`` for a transformers source."""
        from metrics.registry import REGISTRY, weights_path

        if name in REGISTRY:
            if name not in whisper_registry_names():
                raise ValueError(f"WhisperRecognizer: {name!r} is not a Whisper checkpoint; use one of {whisper_registry_names()}")
            return weights_path(name)  # size and sha256 checked here
        path = Path(name).expanduser()
        return path if path.is_file() else None

    def _generate_kwargs(self) -> dict:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": False, "num_beams": 1}
        if getattr(self.model.generation_config, "lang_to_id", None):  # multilingual checkpoints
            kwargs.update(language="en", task="transcribe")
        return kwargs

    @torch.no_grad()
    def _transcribe_batch_transformers(self, clips: list[np.ndarray]) -> list[str]:
        features = self.processor.feature_extractor(
            [clip.astype(np.float32) for clip in clips], sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features  # (B, n_mels, 3000): log-mel of 30 s, zero-padded
        features = features.to(self.device, dtype=self.model.dtype)
        ids = self.model.generate(features, **self._generate_kwargs())  # (B, L)
        return [text.strip() for text in self.processor.batch_decode(ids, skip_special_tokens=True)]

    @torch.no_grad()
    def _transcribe_batch_openai(self, clips: list[np.ndarray]) -> list[str]:
        whisper = _import_openai_whisper()
        # one clip at a time: log_mel_spectrogram normalises by the maximum of its whole input
        mel = torch.stack([
            whisper.log_mel_spectrogram(
                whisper.pad_or_trim(torch.from_numpy(clip.astype(np.float32))), self.model.dims.n_mels, device=self.device
            )
            for clip in clips
        ])  # (B, n_mels, 3000): log-mel of 30 s, zero-padded
        sample_len = min(self.max_new_tokens, self.model.dims.n_text_ctx // 2)  # n_text_ctx // 2: Whisper's own limit
        options = whisper.DecodingOptions(
            task="transcribe", language="en", temperature=0.0, sample_len=sample_len, without_timestamps=True, fp16=False,
        )
        return [result.text.strip() for result in whisper.decode(self.model, mel, options)]

    def __call__(self, audio: AudioInput) -> list[str]:
        """Transcribe every clip of ``audio`` (16 kHz); one string per clip."""
        clips = _clips(audio, "WhisperRecognizer", SAMPLE_RATE)
        for i, clip in enumerate(clips):
            if clip.size > WHISPER_MAX_SECONDS * SAMPLE_RATE:
                log.warning("WhisperRecognizer: clip %d is %.1f s; Whisper reads only the first 30 s", i, clip.size / SAMPLE_RATE)
        transcribe = self._transcribe_batch_transformers if self.backend == "transformers" else self._transcribe_batch_openai
        texts: list[str] = []
        for start in range(0, len(clips), self.batch_size):
            texts += transcribe(clips[start : start + self.batch_size])
        return texts


Recognizer = PocketSphinxRecognizer | WhisperRecognizer


def make_recognizer(spec: str = "pocketsphinx", device: str | torch.device = "cpu", **kwargs: Any) -> Recognizer:
    """Build the recogniser named by ``spec``.

    Args:
        spec: ``"pocketsphinx"``, a Whisper registry name (``"whisper_base_en"``...), the path
            of an OpenAI ``.pt`` checkpoint, a transformers hub id or a ``save_pretrained`` folder.
        device: where a Whisper model runs.
        **kwargs: further :class:`WhisperRecognizer` arguments (``batch_size``, ``max_new_tokens``).

    Raises:
        FileNotFoundError: the Whisper weights are not here (the message says where to get them).
        ImportError: an OpenAI checkpoint without the ``openai-whisper`` package.
    """
    if spec == "pocketsphinx":
        return PocketSphinxRecognizer()
    return WhisperRecognizer(spec, device=device, **kwargs)
