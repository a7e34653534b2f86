"""A synthetic talking-face corpus that needs no download: drawn faces speaking eSpeak NG speech.

Every clip is one speaker saying one generated English sentence. The speech comes from the
eSpeak NG library shipped in the ``espeakng-loader`` wheel (called with :mod:`ctypes`); the face
is drawn with PIL (at twice the size, then box-downsampled, so edges are anti-aliased) and its
mouth opens with the speech energy of each 25 fps frame, shaped by the phoneme being spoken
(open vowels wide open, ``p b m`` closed, rounded vowels narrow). Eyes blink and the head moves
a few pixels and rotates by about a degree. Each speaker has its own eSpeak voice (English
variants and accents, pitch, rate) and its own face; speakers are split speaker-disjoint into
train / val / test (clips go round-robin over train, val, test, then the other train speakers,
so even a 3-clip corpus has all three splits). Everything is deterministic for a seed: the same
seed gives the same metadata, decoded pixels and audio, whatever the number of workers.

On-disk layout::

    <root>/
      clips/<key>.mp4      # H.264 + AAC, 25 fps, 16 kHz mono; key = f"{speaker}_{index:04d}"
      metadata.jsonl       # one JSON object per clip (fields below), in the order they were planned
      corpus.json          # {"seed", "num_clips", "size", "fps": 25, "sample_rate": 16000,
                           #  "version": 1, "speakers": {spk: {"voice", "pitch", "rate",
                           #                                  "face_id", "split"}}}

``metadata.jsonl`` fields: ``key``, ``speaker``, ``voice`` (eSpeak voice spec such as
``"en-us+m1"``), ``face_id``, ``transcript``, ``split`` (``train``/``val``/``test``),
``duration`` (s), ``num_frames``, ``fps``, ``sample_rate``, ``width``, ``height``, ``face_box``
``[x0, y0, x1, y1]`` (pixels, frame 0), ``landmarks`` ``[[x, y]] * 5`` at frame 0 in MTCNN order
(left eye, right eye, nose, left mouth corner, right mouth corner; "left" = smaller x),
``mouth_center`` ``[x, y]`` at frame 0 and ``mouth_open`` (one float in [0, 1] per frame: the
opening that was drawn). Frame 0 shows the head in its rest pose, so the geometry holds there.

A corpus is built in a temporary sibling folder and renamed into place when complete:
``corpus.json`` exists only in a finished corpus.

Example:
    >>> root = build_demo_corpus("data/demo", num_clips=100)  # doctest: +SKIP
    >>> wav, phonemes = synthesize("Hello there.", "spk09")  # a speaker's voice  # doctest: +SKIP
    >>> wav, phonemes = synthesize("Hello there.", "en-gb-x-rp+m5", rate=160)  # doctest: +SKIP
    >>> image = render_face(3, size=256)  # (256, 256, 3) uint8  # doctest: +SKIP

Command line: ``python -m datamodules.demo_corpus --root data/demo [--num-clips N --seed S
--size P --workers W]``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import math
import multiprocessing
import os
import pickle
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np
from PIL import Image, ImageDraw
from scipy.signal import resample_poly
from tqdm.auto import tqdm

from common.files import replace_folder
from common.workers import exit_with_parent
from datamodules import wordlist
from datamodules.conventions import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from datamodules.media import write_mp4

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
VERSION: int = 1
MOUTH_INTERIOR_RGB: tuple[int, int, int] = (92, 14, 30)
"""Colour of the open mouth's interior; used nowhere else in a face, so it can be measured."""


# --------------------------------------------------------------------------------------------
# Speakers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Speaker:
    """One identity of the corpus: an eSpeak voice spec with pitch and rate, and a face."""

    name: str
    voice: str
    """eSpeak NG voice spec ``language[+variant]``, e.g. ``"en-gb-scotland+m3"``."""
    pitch: int
    """eSpeak base pitch, 0-100 (50 is the voice's default)."""
    rate: int
    """Speaking rate in words per minute (eSpeak default 175)."""
    face_id: int
    split: str


SPEAKERS: tuple[Speaker, ...] = (
    Speaker("spk00", "en-us+m1", 42, 165, 0, "train"),
    Speaker("spk01", "en-us+belinda", 55, 170, 1, "train"),
    Speaker("spk02", "en+m3", 50, 160, 2, "train"),
    Speaker("spk03", "en-gb-scotland+annie", 58, 165, 3, "train"),
    Speaker("spk04", "en-gb-x-rp+m5", 38, 175, 4, "train"),
    Speaker("spk05", "en-029+f1", 55, 160, 5, "train"),
    Speaker("spk06", "en-gb-x-gbclan+m2", 46, 170, 6, "train"),
    Speaker("spk07", "en-us+f4", 66, 180, 7, "train"),
    Speaker("spk08", "en-gb-x-gbcwmd+m4", 44, 165, 8, "val"),
    Speaker("spk09", "en-us+anika", 55, 170, 9, "test"),
)
"""The default speaker table: 8 train, 1 val and 1 test speaker, ten distinct voices.

The variants ``f2``, ``f3`` and ``f5`` of eSpeak NG 1.52 are left out: their output changes from
one process to the next (they read memory that is never set), which would break determinism.
"""

# Clips go round-robin over this order, so that even a corpus of 3 clips has all three splits.
_ROUND_ROBIN: tuple[int, ...] = (0, 8, 9, 1, 2, 3, 4, 5, 6, 7)


# --------------------------------------------------------------------------------------------
# eSpeak NG through ctypes
# --------------------------------------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH = 1, 3


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` of speak_lib.h."""

    _fields_ = [
        ("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
        ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p), ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class PhonemeEvent(NamedTuple):
    """A phoneme's start in the synthesised speech (eSpeak mnemonic, stress marks removed)."""

    time: float
    """Seconds from the start of the returned waveform."""
    phoneme: str


class _ESpeak:
    """The eSpeak NG library of ``espeakng-loader``, initialised once per process (see :func:`_engine`)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ModuleNotFoundError as err:  # pragma: no cover - a declared dependency
            raise ModuleNotFoundError("the demo corpus needs eSpeak NG: pip install espeakng-loader") from err
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        data = espeakng_loader.get_data_path().encode()
        self.sample_rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.sample_rate}) with data at {data.decode()}")
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, str]] = []
        self.callback = _SynthCallback(self._on_audio)  # kept alive as long as the engine
        self.lib.espeak_SetSynthCallback(self.callback)
        self.lock = threading.Lock()

    def _on_audio(self, wav, num_samples: int, events) -> int:
        if num_samples > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_PHONEME:
                self.events.append((events[i].audio_position, events[i].id.string.decode("utf-8", "replace")))
            i += 1
        return 0

    def synth(self, text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """(S,) int16 samples at ``self.sample_rate`` and (ms, phoneme) events of ``text``."""
        with self.lock:
            status = self.lib.espeak_SetVoiceByName(voice.encode())
            if status != 0:
                raise ValueError(f"eSpeak NG has no voice {voice!r} (status {status}); expected "
                                 "'language[+variant]' such as 'en-us+f2'")
            self.lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
            self.lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            self.chunks, self.events = [], []
            encoded = text.encode("utf-8")
            status = self.lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status} on {text!r}")
            wav = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
            return wav, list(self.events)


_ENGINE: _ESpeak | None = None
_ENGINE_LOCK = threading.Lock()
_IN_CHILD = False


def _engine() -> _ESpeak:
    """The process' eSpeak engine, initialised on first use (forked workers inherit it)."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _ESpeak()
        return _ENGINE


def _in_fresh_engine(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a child forked from this process, whose eSpeak engine has never spoken.

    eSpeak NG carries state from one utterance to the next in function statics (the pitch
    flutter and wave phases) that no API call resets, so the same text comes out slightly
    different depending on what was said before. This process only initialises the engine;
    each call speaks in a child forked from that untouched state, with libc's ``rand()`` (which
    eSpeak uses for noise) re-seeded, so its result depends on its arguments alone. Without
    ``os.fork`` (Windows) ``fn`` runs here, and is deterministic per process only.
    """
    global _IN_CHILD
    if _IN_CHILD or not hasattr(os, "fork"):
        return fn(*args)
    _engine()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: compute, send the pickled result, exit without cleanup handlers
        code = 1
        try:
            os.close(read_fd)
            _IN_CHILD = True
            ctypes.CDLL(None).srand(0)  # the same noise sequence whatever the process did before
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(_pickled_call(fn, args))
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"the eSpeak NG child process died (wait status {status}) in {fn.__name__}")
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value


def _pickled_call(fn: Callable[..., Any], args: tuple) -> bytes:
    try:
        return pickle.dumps((True, fn(*args)))
    except Exception as err:  # noqa: BLE001 - any error goes back to the parent, which raises it
        try:
            return pickle.dumps((False, err))
        except Exception:  # noqa: BLE001 - an unpicklable error goes back as its text
            return pickle.dumps((False, RuntimeError(f"{type(err).__name__}: {err}")))


def synthesize(text: str, voice: str = "en-us", rate: int = 175,
               pitch: int = 50) -> tuple[np.ndarray, list[PhonemeEvent]]:
    """Speak ``text`` with eSpeak NG; 16 kHz mono float32 and the phoneme timing.

    The result depends on the arguments alone: each call speaks from the engine's freshly
    initialised state (see :func:`_in_fresh_engine`).

    Args:
        text: UTF-8 English text, non-empty.
        voice: eSpeak voice spec ``language[+variant]`` (``"en-us"``, ``"en-gb-x-rp+m5"``), or a
            speaker name of :data:`SPEAKERS` (``"spk03"``), which also sets its pitch and rate.
        rate: words per minute (80-450); ignored for a speaker name.
        pitch: base pitch 0-100; ignored for a speaker name.

    Returns:
        ``(wav, events)``: (S,) float32 in [-1, 1] at 16 kHz, and one :class:`PhonemeEvent` per
        phoneme, in time order.

    Raises:
        ValueError: empty ``text``, ``rate``/``pitch`` out of range, or an unknown voice.
    """
    return _in_fresh_engine(_synthesize_here, text, voice, rate, pitch)


def _synthesize_here(text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, list[PhonemeEvent]]:
    if not text or not text.strip():
        raise ValueError(f"text must be non-empty, got {text!r}")
    speaker = next((s for s in SPEAKERS if s.name == voice), None)
    if speaker is not None:
        voice, rate, pitch = speaker.voice, speaker.rate, speaker.pitch
    if not 80 <= rate <= 450 or not 0 <= pitch <= 100:
        raise ValueError(f"rate must be in [80, 450] and pitch in [0, 100], got rate={rate}, pitch={pitch}")
    engine = _engine()
    raw, events = engine.synth(text, voice, rate, pitch)
    wav = resample_poly(raw.astype(np.float32) / 32768.0, SAMPLE_RATE, engine.sample_rate)  # (S,) 16 kHz
    wav = np.clip(wav, -1.0, 1.0).astype(np.float32)
    phonemes = [PhonemeEvent(ms / 1000.0, name.strip("',%=")) for ms, name in events]
    return wav, [p for p in phonemes if p.phoneme]


# --------------------------------------------------------------------------------------------
# Sentences
# --------------------------------------------------------------------------------------------


def make_sentence(rng: np.random.Generator, level: int) -> str:
    """A grammatical English sentence from :mod:`datamodules.wordlist`, longer for larger ``level``.

    Args:
        rng: the source of every choice (the sentence is a function of its state).
        level: 0 (two or three words) to 7 (two clauses with objects, places and times).
    """
    level = int(np.clip(level, 0, 7))
    clauses = [_clause(rng, min(level, 3))]
    if level >= 4:
        clauses.append(_clause(rng, level - 4))
    text = f" {_pick(rng, wordlist.CONJUNCTIONS)} ".join(clauses)
    return text[0].upper() + text[1:] + "."


def _pick(rng: np.random.Generator, words: Sequence[str]) -> str:
    return words[int(rng.integers(len(words)))]


def _clause(rng: np.random.Generator, extras: int) -> str:
    """Subject + verb phrase, plus ``extras`` (0-3) optional parts."""
    if rng.random() < 0.4:
        subject = _pick(rng, wordlist.NAMES)
    else:
        adjective = _pick(rng, wordlist.ADJECTIVES) + " " if extras >= 2 else ""
        subject = "the " + adjective + _pick(rng, wordlist.BEINGS)
    if extras == 0 or rng.random() < 0.35:
        words = [subject, _pick(rng, wordlist.VERBS_INTRANSITIVE)]
        if extras >= 1:
            words.append(_pick(rng, wordlist.ADVERBS))
    else:
        adjective = _pick(rng, wordlist.ADJECTIVES) + " " if rng.random() < 0.5 else ""
        words = [subject, _pick(rng, wordlist.VERBS_PAST), "the", adjective + _pick(rng, wordlist.NOUNS)]
    if extras >= 2:
        words += [_pick(rng, wordlist.PREPOSITIONS), _pick(rng, wordlist.PLACES)]
    if extras >= 3:
        words.append(_pick(rng, wordlist.TIMES))
    return " ".join(words)


# --------------------------------------------------------------------------------------------
# Mouth movement from speech
# --------------------------------------------------------------------------------------------

# (opening 0-1, rounding 0-1) by eSpeak phoneme mnemonic; the first matching prefix wins.
_VISEMES: tuple[tuple[str, float, float], ...] = (
    ("aI", 0.95, 0.0), ("aU", 0.9, 0.3), ("a", 1.0, 0.0), ("A", 1.0, 0.0), ("V", 0.85, 0.0),
    ("0", 0.85, 0.5), ("O", 0.75, 0.8), ("o", 0.65, 0.9), ("u", 0.4, 1.0), ("U", 0.45, 0.9),
    ("e", 0.7, 0.0), ("E", 0.7, 0.0), ("3", 0.55, 0.2), ("@", 0.5, 0.0), ("i", 0.45, 0.0), ("I", 0.45, 0.0),
    ("p", 0.0, 0.0), ("b", 0.0, 0.0), ("m", 0.0, 0.0), ("f", 0.12, 0.0), ("v", 0.12, 0.0), ("w", 0.25, 1.0),
    ("_", 0.0, 0.0),
)
_CONSONANT = (0.3, 0.0)
_DYNAMIC_RANGE_DB = 30.0
_QUIETEST_PEAK_DB = -40.0  # RMS of the loudest frame is taken as at least this (dB full scale)


def _viseme(phoneme: str) -> tuple[float, float]:
    for prefix, opening, rounding in _VISEMES:
        if phoneme.startswith(prefix):
            return opening, rounding
    return _CONSONANT


def mouth_track(wav: np.ndarray, events: Sequence[PhonemeEvent], num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Mouth opening and lip rounding per 25 fps frame, driven by ``wav`` and its phonemes.

    The opening is the frame's speech level (RMS in dB over a 30 dB range below the loudest frame,
    or below -40 dBFS when the loudest is quieter than that)
    times the phonemes' openness, weighted by how much of the frame each phoneme covers.

    Args:
        wav: (S,) float32 16 kHz speech; frame ``f`` covers samples ``[640 f, 640 (f + 1))``.
        events: phoneme starts in seconds from sample 0 of ``wav``, in time order.
        num_frames: number of video frames T.

    Returns:
        ``(opening, rounding)``: two (T,) float32 arrays in [0, 1].
    """
    padded = np.zeros(num_frames * SAMPLES_PER_FRAME, np.float32)
    padded[: min(wav.size, padded.size)] = wav[: padded.size]
    rms = np.sqrt(np.mean(padded.reshape(num_frames, SAMPLES_PER_FRAME) ** 2, axis=1))  # (T,)
    level_db = 20.0 * np.log10(rms + 1e-6)
    loudest = max(float(level_db.max()), _QUIETEST_PEAK_DB)  # a silent clip keeps its mouth closed
    level = np.clip((level_db - loudest + _DYNAMIC_RANGE_DB) / _DYNAMIC_RANGE_DB, 0.0, 1.0)
    shape = np.zeros((num_frames, 2))  # (T, [opening, rounding]) coverage-weighted sums
    covered = np.zeros(num_frames)
    ends = [e.time for e in events[1:]] + [events[-1].time + 0.1] if events else []
    for event, end in zip(events, ends):
        first, last = int(event.time * FPS), min(math.ceil(end * FPS), num_frames)
        for f in range(first, last):
            overlap = min(end, (f + 1) / FPS) - max(event.time, f / FPS)
            if overlap > 0:
                shape[f] += overlap * np.asarray(_viseme(event.phoneme))
                covered[f] += overlap
    shape /= np.maximum(covered, 1e-9)[:, None]
    return (level * shape[:, 0]).astype(np.float32), shape[:, 1].astype(np.float32)


# --------------------------------------------------------------------------------------------
# Faces
# --------------------------------------------------------------------------------------------

_SKIN = ((255, 224, 196), (241, 194, 160), (224, 172, 132), (198, 140, 100), (170, 112, 78),
         (141, 93, 63), (112, 72, 50), (236, 188, 150))
_HAIR = ((30, 24, 22), (72, 48, 30), (120, 80, 45), (200, 160, 95), (150, 60, 30), (140, 140, 140), (20, 20, 30))
_IRIS = ((70, 110, 160), (90, 60, 35), (60, 120, 70), (50, 40, 30), (110, 120, 130))
_BACKGROUND = ((150, 190, 220), (220, 200, 160), (170, 210, 170), (210, 170, 190), (190, 190, 200),
               (240, 220, 200), (120, 150, 180), (200, 220, 230))
_CLOTHES = ((40, 60, 120), (150, 40, 40), (40, 110, 70), (200, 200, 200), (60, 60, 60), (180, 140, 40))
_HAIR_STYLES = ("bald", "short", "fringe", "side", "long", "curly")


@dataclass(frozen=True)
class FaceParams:
    """Geometry (fractions of the image side) and colours of one face; see :func:`face_params`."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    iris: tuple[int, int, int]
    background: tuple[tuple[int, int, int], tuple[int, int, int]]
    clothes: tuple[int, int, int]
    hair_style: str
    glasses: bool
    center: tuple[float, float]
    face_rx: float
    face_ry: float
    jaw: float
    eye_dx: float
    eye_dy: float
    eye_rx: float
    eye_ry: float
    nose_dy: float
    mouth_dy: float
    mouth_rx: float
    lip: float
    hairline: float


def mouth_opening(frames: np.ndarray, center: Sequence[float], size: int) -> np.ndarray:
    """(T,) mouth opening of rendered or generated frames: mouth-interior-coloured pixels near the mouth.

    The corpus draws the open mouth's interior in :data:`MOUTH_INTERIOR_RGB`; the count of pixels
    within 45 RGB units of it, in a box of 0.26 x 0.17 frame sides around the mouth (margins cover
    the head motion), measures how far the mouth is open. The corpus' own test checks it against the
    speech; the learning benchmark and the demo measure generated videos with it.

    Args:
        frames: (T, H, W, 3) uint8 RGB, H = W = ``size``.
        center: ``[x, y]`` of the mouth in pixels of these frames.
        size: frame side in pixels.
    """
    cx, cy = (round(float(v)) for v in center)
    hw, hh = max(1, int(0.13 * size)), max(1, int(0.085 * size))
    region = frames[:, max(0, cy - hh): cy + hh, max(0, cx - hw): cx + hw].astype(np.float64)  # (T, h, w, 3)
    distance = np.linalg.norm(region - np.asarray(MOUTH_INTERIOR_RGB, np.float64), axis=-1)  # (T, h, w)
    return (distance < 45).sum(axis=(1, 2))


def face_params(face_id: int) -> FaceParams:
    """The face of identity ``face_id`` (any int >= 0); the same id always gives the same face."""
    if face_id < 0:
        raise ValueError(f"face_id must be >= 0, got {face_id}")
    rng = np.random.default_rng([face_id, 7919])
    u = lambda lo, hi: float(rng.uniform(lo, hi))
    jitter = lambda rgb, d: tuple(int(np.clip(c + rng.integers(-d, d + 1), 0, 255)) for c in rgb)
    bg = _BACKGROUND[(face_id * 3 + int(rng.integers(3))) % len(_BACKGROUND)]
    return FaceParams(
        skin=jitter(_SKIN[face_id % len(_SKIN)], 8), hair=jitter(_HAIR[int(rng.integers(len(_HAIR)))], 10),
        iris=_IRIS[int(rng.integers(len(_IRIS)))], background=(jitter(bg, 20), jitter(bg, 40)),
        clothes=_CLOTHES[int(rng.integers(len(_CLOTHES)))], hair_style=_HAIR_STYLES[face_id % len(_HAIR_STYLES)],
        glasses=bool(rng.random() < 0.3), center=(u(0.48, 0.52), u(0.45, 0.48)),
        face_rx=u(0.24, 0.29), face_ry=u(0.31, 0.36), jaw=u(0.0, 0.35), eye_dx=u(0.095, 0.115),
        eye_dy=u(-0.06, -0.035), eye_rx=u(0.042, 0.055), eye_ry=u(0.022, 0.03), nose_dy=u(0.06, 0.08),
        mouth_dy=u(0.16, 0.18), mouth_rx=u(0.065, 0.085), lip=u(0.012, 0.018), hairline=u(0.45, 0.62),
    )


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 48) -> np.ndarray:
    """(n, 2) polygon points of an axis-aligned ellipse."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _shade(rgb: Sequence[int], factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in rgb)


def _mix(a: Sequence[int], b: Sequence[int], w: float) -> tuple[int, int, int]:
    return tuple(round((1 - w) * x + w * y) for x, y in zip(a, b))


class FaceRenderer:
    """Draws frames of one face at ``size`` x ``size`` with a given mouth, blink and head pose.

    Shapes are polygons in image pixels, moved by the head's rotation and translation and drawn
    at twice the size, then box-downsampled (anti-aliasing). The background and shoulders stay still.

    Args:
        face_id: identity (see :func:`face_params`).
        size: output side in pixels (even, >= 64).
    """

    def __init__(self, face_id: int, size: int = 256) -> None:
        if size < 64 or size % 2:
            raise ValueError(f"size must be an even number of pixels >= 64, got {size}")
        self.face_id, self.size, self.p = face_id, size, face_params(face_id)
        s, p = float(size), self.p
        self.cx, self.cy = p.center[0] * s, p.center[1] * s
        self.rx, self.ry = p.face_rx * s, p.face_ry * s  # face half width and half height (pixels)
        self.pivot = np.array([self.cx, self.cy + self.ry])  # the chin: the head turns on the neck
        eye_y = self.cy + p.eye_dy * s
        self.eyes = [(self.cx - p.eye_dx * s, eye_y), (self.cx + p.eye_dx * s, eye_y)]
        self.nose = (self.cx, self.cy + p.nose_dy * s)
        self.mouth = (self.cx, self.cy + p.mouth_dy * s)
        self.background = self._background()

    # ---- geometry at frame 0 ------------------------------------------------------------

    def mouth_halfwidth(self, opening: float = 0.0, rounding: float = 0.0) -> float:
        """Half the lip width in pixels: rounded lips are narrower, an open mouth slightly too."""
        return self.p.mouth_rx * self.size * (1.0 - 0.3 * rounding) * (1.0 - 0.08 * opening)

    def landmarks(self, opening: float = 0.0, rounding: float = 0.0) -> list[list[float]]:
        """Five points in MTCNN order (left eye, right eye, nose, left and right mouth corner), rest pose."""
        w = self.mouth_halfwidth(opening, rounding)
        (mx, my) = self.mouth
        points = [self.eyes[0], self.eyes[1], self.nose, (mx - w, my), (mx + w, my)]
        return [[round(float(x), 2), round(float(y), 2)] for x, y in points]

    def face_box(self) -> list[float]:
        """``[x0, y0, x1, y1]`` of the face (cheek to cheek, forehead to chin), rest pose."""
        box = [self.cx - self.rx, self.cy - 0.75 * self.ry, self.cx + self.rx, self.cy + self.ry]
        return [round(float(np.clip(v, 0, self.size)), 2) for v in box]

    # ---- drawing ------------------------------------------------------------------------

    def _background(self) -> Image.Image:
        """Still part at 2x: vertical gradient, shoulders and neck."""
        s2, p = 2 * self.size, self.p
        t = np.linspace(0.0, 1.0, s2)[:, None, None]  # (2S, 1, 1)
        top, bottom = np.asarray(p.background[0], float), np.asarray(p.background[1], float)
        pixels = np.broadcast_to((1 - t) * top + t * bottom, (s2, s2, 3)).astype(np.uint8)
        image = Image.fromarray(np.ascontiguousarray(pixels))
        draw = ImageDraw.Draw(image)
        neck_w, chin = 0.09 * self.size, self.cy + 0.8 * p.face_ry * self.size
        draw.rectangle([2 * (self.cx - neck_w), 2 * chin - 40, 2 * (self.cx + neck_w), s2], fill=_shade(p.skin, 0.85))
        shoulders = _ellipse(self.cx, 1.08 * self.size, 0.45 * self.size, 0.22 * self.size) * 2
        draw.polygon(shoulders.ravel().tolist(), fill=p.clothes)
        return image

    def frame(self, opening: float = 0.0, rounding: float = 0.0, blink: float = 0.0,
              dx: float = 0.0, dy: float = 0.0, angle: float = 0.0) -> np.ndarray:
        """One (size, size, 3) uint8 RGB frame.

        Args:
            opening: mouth opening in [0, 1].
            rounding: lip rounding in [0, 1] (narrower mouth).
            blink: eyelid closure in [0, 1].
            dx, dy: head translation in pixels.
            angle: head rotation in degrees (counter-clockwise on screen) about the chin.
        """
        image = self.background.copy()
        draw = ImageDraw.Draw(image)
        a = math.radians(angle)
        rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])  # y points down
        shift = self.pivot + np.array([dx, dy])

        def poly(points: np.ndarray, fill=None, outline=None, width: int = 1, closed: bool = True) -> None:
            moved = ((points - self.pivot) @ rot.T + shift) * 2.0  # (n, 2) at 2x
            if fill is not None:
                draw.polygon(moved.ravel().tolist(), fill=fill)
            if outline is not None:
                line = moved.ravel().tolist() + (moved[0].tolist() if closed else [])
                draw.line(line, fill=outline, width=width, joint="curve")

        self._draw_head(poly)
        self._draw_eyes(poly, blink)
        self._draw_mouth(poly, opening, rounding)
        return np.asarray(image.reduce(2))

    def _outline(self, scale: float = 1.0, n: int = 64) -> np.ndarray:
        """(n, 2) face outline: an ellipse whose lower half narrows towards the chin by ``jaw``."""
        t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
        narrow = 1.0 - self.p.jaw * np.clip(np.sin(t), 0, None) ** 2
        return np.stack([self.cx + scale * self.rx * np.cos(t) * narrow, self.cy + scale * self.ry * np.sin(t)], 1)

    def _hair_cap(self) -> np.ndarray | None:
        """Polygon of the hair on the head (None when bald)."""
        style = self.p.hair_style
        if style == "bald":
            return None
        t = np.linspace(np.pi, 2.0 * np.pi, 33)  # over the top, left to right
        bump = 1.0 + (0.06 * np.abs(np.sin(6 * t)) if style == "curly" else 0.0)
        top = np.stack([self.cx + 1.07 * self.rx * np.cos(t) * bump, self.cy + 1.1 * self.ry * np.sin(t) * bump], 1)
        depth = {"fringe": 0.3, "side": 0.45}.get(style, self.p.hairline)  # of the hairline, in face half heights
        u = np.linspace(1.0, -1.0, 17)  # hairline from right temple back to left temple
        lift = (1.0 - u**2) * (0.02 if style == "fringe" else 0.25) + (0.15 * u if style == "side" else 0)
        height = 0.12 + (depth - 0.12) * np.clip(0.6 + lift, 0, 1.2)
        line = np.stack([self.cx + self.rx * u, self.cy - self.ry * height], 1)
        return np.concatenate([top, line])

    def _draw_head(self, poly) -> None:
        s, p = self.size, self.p
        if p.hair_style == "long":
            poly(_ellipse(self.cx, self.cy + 0.12 * self.ry, 1.3 * self.rx, 1.2 * self.ry), fill=p.hair)
        for side in (-1, 1):  # ears
            poly(_ellipse(self.cx + side * 0.97 * self.rx, self.cy, 0.035 * s, 0.06 * s, 24), fill=_shade(p.skin, 0.92))
        poly(self._outline(), fill=p.skin)
        cap = self._hair_cap()
        if cap is not None:
            poly(cap, fill=p.hair)
        brow = _shade(p.hair, 0.8) if p.hair_style != "bald" else _shade(p.skin, 0.45)
        erx, ery = p.eye_rx * s, p.eye_ry * s
        for (ex, ey), side in zip(self.eyes, (-1, 1)):  # eyebrows: an arc and back, 1.2 % of the side lower
            arc = np.array([[ex - side * 1.2 * erx, ey - 1.3 * ery - 0.03 * s], [ex, ey - 1.5 * ery - 0.035 * s],
                            [ex + side * 1.1 * erx, ey - 1.2 * ery - 0.03 * s]])
            poly(np.concatenate([arc, arc[::-1] + [0, 0.012 * s]]), fill=brow)
        nx, ny = self.nose
        ridge = np.array([[nx, self.eyes[0][1] + 0.02 * s], [nx + 0.03 * s, ny + 0.01 * s],
                          [nx - 0.03 * s, ny + 0.01 * s]])
        poly(ridge, fill=_shade(p.skin, 0.93))
        for side in (-1, 1):
            poly(_ellipse(nx + side * 0.016 * s, ny + 0.008 * s, 0.009 * s, 0.005 * s, 16), fill=_shade(p.skin, 0.72))

    def _draw_eyes(self, poly, blink: float) -> None:
        s, p = self.size, self.p
        lid = float(np.clip(1.0 - blink, 0.0, 1.0))
        rx, ry = p.eye_rx * s, p.eye_ry * s
        for ex, ey in self.eyes:
            if lid > 0.12:
                poly(_ellipse(ex, ey, rx, ry * lid, 32), fill=(245, 245, 240))
                poly(_ellipse(ex, ey, 0.85 * ry, 0.85 * ry * min(1.0, lid * 1.15), 24), fill=p.iris)
                poly(_ellipse(ex, ey, 0.4 * ry, 0.4 * ry * lid, 16), fill=(15, 15, 20))
                poly(_ellipse(ex + 0.25 * ry, ey - 0.3 * ry * lid, 0.15 * ry, 0.15 * ry, 12), fill=(255, 255, 255))
            upper = _ellipse(ex, ey, rx, ry * max(lid, 0.05), 32)[16:]  # upper half: the lid line
            poly(upper, outline=_shade(p.skin, 0.35), width=max(2, int(0.008 * s)), closed=False)
            if p.glasses:
                rim = _ellipse(ex, ey, 1.6 * rx, 2.4 * ry + 0.01 * s, 32)
                poly(rim, outline=(35, 35, 40), width=max(2, int(0.01 * s)))

    def _draw_mouth(self, poly, opening: float, rounding: float) -> None:
        s, p = self.size, self.p
        mx, my = self.mouth
        w = self.mouth_halfwidth(opening, rounding)
        inner = float(np.clip(opening, 0.0, 1.0)) * 0.05 * s  # half height of the opening
        lip = p.lip * s
        poly(_ellipse(mx, my, w, inner + lip, 40), fill=_mix(p.skin, (175, 55, 70), 0.45))
        if inner > 0.15:
            hole = _ellipse(mx, my, 0.85 * w, inner, 40)
            poly(hole, fill=MOUTH_INTERIOR_RGB)
            teeth = hole[hole[:, 1] < my - 0.55 * inner]
            if len(teeth) >= 3 and inner > 0.012 * s:
                poly(teeth, fill=(235, 232, 220))
        else:  # closed lips: a line between the corners
            seam = np.array([[mx - w, my], [mx + w, my]])
            poly(seam, outline=_shade(p.skin, 0.45), width=max(2, int(0.006 * s)), closed=False)


def render_face(face_id: int, size: int = 256, mouth_open: float = 0.0, blink: float = 0.0) -> np.ndarray:
    """The face of ``face_id`` in its rest pose: (size, size, 3) uint8 RGB.

    Args:
        face_id: identity (a speaker's ``face_id``, or any other int >= 0 for a new face).
        size: side in pixels (even, >= 64).
        mouth_open: mouth opening in [0, 1].
        blink: eyelid closure in [0, 1].
    """
    return FaceRenderer(face_id, size).frame(opening=mouth_open, blink=blink)


# --------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------

_BLINK_PROFILE = (0.5, 1.0, 1.0, 0.6, 0.2)  # eyelid closure over the frames of one blink


@dataclass(frozen=True)
class _ClipJob:
    root: str
    key: str
    speaker: Speaker
    seed: int
    index: int
    size: int
    min_seconds: float
    max_seconds: float


def _speech_for_clip(rng: np.random.Generator, speaker: Speaker, min_seconds: float,
                     max_seconds: float) -> tuple[str, np.ndarray, list[PhonemeEvent]]:
    """A sentence whose speech, with 0.1-0.3 s of silence before and 0.2 s after, lasts min..max s.

    Sentences are drawn longer or shorter until one fits; if none fits within 12 tries, the
    longest that is short enough is padded with trailing silence.
    """
    lead = int(rng.uniform(0.1, 0.3) * SAMPLE_RATE)
    tail = int(0.2 * SAMPLE_RATE)
    level, fallback = int(rng.integers(2, 6)), None
    for _ in range(12):
        text = make_sentence(rng, level)
        wav, events = synthesize(text, speaker.voice, speaker.rate, speaker.pitch)
        seconds = math.ceil((lead + wav.size + tail) / SAMPLES_PER_FRAME) / FPS  # whole video frames
        if seconds > max_seconds:
            level -= 1
            continue
        if fallback is None or seconds > fallback[0]:
            fallback = (seconds, text, wav, events)
        if seconds >= min_seconds:
            break
        level += 1
    if fallback is None:
        raise RuntimeError(f"{speaker.name}: no sentence shorter than max_seconds={max_seconds} s; "
                           "raise max_seconds")
    _, text, wav, events = fallback
    total = max(lead + wav.size + tail, math.ceil(min_seconds * SAMPLE_RATE))
    total = math.ceil(total / SAMPLES_PER_FRAME) * SAMPLES_PER_FRAME  # whole video frames
    audio = np.zeros(total, np.float32)
    audio[lead : lead + wav.size] = wav
    shifted = [PhonemeEvent(e.time + lead / SAMPLE_RATE, e.phoneme) for e in events]
    return text, audio, shifted


def _blinks(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """(T,) eyelid closure in [0, 1]: a blink 0.3-1.2 s in (every clip of 1.5 s has one), then every 1.5-4 s."""
    closure = np.zeros(num_frames, np.float32)
    start = int(rng.uniform(0.3, 1.2) * FPS)
    while start < num_frames:
        for k, value in enumerate(_BLINK_PROFILE):
            if start + k < num_frames:
                closure[start + k] = value
        start += int(rng.uniform(1.5, 4.0) * FPS)
    return closure


def _head_motion(rng: np.random.Generator, num_frames: int, size: int) -> np.ndarray:
    """(T, 3) head ``dx, dy`` (pixels) and ``angle`` (degrees): slow sways, zero at frame 0."""
    t = np.arange(num_frames) / FPS  # (T,)
    amplitude = np.array([0.012 * size, 0.008 * size, 1.5])
    motion = np.zeros((num_frames, 3))
    for _ in range(2):  # two sinusoids per axis
        freq = rng.uniform(0.15, 0.6, 3)
        phase = rng.uniform(0, 2 * np.pi, 3)
        motion += 0.5 * amplitude * (np.sin(2 * np.pi * freq * t[:, None] + phase) - np.sin(phase))
    return motion


def _make_clip(job: _ClipJob) -> dict[str, Any]:
    """Synthesise, draw and write one clip; its metadata record."""
    speech_rng, rng = (np.random.default_rng([job.seed, job.index, k]) for k in (0, 1))
    speaker = job.speaker
    text, audio, events = _in_fresh_engine(_speech_for_clip, speech_rng, speaker, job.min_seconds, job.max_seconds)
    num_frames = audio.size // SAMPLES_PER_FRAME
    opening, rounding = mouth_track(audio, events, num_frames)  # (T,), (T,)
    blink = _blinks(rng, num_frames)  # (T,)
    motion = _head_motion(rng, num_frames, job.size)  # (T, 3)
    face = FaceRenderer(speaker.face_id, job.size)
    frames = np.stack([face.frame(float(opening[f]), float(rounding[f]), float(blink[f]), *motion[f])
                       for f in range(num_frames)])  # (T, H, W, 3) uint8
    write_mp4(Path(job.root) / "clips" / f"{job.key}.mp4", frames, fps=FPS, audio=audio, sample_rate=SAMPLE_RATE)
    return {
        "key": job.key, "speaker": speaker.name, "voice": speaker.voice, "face_id": speaker.face_id,
        "transcript": text, "split": speaker.split, "duration": num_frames / FPS, "num_frames": num_frames,
        "fps": FPS, "sample_rate": SAMPLE_RATE, "width": job.size, "height": job.size,
        "face_box": face.face_box(), "landmarks": face.landmarks(float(opening[0]), float(rounding[0])),
        "mouth_center": [round(float(v), 2) for v in face.mouth],
        "mouth_open": [round(float(v), 4) for v in opening],
    }


def _plan(root: Path, num_clips: int, seed: int, size: int, min_seconds: float, max_seconds: float) -> list[_ClipJob]:
    """Clips go round-robin over the speakers (train, val, test, then the other train speakers)."""
    jobs, counts = [], {s.name: 0 for s in SPEAKERS}
    for i in range(num_clips):
        speaker = SPEAKERS[_ROUND_ROBIN[i % len(_ROUND_ROBIN)]]
        key = f"{speaker.name}_{counts[speaker.name]:04d}"
        counts[speaker.name] += 1
        jobs.append(_ClipJob(str(root), key, speaker, seed, i, size, min_seconds, max_seconds))
    return jobs


def _warm_up(parent_pid: int) -> None:
    exit_with_parent(parent_pid)  # a killed build must not leave its workers behind
    _engine()  # one eSpeak initialisation per worker process, before its first clip


def _check_arguments(num_clips: int, size: int, num_workers: int, min_seconds: float, max_seconds: float) -> None:
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if size < 64 or size % 2:
        raise ValueError(f"size must be an even number of pixels >= 64, got {size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if not 1.0 <= min_seconds <= max_seconds:
        raise ValueError(f"need 1 <= min_seconds <= max_seconds, got min_seconds={min_seconds}, "
                         f"max_seconds={max_seconds}")


def build_demo_corpus(root: PathLike, num_clips: int = 100, seed: int = 0, size: int = 256, num_workers: int = 2,
                      min_seconds: float = 3.0, max_seconds: float = 6.0, progress: bool = True) -> Path:
    """Build the corpus at ``root`` (layout in the module docstring), replacing a finished one there.

    Args:
        root: destination folder; must not exist, be empty, or hold a finished corpus.
        num_clips: number of clips (round-robin over the 10 speakers).
        seed: everything (sentences, blinks, head motion) follows from it.
        size: frame side in pixels (even, >= 64).
        num_workers: worker processes (0 or 1: build in this process).
        min_seconds: shortest clip.
        max_seconds: longest clip.
        progress: show a tqdm bar.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a bad argument.
        FileExistsError: ``root`` holds something that is not a finished demo corpus.
    """
    _check_arguments(num_clips, size, num_workers, min_seconds, max_seconds)
    root = Path(root)
    if root.exists() and any(root.iterdir()) and not (root / "corpus.json").is_file():
        raise FileExistsError(f"{root} is not empty and holds no corpus.json; not overwriting it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    started = time.perf_counter()
    try:
        jobs = _plan(tmp, num_clips, seed, size, min_seconds, max_seconds)
        records = _run_jobs(jobs, num_workers, progress)
        with open(tmp / "metadata.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        speakers = {s.name: {"voice": s.voice, "pitch": s.pitch, "rate": s.rate, "face_id": s.face_id,
                             "split": s.split} for s in SPEAKERS}
        info = {"seed": seed, "num_clips": num_clips, "size": size, "fps": FPS, "sample_rate": SAMPLE_RATE,
                "version": VERSION, "speakers": speakers}
        (tmp / "corpus.json").write_text(json.dumps(info, indent=1))  # written last: marks completion
        replace_folder(tmp, root)  # a previous finished corpus there is removed after
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("demo corpus: %d clips at %s in %.1f s", num_clips, root, time.perf_counter() - started)
    return root


def _run_jobs(jobs: list[_ClipJob], num_workers: int, progress: bool) -> list[dict[str, Any]]:
    bar = {"total": len(jobs), "desc": "demo corpus", "unit": "clip", "disable": not progress}
    if num_workers <= 1:
        return [_make_clip(job) for job in tqdm(jobs, **bar)]
    with multiprocessing.get_context().Pool(num_workers, initializer=_warm_up, initargs=(os.getpid(),)) as pool:
        return list(tqdm(pool.imap(_make_clip, jobs), **bar))


def ensure_demo_corpus(root: PathLike, **kwargs: Any) -> Path:
    """``root`` if it holds a finished corpus (``corpus.json``), else :func:`build_demo_corpus` (``kwargs``)."""
    root = Path(root)
    if (root / "corpus.json").is_file():
        return root
    return build_demo_corpus(root, **kwargs)


def load_metadata(root: PathLike) -> list[dict[str, Any]]:
    """The records of ``<root>/metadata.jsonl``, one dict per clip.

    Raises:
        FileNotFoundError: ``root`` holds no finished corpus.
    """
    path = Path(root) / "metadata.jsonl"
    if not path.is_file() or not (Path(root) / "corpus.json").is_file():
        raise FileNotFoundError(f"no finished demo corpus at {root} (metadata.jsonl or corpus.json missing); "
                                "build it with python -m datamodules.demo_corpus --root ROOT")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build a corpus and print where it is and how long it took."""
    parser = argparse.ArgumentParser(description="Build the synthetic talking-face demo corpus.")
    parser.add_argument("--root", type=Path, default=Path("data/demo"), help="destination folder")
    parser.add_argument("--num-clips", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--max-seconds", type=float, default=6.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    root = build_demo_corpus(args.root, num_clips=args.num_clips, seed=args.seed, size=args.size,
                             num_workers=args.workers, min_seconds=args.min_seconds, max_seconds=args.max_seconds)
    records = load_metadata(root)
    seconds = sum(r["duration"] for r in records)
    print(f"{len(records)} clips, {seconds:.0f} s of video, at {root} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
