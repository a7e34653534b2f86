"""Transcripts and spoken language of preprocessed clips, kept in a sidecar JSONL the DataModules only read.

A transcriber turns 16 kHz mono clips into :class:`Transcript` objects (text, language, language
probability, segment timestamps). :func:`transcribe_cache` runs one over every clip of a
preprocessing cache and appends to ``<cache>/transcripts.jsonl`` (resumable: clips already in the
file are skipped). Backends are injectable; two ship here:

* :class:`WhisperTranscriber`: Whisper through ``transformers`` (hub id or local folder, loaded
  by :func:`metrics.asr.load_whisper` as for WER; batched, GPU when present). Language ID is the softmax over Whisper's language tokens at the first
  decoder step, as Whisper itself does it.
* :class:`PocketSphinxTranscriber`: pocketsphinx's bundled US-English model; no language ID
  (it reports ``en`` with probability ``None``). Good for offline tests and English-only data.

Sidecar line: ``{"dataset", "key", "text", "language", "language_prob", "segments": [{"start", "end",
"text"}]}``, segment times in seconds from the start of the *preprocessed* clip.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence, Union

import numpy as np

from datamodules.conventions import MAX_UTTERANCE_SECONDS, SAMPLE_RATE

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]
SIDECAR_NAME = "transcripts.jsonl"


@dataclass
class Transcript:
    """What a transcriber says about one clip.

    Args:
        text: the whole transcript.
        language: ISO 639-1 code (``en``), or ``None`` when unknown.
        language_prob: probability of ``language`` in [0, 1], ``None`` if the backend has no LID.
        segments: ``{"start", "end", "text"}`` dicts, seconds from the clip start, in order.
    """

    text: str
    language: Optional[str] = None
    language_prob: Optional[float] = None
    segments: list[dict[str, Any]] = field(default_factory=list)


class Transcriber(Protocol):
    """Any callable mapping a list of (S,) float32 16 kHz clips to one :class:`Transcript` each."""

    def __call__(self, wavs: Sequence[np.ndarray]) -> list[Transcript]: ...


# ------------------------------------------------------------------------------- Whisper
class WhisperTranscriber:
    """Whisper (``transformers``) transcripts, language ID and segment timestamps.

    Clips must be at most 30 s (Whisper's window); preprocessed clips are at most 20 s.

    Args:
        model: hub id or local folder of a Whisper checkpoint, or a ``WhisperForConditionalGeneration``.
        processor: a ``WhisperProcessor``; loaded from ``model`` when it is a path or id.
        device: ``cuda`` when available, else ``cpu``, unless given.
        batch_size: clips per forward pass.
        max_new_tokens: cap on generated tokens per clip.
    """

    def __init__(self, model: Any = "openai/whisper-small", processor: Any = None, device: Optional[str] = None,
                 batch_size: int = 8, max_new_tokens: int = 220) -> None:
        import torch

        from metrics.asr import load_whisper

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if isinstance(model, (str, os.PathLike)):
            dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
            model, processor = load_whisper(str(model), processor, dtype)
        if processor is None:
            raise ValueError("processor is required when model is a module")
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        lang_to_id = getattr(self.model.generation_config, "lang_to_id", None) or {}
        self._lang_codes = [code.strip("<|>") for code in lang_to_id]
        self._lang_ids = list(lang_to_id.values())

    def __call__(self, wavs: Sequence[np.ndarray]) -> list[Transcript]:
        out: list[Transcript] = []
        for i in range(0, len(wavs), self.batch_size):
            out.extend(self._batch(list(wavs[i : i + self.batch_size])))
        return out

    def _features(self, wavs: list[np.ndarray]):
        feats = self.processor.feature_extractor(wavs, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        return feats.to(self.device, self.model.dtype)  # (B, 80 or 128, 3000)

    def detect_language(self, features) -> list[tuple[Optional[str], Optional[float]]]:
        """(code, probability) per clip from the language-token logits at the first decoder step."""
        import torch

        if not self._lang_ids:
            return [(None, None)] * len(features)
        start = torch.full((len(features), 1), self.model.generation_config.decoder_start_token_id,
                           device=self.device, dtype=torch.long)
        with torch.no_grad():
            logits = self.model(input_features=features, decoder_input_ids=start).logits[:, -1]  # (B, V)
        probs = logits[:, self._lang_ids].float().softmax(-1)  # (B, languages)
        best = probs.argmax(-1)
        return [(self._lang_codes[int(j)], float(probs[b, j])) for b, j in enumerate(best)]

    def _batch(self, wavs: list[np.ndarray]) -> list[Transcript]:
        import torch

        feats = self._features(wavs)
        languages = self.detect_language(feats)
        with torch.no_grad():
            tokens = self.model.generate(feats, task="transcribe", return_timestamps=True,
                                         max_new_tokens=self.max_new_tokens)
        sequences = tokens if isinstance(tokens, torch.Tensor) else tokens["sequences"]
        out = []
        for seq, (lang, prob), wav in zip(sequences, languages, wavs):
            text, segments = self.decode(seq, len(wav) / SAMPLE_RATE)
            out.append(Transcript(text, lang, prob, segments))
        return out

    def decode(self, tokens: Any, duration: float) -> tuple[str, list[dict[str, Any]]]:
        """Text and timestamped segments (seconds, clipped to ``duration``) of one generated sequence."""
        decoded = self.processor.tokenizer.decode(tokens, skip_special_tokens=True, output_offsets=True)
        segments = [{"start": float(o["timestamp"][0]), "end": float(min(o["timestamp"][1] or duration, duration)),
                     "text": o["text"].strip()} for o in decoded.get("offsets", []) if o["timestamp"][0] is not None]
        return decoded["text"].strip(), segments


# ------------------------------------------------------------------------------- pocketsphinx
class PocketSphinxTranscriber:
    """US-English transcripts with pocketsphinx's bundled model (no language ID).

    Decoding is :class:`metrics.asr.PocketSphinxRecognizer`'s (the WER recogniser); this adds the
    segments.

    Args:
        pause_seconds: a silence at least this long ends a segment.
    """

    FILLERS = ("<s>", "</s>", "<sil>")

    def __init__(self, pause_seconds: float = 0.3) -> None:
        from metrics.asr import PocketSphinxRecognizer

        self.recognizer = PocketSphinxRecognizer(SAMPLE_RATE)
        self.pause_frames = int(round(pause_seconds * 100))  # pocketsphinx frames are 10 ms

    def __call__(self, wavs: Sequence[np.ndarray]) -> list[Transcript]:
        return [self._one(np.asarray(w, np.float32)) for w in wavs]

    def _one(self, wav: np.ndarray) -> Transcript:
        decoder = self.recognizer.decode(wav)  # no silence gate: a silent clip gives what the decoder gives
        words = [(s.word.split("(")[0], s.start_frame, s.end_frame) for s in decoder.seg()
                 if s.word not in self.FILLERS and not s.word.startswith("[")]
        segments: list[dict[str, Any]] = []
        for word, start, end in words:
            if segments and start - segments[-1]["_end"] < self.pause_frames:
                segments[-1]["text"] += " " + word
                segments[-1]["_end"] = end
            else:
                segments.append({"text": word, "_start": start, "_end": end})
        segments = [{"start": s["_start"] / 100, "end": (s["_end"] + 1) / 100, "text": s["text"]} for s in segments]
        return Transcript(" ".join(w for w, _, _ in words), "en", None, segments)


# ------------------------------------------------------------------------------- sidecar
def load_transcripts(cache_dir: PathLike) -> dict[tuple[str, str], dict]:
    """``{(dataset, key): record}`` from ``<cache>/transcripts.jsonl``; empty when there is none.

    A torn last line (a killed writer) is skipped with a warning.
    """
    path = Path(cache_dir) / SIDECAR_NAME
    out: dict[tuple[str, str], dict] = {}
    if not path.is_file():
        return out
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s line %d is not JSON (interrupted write?); ignored", path, number)
            continue
        out[(record["dataset"], record["key"])] = record
    return out


def transcribe_cache(cache_dir: PathLike, transcriber: Union[Transcriber, Callable], records: Optional[list[dict]] = None,
                     batch_size: int = 8, progress: bool = True) -> int:
    """Transcribe every cached clip not yet in the sidecar; returns how many were added.

    Args:
        cache_dir: a preprocessing cache (``manifest.jsonl``, clip folders).
        transcriber: the backend (:class:`WhisperTranscriber`, :class:`PocketSphinxTranscriber`, ...).
        records: manifest records to do (default: the whole manifest).
        batch_size: clips handed to the transcriber per call.
        progress: show a tqdm bar.
    """
    from tqdm.auto import tqdm

    from datamodules.preprocess import load_clip, load_manifest

    cache = Path(cache_dir)
    done = load_transcripts(cache)
    todo = [r for r in (records if records is not None else load_manifest(cache))
            if (r["dataset"], r["key"]) not in done]
    with open(cache / SIDECAR_NAME, "a") as handle, tqdm(total=len(todo), desc="transcribe", disable=not progress) as bar:
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            results = transcriber([load_clip(cache, r).wav() for r in chunk])
            for record, result in zip(chunk, results):
                handle.write(json.dumps({"dataset": record["dataset"], "key": record["key"], **asdict(result)}) + "\n")
            handle.flush()
            bar.update(len(chunk))
    return len(todo)


# ------------------------------------------------------------------------------- using transcripts
def is_english(metadata_language: Optional[str], transcript: Optional[dict], threshold: float = 0.8) -> tuple[bool, str]:
    """English filter: the dataset's metadata language if it has one, else Whisper's language ID.

    Returns:
        ``(keep, why)``; ``why`` is a short reason for the log and the exclusion file.
    """
    if metadata_language is not None:
        return metadata_language == "en", f"metadata language {metadata_language!r}"
    if transcript is None or transcript.get("language") is None:
        return False, "no language: neither metadata nor a transcript with language ID"
    lang, prob = transcript["language"], transcript.get("language_prob")
    if lang != "en":
        return False, f"language ID says {lang!r} (p={prob})"
    if prob is not None and prob < threshold:
        return False, f"English with p={prob:.2f} < threshold {threshold}"
    return True, f"language ID en (p={prob})"


def utterances(duration: float, transcript: Optional[dict], max_seconds: float = MAX_UTTERANCE_SECONDS,
               min_seconds: float = 0.0) -> list[tuple[float, float, str]]:
    """Cut a clip into utterances of at most ``max_seconds`` at transcript segment boundaries.

    Consecutive segments are merged while the utterance stays within ``max_seconds``; one segment
    longer than that becomes its own utterance, cut to ``max_seconds``. Without segments the
    clip is cut into equal pieces of at most ``max_seconds`` with the whole text on none of them
    (text ``""``), or the whole text when the clip fits in one piece.

    Returns:
        ``(start, end, text)`` in seconds from the clip start.
    """
    segments = [s for s in (transcript or {}).get("segments", []) if s["end"] > s["start"]]
    if not segments:
        pieces = max(1, int(np.ceil(duration / max_seconds - 1e-9)))
        text = (transcript or {}).get("text", "") if pieces == 1 else ""
        step = duration / pieces
        return [(i * step, (i + 1) * step, text) for i in range(pieces)]
    out: list[list[Any]] = []
    for seg in segments:
        start, end = max(0.0, seg["start"]), min(duration, seg["end"])
        if out and end - out[-1][0] <= max_seconds:
            out[-1][1] = end
            out[-1][2] = f"{out[-1][2]} {seg['text']}".strip()
        else:
            out.append([start, min(end, start + max_seconds), seg["text"].strip()])
    return [(a, b, t) for a, b, t in out if b - a >= min_seconds]
