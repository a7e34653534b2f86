"""Generate a narrated talking-face video from a trained NFY checkpoint.

Command line::

    python -m experiments.generate --ckpt last.ckpt --image face.jpg --voice voice.wav \\
        --text "Any text, of any length." --out out.mp4 [--steps 25 --guidance 1.0 --seed 0]
        [--sampler dpm++ --steps 10 --dtype bfloat16 --compile]

Python (what the metric suite and the tests call)::

    from experiments.generate import generate
    result = generate("last.ckpt", "face.jpg", "voice.wav", "Hello there.", out="out.mp4")

How (paper Sec. 3): the photo's face is detected (MTCNN) and cropped to the model's image size,
its face and lip masks drawn from the landmarks; the voice sample is decoded with PyAV (any
format), resampled to 16 kHz mono and its first 2 s of speech become the voice profile; the text
is split into sentences. Per sentence, speech comes first (the audio decoder runs until its stop
head fires, then the vocoder), then the video window by window, each window conditioned on the
previous window's last frames (across sentences too). Audio and video are concatenated and
muxed into one mp4, written atomically: a failed run leaves no file behind.

Bad input fails before the work with one :class:`GenerationInputError` naming the argument, the
value and what was expected. What needs no model is checked before the checkpoint is loaded: the
ranges of the options, the device, the output path, the text's characters (:data:`LATIN_SCRIPT`),
the photo (readable, at least 20 px, a face) and the voice sample. Right after loading, before any
generation: that the checkpoint is readable, each sentence's token count (``max_text_len``) and
the step count. A missing checkpoint raises ``FileNotFoundError``. The command line prints the
message as one line and exits with status 2 (``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import numbers
import re
import sys
import tempfile
import traceback
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from datamodules import face as facelib
from common import devices
from datamodules.batch import pad_text
from datamodules.conventions import FPS, HOP_LENGTH, PROFILE_SAMPLES, SAMPLE_RATE, SAMPLES_PER_FRAME
from datamodules.media import MediaError, read_audio, write_mp4
from datamodules.preprocess import PreprocessConfig
from lightning_modules import NFYLitModule
from lightning_modules.checkpoint import CheckpointError, check_checkpoint
from lightning_modules.diffusion import SAMPLERS
from lightning_modules.networks.layers import stored_architectures
from lightning_modules.pipeline import NFYPipeline

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
MIN_VOICE_RMS: float = 1e-3
"""A voice sample whose speech RMS is below this (about -60 dBFS) counts as silent."""
MAX_SENTENCE_WORDS: int = 25
"""Sentences longer than this are cut at commas, then every this many words (about 8 s)."""
MIN_IMAGE_SIDE: int = 20
"""Smallest photo side in pixels: MTCNN looks for faces of at least 20 px (and fails on less)."""
LATIN_SCRIPT: tuple[tuple[int, int], ...] = (
    (0x0020, 0x007E),  # Basic Latin: ASCII letters, digits, punctuation
    (0x00A0, 0x024F),  # Latin-1 Supplement, Latin Extended-A/B: accented letters, £ ° ½
    (0x0300, 0x036F),  # combining accents (a decomposed é)
    (0x1E00, 0x1EFF),  # Latin Extended Additional
    (0x2000, 0x206F),  # General Punctuation: dashes, curly quotes, ellipsis
    (0x20A0, 0x20CF),  # currency signs (€)
)
"""Code point ranges of the text :func:`generate` speaks (plus tab and newlines).

The DataModules keep English clips (``english_only``, on by default), so the model was trained to
speak Latin-script text. The byte-level tokenizer would encode any other script or emoji without
complaint (it never produces ``<unk>``) and the model would babble, so those characters are refused
instead, as are control and invisible format characters, even inside these ranges.
"""
CLI_FLAGS: dict[str, str] = {
    "checkpoint": "--ckpt", "image": "--image", "voice": "--voice", "text": "--text", "out": "--out",
    "num_inference_steps": "--steps", "guidance_scale": "--guidance", "seed": "--seed", "device": "--device",
    "sampler": "--sampler", "dtype": "--dtype",
}
"""The command-line flag of each :func:`generate` argument, for the CLI's error messages."""
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""``dtype`` names :func:`generate` accepts (bfloat16 / float16: the networks under autocast)."""


class GenerationInputError(ValueError):
    """A user input that generation cannot use; ``argument`` names the offending input."""

    def __init__(self, argument: str, value: Any, expected: str) -> None:
        self.argument, self.value, self.expected = argument, value, expected
        super().__init__(f"{argument}={_shown(value)}: {expected}")


def _shown(value: Any) -> str:
    """One short line for ``value`` in a message (a long text is elided in the middle)."""
    if isinstance(value, np.ndarray):
        return f"<array {value.dtype} {tuple(value.shape)}>"
    text = repr(str(value) if isinstance(value, Path) else value)
    return text if len(text) <= 100 else f"{text[:70]} ... {text[-25:]}"


@dataclass
class GenerationResult:
    """Output of :func:`generate`.

    Attributes:
        video: (T, H, W, 3) uint8 RGB frames at ``fps``.
        wav: (S,) float32 speech in [-1, 1] at ``sample_rate``; S = T * 640.
        sentences: the text pieces spoken, in order.
        path: the written mp4, or ``None`` when no ``out`` was given.
    """

    video: np.ndarray
    wav: np.ndarray
    sentences: list[str]
    path: Optional[Path] = None
    fps: int = FPS
    sample_rate: int = SAMPLE_RATE


# ---------------------------------------------------------------------------------- options
def check_options(num_inference_steps: Optional[int], guidance_scale: Optional[float], seed: int,
                  device: Union[str, torch.device]) -> torch.device:
    """Check the ranges of the generation options and that ``device`` exists here; returns the device.

    Raises:
        GenerationInputError: naming the first bad option.
    """
    if num_inference_steps is not None and not (_is_integer(num_inference_steps) and num_inference_steps >= 1):
        raise GenerationInputError("num_inference_steps", num_inference_steps,
                                   "an integer >= 1 (DDIM steps per window), or None for the checkpoint's setting")
    if guidance_scale is not None and not (isinstance(guidance_scale, numbers.Real) and math.isfinite(guidance_scale)
                                           and guidance_scale >= 0):
        raise GenerationInputError("guidance_scale", guidance_scale,
                                   "a finite number >= 0 (1 = no guidance), or None for the checkpoint's setting")
    if not (_is_integer(seed) and -(2**63) <= seed < 2**64):
        raise GenerationInputError("seed", seed, "an integer in [-2**63, 2**64) (what torch.Generator accepts)")
    return check_device(device)


def check_sampling(sampler: str, dtype: Union[str, torch.dtype]) -> torch.dtype:
    """Check the sampler name and the compute dtype (a name of :data:`DTYPES` or a torch dtype); returns the dtype.

    Raises:
        GenerationInputError: an unknown sampler or dtype.
    """
    if sampler not in SAMPLERS:
        raise GenerationInputError("sampler", sampler, f"one of {', '.join(SAMPLERS)}")
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise GenerationInputError("dtype", dtype, f"one of {', '.join(DTYPES)}")


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_device(device: Union[str, torch.device]) -> torch.device:
    """``device`` as a :class:`torch.device`, if this machine has it (:func:`common.devices.check_device`).

    Raises:
        GenerationInputError: an unknown device string, or a device this machine lacks.
    """
    try:
        return devices.check_device(device, "device")
    except ValueError as err:  # "device='...': what was expected" -> the same line, as a GenerationInputError
        raise GenerationInputError("device", device, str(err).split(": ", 1)[1]) from err


def check_output(out: Optional[PathLike], inputs: dict[str, Any]) -> Optional[Path]:
    """Check that an mp4 can be written at ``out`` without overwriting an input; returns it as a Path.

    Its folders may be missing (they are created), but the nearest existing one must be a folder
    this process can create files in (tried with a temporary file, which also covers read-only
    file systems and ACLs that permission bits do not show).

    Args:
        out: the mp4 path, or ``None`` (nothing is written).
        inputs: the other path arguments by name (``checkpoint``, ``image``, ``voice``).

    Raises:
        GenerationInputError: ``out`` is not a writable ``.mp4`` path, or it is one of ``inputs``.
    """
    if out is None:
        return None
    path = Path(out)
    if path.is_dir():
        raise GenerationInputError("out", out, "an mp4 file name; this is a folder")
    if path.suffix.lower() != ".mp4":
        raise GenerationInputError("out", out, "a file name ending in .mp4 (generate writes H.264 + AAC mp4)")
    for name, given in inputs.items():
        if isinstance(given, (str, Path)) and Path(given).exists() and path.exists() and path.samefile(given):
            raise GenerationInputError("out", out, f"a new file; this is the {name} input, which would be overwritten")
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise GenerationInputError("out", out, f"a path in a folder; {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise GenerationInputError("out", out, f"a writable place; cannot write in {folder} ({err.strerror})") from err
    return path


# ---------------------------------------------------------------------------------- text
def check_text(text: Any) -> list[str]:
    """The sentences of ``text`` after checking its type and characters (:func:`check_characters`).

    Raises:
        GenerationInputError: ``text`` is not a str, has characters outside :data:`LATIN_SCRIPT`,
            or has no letter or digit.
    """
    if not isinstance(text, str):
        raise GenerationInputError("text", text, f"a str to speak, got {type(text).__name__}")
    check_characters(text)
    return split_sentences(text)


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences (., !, ?), long ones at commas and then every 25 words.

    Raises:
        GenerationInputError: ``text`` is empty or only whitespace/punctuation.
    """
    clean = " ".join(str(text).split())
    if not any(ch.isalnum() for ch in clean):
        raise GenerationInputError("text", text, "a non-empty text with at least one letter or digit")
    pieces: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", clean):
        for part in re.split(r"(?<=[,;:])\s+", sentence) if len(sentence.split()) > MAX_SENTENCE_WORDS else [sentence]:
            words = part.split()
            pieces += [" ".join(words[i : i + MAX_SENTENCE_WORDS]) for i in range(0, len(words), MAX_SENTENCE_WORDS)]
    return [p for p in pieces if any(ch.isalnum() for ch in p)]


def check_characters(text: str) -> None:
    """Accept Latin-script text only (:data:`LATIN_SCRIPT`), the script the model was trained to speak.

    Other scripts (Chinese, Cyrillic, Arabic, ...), emoji, control and invisible format
    characters are refused rather than encoded into bytes the model never learned to speak.

    Raises:
        GenerationInputError: naming the first five such characters and their positions.
    """
    bad = [(i, ch) for i, ch in enumerate(text) if not _speakable(ch)]
    if bad:
        shown = ", ".join(f"U+{ord(ch):04X} {unicodedata.name(ch, '(control)')} at {i}" for i, ch in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise GenerationInputError("text", text, f"Latin-script text the model was trained to speak (letters with "
                                   f"or without accents, digits, punctuation); found {shown}{more}")


def _speakable(ch: str) -> bool:
    if ch in "\t\n\r":
        return True
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in LATIN_SCRIPT) and unicodedata.category(ch)[0] != "C"


def encode_text(tokenizer: Any, sentence: str) -> torch.Tensor:
    """(L,) int64 ids of ``sentence``; an unknown-token id in the result is an error."""
    ids = _encode(tokenizer, sentence)
    unk = _token_id(tokenizer, "<unk>")
    if not ids or (unk is not None and unk in ids):
        raise GenerationInputError("text", sentence, "characters the tokenizer knows (it maps some to <unk>)")
    return torch.tensor(ids, dtype=torch.long)


def encode_sentences(module: NFYLitModule, tokenizer: Any, sentences: list[str]) -> list[torch.Tensor]:
    """(L,) int64 ids per sentence, checked against the model's text length and vocabulary.

    Raises:
        GenerationInputError: a sentence longer than the model's ``max_text_len`` tokens, or ids
            beyond its vocabulary (a tokenizer other than the one it was trained with).
    """
    ids = [encode_text(tokenizer, sentence) for sentence in sentences]
    encoder = getattr(module.net, "text_encoder", None)  # the stand-in networks of the tests have none
    if encoder is None:
        return ids
    max_len, vocab = int(encoder.max_len), int(encoder.tokens.num_embeddings)
    for number, (sentence, sentence_ids) in enumerate(zip(sentences, ids, strict=True), start=1):
        if len(sentence_ids) > max_len:
            raise GenerationInputError(
                "text", sentence, f"at most {max_len} tokens per sentence (the model's max_text_len); sentence "
                f"{number} has {len(sentence_ids)}: split it with . ! or ?")
        if int(sentence_ids.max()) >= vocab:
            raise GenerationInputError(
                "tokenizer", type(tokenizer).__name__, f"ids below {vocab} (the model's vocabulary); it gives "
                f"{int(sentence_ids.max())}: not the tokenizer the model was trained with")
    return ids


# ---------------------------------------------------------------------------------- voice and face
def load_voice(voice: Union[PathLike, np.ndarray]) -> torch.Tensor:
    """(32000,) float32 voice profile: the first 2 s of speech of ``voice`` at 16 kHz.

    ``voice`` is any file PyAV decodes (resampled to 16 kHz mono) or a (S,) float array at 16 kHz.
    Leading and trailing silence is trimmed before the 2 s are taken.

    Raises:
        GenerationInputError: unreadable, not a finite (S,) float array, silent, or under 2 s of speech.
    """
    label = "array" if isinstance(voice, np.ndarray) else str(voice)
    wav = _voice_samples(voice)
    loud = np.flatnonzero(np.abs(wav) > MIN_VOICE_RMS * 10)  # samples above -40 dBFS
    if loud.size == 0 or float(np.sqrt(np.mean(wav[loud[0] : loud[-1] + 1] ** 2))) < MIN_VOICE_RMS:
        raise GenerationInputError("voice", label, "speech; the sample is silent")
    speech = wav[loud[0] : loud[-1] + 1]
    if speech.size < PROFILE_SAMPLES:
        raise GenerationInputError(
            "voice", label, f"at least 2 s of speech at 16 kHz; got {speech.size / SAMPLE_RATE:.2f} s"
        )
    return torch.from_numpy(np.clip(speech[:PROFILE_SAMPLES], -1.0, 1.0).copy())


def _voice_samples(voice: Union[PathLike, np.ndarray]) -> np.ndarray:
    """(S,) float32 samples at 16 kHz of a file or an array."""
    if not isinstance(voice, np.ndarray):
        try:
            return read_audio(voice, sample_rate=SAMPLE_RATE)
        except (MediaError, OSError) as err:
            raise GenerationInputError("voice", str(voice), f"an audio file PyAV can read ({err})") from err
    if voice.ndim != 1 or not np.issubdtype(voice.dtype, np.floating):
        # (S, 2) would be read interleaved and int16 PCM as full-scale noise: neither is a guess to make
        raise GenerationInputError("voice", voice, "a (S,) float array in [-1, 1] at 16 kHz (mono)")
    if not np.isfinite(voice).all():
        raise GenerationInputError("voice", voice, "finite samples; the array holds NaN or infinity")
    return voice.astype(np.float32)


def load_face(
    image: Union[PathLike, np.ndarray], image_size: int, face_box: Optional[Sequence[float]] = None,
    landmarks: Optional[Sequence[Sequence[float]]] = None,
) -> dict[str, torch.Tensor]:
    """Detect the face in ``image`` (MTCNN), crop it square around the face and draw its masks.

    ``face_box`` [x0, y0, x1, y1] and ``landmarks`` (5 x [x, y], MTCNN order) in image pixels,
    given together, replace detection (e.g. the demo corpus' drawn faces come with them).

    Returns:
        ``ref_image`` (3, S, S) float in [-1, 1], ``face_mask`` and ``lip_mask`` (1, S, S) {0, 1}.

    Raises:
        GenerationInputError: unreadable or too small image, a bad ``face_box``/``landmarks``, or no face found.
    """
    rgb, box, marks = read_face(image, face_box, landmarks)
    return _crop_like_preprocessing(rgb, box, marks, image_size)


def read_face(
    image: Union[PathLike, np.ndarray], face_box: Optional[Sequence[float]] = None,
    landmarks: Optional[Sequence[Sequence[float]]] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The photo as (H, W, 3) uint8 RGB, its face box (4,) and landmarks (5, 2) in image pixels.

    Raises:
        GenerationInputError: see :func:`load_face`.
    """
    label = "array" if isinstance(image, np.ndarray) else str(image)
    given = _given_face(face_box, landmarks)
    rgb = _read_image(image, label)  # (H, W, 3) uint8
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE:
        raise GenerationInputError("image", label, f"a photo of at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels "
                                   f"(MTCNN's smallest face); got {width}x{height}")
    if given is not None:
        x0, y0, x1, y1 = given[0]
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise GenerationInputError("face_box", face_box, f"a box overlapping the {width}x{height} photo")
        return rgb, *given
    detected = facelib.detect_face(rgb)
    if detected is None:
        raise GenerationInputError("image", label, "a photo with a detectable face (MTCNN found none)")
    return rgb, *detected


def _given_face(face_box: Optional[Sequence[float]], landmarks: Optional[Sequence[Sequence[float]]],
                ) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """``face_box`` (4,) and ``landmarks`` (5, 2) as float64 arrays, or ``None`` when neither is given."""
    if face_box is None and landmarks is None:
        return None
    if face_box is None or landmarks is None:
        name, value = ("landmarks", landmarks) if landmarks is None else ("face_box", face_box)
        raise GenerationInputError(name, value, "face_box and landmarks given together (or neither, to detect)")
    box, marks = np.asarray(face_box, np.float64), np.asarray(landmarks, np.float64)
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        raise GenerationInputError("face_box", face_box, "[x0, y0, x1, y1] in pixels with x0 < x1 and y0 < y1")
    if marks.shape != (5, 2) or not np.isfinite(marks).all():
        raise GenerationInputError("landmarks", landmarks, "5 x [x, y] in pixels (eyes, nose, mouth corners)")
    return box, marks


def _crop_like_preprocessing(rgb: np.ndarray, box: np.ndarray, landmarks: np.ndarray,
                             size: int) -> dict[str, torch.Tensor]:
    """The crop and masks of the training data: ``datamodules.face`` with the preprocessing box scale."""
    crop = facelib.square_box(box, PreprocessConfig().box_scale)
    image = facelib.resize_frames(facelib.crop_square(rgb, crop)[None], size)[0]  # (S, S, 3) uint8
    box_c = facelib.to_crop_coords(np.asarray(box).reshape(2, 2), crop, size).reshape(4)
    marks_c = facelib.to_crop_coords(landmarks, crop, size)  # (5, 2)
    ref = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 127.5 - 1.0  # (3, S, S) in [-1, 1]
    return {
        "ref_image": ref.clamp(-1, 1),
        "face_mask": torch.from_numpy(facelib.face_mask(box_c, size).astype(np.float32))[None],
        "lip_mask": torch.from_numpy(facelib.lip_mask(marks_c, size).astype(np.float32))[None],
    }


def _read_image(image: Union[PathLike, np.ndarray], label: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a path (any PIL format) or an array."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise GenerationInputError("image", label, f"(H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
        return image
    try:
        with Image.open(image) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise GenerationInputError("image", label, f"an image file PIL can read ({err})") from err


# ---------------------------------------------------------------------------------- model
def check_checkpoint_path(checkpoint: PathLike) -> Path:
    """``checkpoint`` as a Path, if it names a file (checked before anything else is loaded).

    Raises:
        FileNotFoundError: nothing at ``checkpoint``.
        GenerationInputError: a folder.
    """
    path = Path(checkpoint)
    if path.is_dir():
        raise GenerationInputError("checkpoint", str(path), "a checkpoint file (e.g. last.ckpt); this is a folder")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found (train one with `python -m experiments.fit`)")
    return path


def load_checkpoint(checkpoint: PathLike, device: Union[str, torch.device] = "cpu") -> tuple[NFYLitModule, Any]:
    """The LitModule (eval mode) and the tokenizer stored in ``checkpoint`` by training.

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        GenerationInputError: the file is a folder, cannot be read as a training checkpoint
            (empty, truncated, corrupt, another kind of file) or holds no tokenizer.
    """
    path = check_checkpoint_path(checkpoint)
    try:  # the same file check as `fit --ckpt_path`; the tokenizer is a pickled object, hence weights_only=False
        stored = check_checkpoint(path, weights_only=False)
    except CheckpointError as err:
        raise GenerationInputError("checkpoint", str(path), f"a checkpoint written by experiments.fit; {err}") from err
    architectures = stored.get("nfy_pretrained_architectures")
    if architectures is None:
        log.info("%s stores no architectures of its pretrained parts (saved by an older version): any are "
                 "loaded from their hub ids or folders again before the checkpoint's weights replace them", path)
    # The pretrained parts are built from the stored configs, not downloaded: the state dict holds their weights
    with stored_architectures(architectures) if architectures is not None else contextlib.nullcontext():
        try:
            module = NFYLitModule.load_from_checkpoint(path, map_location=device, weights_only=False)
        except KeyError as err:
            raise GenerationInputError("checkpoint", str(path), f"a checkpoint written by experiments.fit; it "
                                       f"lacks {err.args[0]!r}, which a training checkpoint holds") from err
    module.eval()
    tokenizer = getattr(module, "tokenizer", None)
    if tokenizer is None:
        raise GenerationInputError("checkpoint", str(path), "a checkpoint written by experiments.fit; it holds no "
                                   "tokenizer: it was not saved by a training run")
    return module, tokenizer


def resolve_sampling(module: NFYLitModule, num_inference_steps: Optional[int],
                     guidance_scale: Optional[float]) -> tuple[int, float]:
    """DDIM steps per window and guidance scale: the given ones, else the checkpoint's settings.

    Raises:
        GenerationInputError: more steps than the model was trained with timesteps.
    """
    steps = module.hparams.num_inference_steps if num_inference_steps is None else num_inference_steps
    limit = int(module.train_scheduler.config.num_train_timesteps)
    if steps > limit:
        raise GenerationInputError("num_inference_steps", steps,
                                   f"at most {limit} DDIM steps (the model's num_train_timesteps)")
    return steps, module.hparams.guidance_scale if guidance_scale is None else guidance_scale


def generate(
    checkpoint: Union[PathLike, NFYLitModule],
    image: Union[PathLike, np.ndarray],
    voice: Union[PathLike, np.ndarray],
    text: str,
    out: Optional[PathLike] = None,
    num_inference_steps: Optional[int] = None,
    guidance_scale: Optional[float] = None,
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
    progress: bool = True,
    tokenizer: Any = None,
    face_box: Optional[Sequence[float]] = None,
    landmarks: Optional[Sequence[Sequence[float]]] = None,
    sampler: str = "ddim",
    dtype: Union[str, torch.dtype] = "float32",
    compile: bool = False,
    num_frames: Optional[int] = None,
) -> GenerationResult:
    """Text + face photo + voice sample -> speech and a talking-face video (and an mp4 at ``out``).

    Args:
        checkpoint: a checkpoint path, or an already loaded :class:`NFYLitModule`
            (then ``tokenizer`` defaults to ``module.tokenizer`` and ``device`` is the module's).
        image: photo path (any PIL format) or (H, W, 3) uint8 RGB array; at least 20x20 pixels.
        voice: audio path (any PyAV format) or (S,) float32 array at 16 kHz; >= 2 s of speech.
        text: the text to speak, any length, in Latin script (:data:`LATIN_SCRIPT`).
        out: ``.mp4`` path to write (atomically); ``None`` writes nothing.
        num_inference_steps: DDIM steps per window, >= 1 (default: the checkpoint's setting).
        guidance_scale: classifier-free guidance, >= 0 (default: the checkpoint's setting).
        seed: seeds the diffusion noise and the speech decoder's pre-net dropout at inference
            (``prenet_dropout_at_inference``); a clip made in a batch (:func:`generate_rows`) with the
            same seed is the same clip.
        device: where to run: cpu, cuda, cuda:N or mps.
        progress: tqdm bar over sentences.
        tokenizer: overrides the checkpoint's tokenizer.
        face_box: [x0, y0, x1, y1] of the face in ``image``; with ``landmarks`` it skips detection.
        landmarks: 5 x [x, y] (eyes, nose, mouth corners) in ``image`` pixels.
        sampler: ``"ddim"`` (the paper's) or ``"dpm++"`` (DPM-Solver++, about 10 steps for DDIM's 25).
        dtype: ``"float32"``, or ``"bfloat16"`` (``"float16"``) to run the networks under autocast.
        compile: ``torch.compile`` the video denoiser (pays off over many windows on a GPU).
        num_frames: make the clip exactly this many video frames long (25 fps), shared among the
            sentences by their characters (:func:`split_frames`); each sentence is spoken at its share
            instead of where the stop head ends it. ``None``: the model's own length.

    Returns:
        :class:`GenerationResult` (frames uint8 (T, H, W, 3), speech (T * 640,) float32).

    Raises:
        GenerationInputError: a bad input (see the module docstring for what is checked when).
        FileNotFoundError: no file at ``checkpoint``.
    """
    # 1. What needs no model, before the checkpoint is loaded
    device = check_options(num_inference_steps, guidance_scale, seed, device)
    options = {"sampler": sampler, "dtype": check_sampling(sampler, dtype), "compile": bool(compile)}
    out = check_output(out, {"checkpoint": checkpoint, "image": image, "voice": voice})
    sentences = check_text(text)
    shares = None if num_frames is None else split_frames(num_frames, sentences)
    if not isinstance(checkpoint, NFYLitModule):
        check_checkpoint_path(checkpoint)
    photo = read_face(image, face_box, landmarks)
    profile = load_voice(voice)
    # 2. The model, and what depends on it, before any generation
    module, tokenizer = _model_and_tokenizer(checkpoint, tokenizer, device)
    clip = PreparedClip(sentences, encode_sentences(module, tokenizer, sentences),
                        _crop_like_preprocessing(*photo, int(module.net.image_size)), profile, shares)
    sampling = resolve_sampling(module, num_inference_steps, guidance_scale)
    # 3. Speech then video, sentence by sentence, carrying the motion frames across
    ((frames, audio),) = generate_rows(module, [clip], sampling, seed, progress, options)
    result = GenerationResult(video=frames, wav=audio, sentences=sentences)
    # 4. Mux (written to a temporary file and renamed: nothing partial on failure)
    if out is not None:
        result.path = write_clip(out, frames, audio)
    return result


@dataclass
class PreparedClip:
    """The checked model inputs of one clip, as :func:`generate` makes them (:func:`prepare_clip`).

    Attributes:
        sentences: the text pieces to speak, in order.
        ids: (L_k,) int64 token ids per sentence.
        face: ``ref_image`` (3, S, S) in [-1, 1], ``face_mask`` and ``lip_mask`` (1, S, S) {0, 1}.
        profile: (32000,) float32 voice profile (2 s at 16 kHz).
        frames: video frames per sentence when the clip has a given length (:func:`split_frames`);
            ``None``: each sentence ends where the stop head ends it.
    """

    sentences: list[str]
    ids: list[torch.Tensor]
    face: dict[str, torch.Tensor]
    profile: torch.Tensor
    frames: Optional[list[int]] = None


def prepare_clip(module: NFYLitModule, tokenizer: Any, image: Union[PathLike, np.ndarray],
                 voice: Union[PathLike, np.ndarray], text: str, face_box: Optional[Sequence[float]] = None,
                 landmarks: Optional[Sequence[Sequence[float]]] = None,
                 num_frames: Optional[int] = None) -> PreparedClip:
    """Check and prepare one clip's inputs for a loaded model, with :func:`generate`'s checks.

    Args: as :func:`generate`'s; ``tokenizer`` the one the model was trained with.

    Raises:
        GenerationInputError: a bad text, photo, face box, voice sample or ``num_frames``.
    """
    sentences = check_text(text)
    shares = None if num_frames is None else split_frames(num_frames, sentences)
    photo = read_face(image, face_box, landmarks)
    profile = load_voice(voice)
    ids = encode_sentences(module, tokenizer, sentences)
    return PreparedClip(sentences, ids, _crop_like_preprocessing(*photo, int(module.net.image_size)), profile,
                        shares)


def split_frames(num_frames: int, sentences: Sequence[str]) -> list[int]:
    """``num_frames`` video frames shared among ``sentences`` in proportion to their characters
    (largest remainders; at least one frame each).

    Raises:
        GenerationInputError: ``num_frames`` not an integer, or fewer frames than sentences.
    """
    if not (_is_integer(num_frames) and num_frames >= max(1, len(sentences))):
        raise GenerationInputError("num_frames", num_frames, f"an integer >= {max(1, len(sentences))} (a video "
                                   f"frame per sentence at least; the text has {len(sentences)}), or None")
    sizes = np.array([len(sentence) for sentence in sentences], dtype=float)
    extra = num_frames - len(sentences)  # one frame each first, the rest by characters
    ideal = extra * sizes / sizes.sum()
    shares = np.floor(ideal).astype(int)
    for index in np.argsort(-(ideal - shares), kind="stable")[: extra - int(shares.sum())]:
        shares[index] += 1
    return [int(share) + 1 for share in shares]


def write_clip(out: PathLike, frames: np.ndarray, wav: np.ndarray) -> Path:
    """Mux (T, H, W, 3) uint8 ``frames`` (25 fps) and (S,) float32 ``wav`` (16 kHz) into the mp4 ``out``.

    The file appears only when complete (a temporary file in the same folder, then renamed).
    """
    path = write_mp4(out, frames, fps=FPS, audio=wav, sample_rate=SAMPLE_RATE)
    log.info("wrote %s (%d frames, %.2f s)", path, len(frames), len(wav) / SAMPLE_RATE)
    return path


def _model_and_tokenizer(checkpoint: Union[PathLike, NFYLitModule], tokenizer: Any,
                         device: torch.device) -> tuple[NFYLitModule, Any]:
    """The module in eval mode and the tokenizer to use (``tokenizer`` overrides the stored one)."""
    if isinstance(checkpoint, NFYLitModule):
        tokenizer = tokenizer or getattr(checkpoint, "tokenizer", None)
        if tokenizer is None:
            raise GenerationInputError("tokenizer", None, "a tokenizer: pass tokenizer= or set module.tokenizer")
        return checkpoint.eval(), tokenizer
    module, stored = load_checkpoint(checkpoint, device)
    return module, tokenizer or stored


def generate_rows(module: NFYLitModule, clips: Sequence[PreparedClip], sampling: tuple[int, float],
                  seed: int = 0, progress: bool = False,
                  options: Optional[dict[str, Any]] = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Generate several clips together with the module's :class:`~lightning_modules.pipeline.NFYPipeline`.

    Sentence ``k`` of every clip that has one is generated in one pipeline call (the texts padded
    and masked as ``datamodules.batch.collate`` pads them); each clip continues from the last
    frames of its own previous sentence. Rows are cut at their own lengths. Each clip draws its
    randomness from its own generator seeded with ``seed``, so a clip comes out the same in any
    batch as alone (up to float rounding): :func:`generate` is the one-clip case.

    Args:
        sampling: DDIM steps per window and the guidance scale (:func:`resolve_sampling`).
        seed: every clip's seed.
        progress: tqdm bar over sentences.
        options: the pipeline's ``sampler``, ``dtype`` and ``compile`` (``None``: its defaults).

    Returns:
        Per clip: (T, H, W, 3) uint8 frames and (T * 640,) float32 speech.
    """
    pipeline = NFYPipeline.from_training_scheduler(module.net, module.train_scheduler, **(options or {}))
    generators = [torch.Generator(device=module.device).manual_seed(seed) for _ in clips]
    context = int(module.net.motion_frames)
    videos: list[list[torch.Tensor]] = [[] for _ in clips]
    wavs: list[list[torch.Tensor]] = [[] for _ in clips]
    motion: list[Optional[torch.Tensor]] = [None] * len(clips)  # (M, 3, H, W) in [-1, 1] per clip
    for k in tqdm(range(max(len(c.ids) for c in clips)), desc="sentences", unit="sentence", disable=not progress):
        active = [i for i, clip in enumerate(clips) if k < len(clip.ids)]
        # the pipeline takes motion frames, and given lengths, for every row or none: calls by kind
        kinds: dict[tuple[bool, bool], list[int]] = {}
        for i in active:
            kinds.setdefault((motion[i] is None, clips[i].frames is None), []).append(i)
        for group in kinds.values():
            out = _sentence_call(module, pipeline, [clips[i] for i in group], k,
                                 [motion[i] for i in group], sampling, [generators[i] for i in group])
            for row, i in enumerate(group):
                video, wav = _cut_row(out, row)
                frames = video.shape[0]
                motion[i] = video[frames - context :] * 2 - 1 if 0 < context <= frames else None
                videos[i].append(video.cpu())
                wavs[i].append(wav)
    return [(_to_uint8(torch.cat(v)), torch.cat(w).numpy().astype(np.float32)) for v, w in zip(videos, wavs)]


def _sentence_call(module: NFYLitModule, pipeline: Any, clips: list[PreparedClip], k: int,
                   motion: list[Optional[torch.Tensor]], sampling: tuple[int, float],
                   generators: list[torch.Generator]) -> dict[str, torch.Tensor]:
    """One pipeline call on sentence ``k`` of ``clips`` (B rows, a generator each); ``motion`` all tensors
    or all ``None``, ``clips``' ``frames`` all lists or all ``None``."""
    device, (steps, guidance) = module.device, sampling
    text_ids, text_mask = pad_text([clip.ids[k] for clip in clips])  # (B, L) each
    mel_frames = None
    if clips[0].frames is not None:  # frames -> mel frames whose samples fill exactly those frames
        mel_frames = torch.tensor([clip.frames[k] * SAMPLES_PER_FRAME // HOP_LENGTH for clip in clips], device=device)
    face = {name: torch.stack([clip.face[name] for clip in clips]).to(device) for name in clips[0].face}
    return pipeline(
        text_ids.to(device), text_mask.to(device), face["ref_image"], face["face_mask"], face["lip_mask"],
        torch.stack([clip.profile for clip in clips]).to(device), num_inference_steps=steps,
        guidance_scale=guidance, generator=generators,
        motion_frames=None if motion[0] is None else torch.stack(motion),  # (B, M, 3, H, W)
        max_mel_frames=module.hparams.max_mel_frames, mel_frames=mel_frames,
    )


def _cut_row(out: dict[str, torch.Tensor], row: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row ``row`` of a pipeline output cut at its own length.

    Returns:
        (T, 3, H, W) frames in [0, 1] (T = the row's ``num_frames``) and (T * 640,) float32 speech on
        the CPU, zero-padded to the video's length so that audio and video stay in sync.
    """
    frames = int(out["num_frames"][row])
    wav = torch.zeros(frames * SAMPLES_PER_FRAME)
    length = min(int(out["wav_lengths"][row]), wav.numel())
    wav[:length] = out["wav"][row, :length].float().cpu()
    return out["video"][row, :frames], wav


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) in [0, 1] -> (T, H, W, 3) uint8."""
    return (video.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------------------------- tokenizer glue
def _encode(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``text`` with whatever BOS/EOS the tokenizer adds (HF ``Tokenizer`` or a wrapper)."""
    encoded = tokenizer.encode(text)
    return list(getattr(encoded, "ids", encoded))


def _token_id(tokenizer: Any, token: str) -> Optional[int]:
    """Id of a special token, or ``None`` when the tokenizer has no such token."""
    lookup = getattr(tokenizer, "token_to_id", None)
    return lookup(token) if lookup is not None else None


# ---------------------------------------------------------------------------------- CLI
def _parse(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint written by experiments.fit")
    parser.add_argument("--image", required=True, help="face photo (any format PIL reads)")
    parser.add_argument("--voice", required=True, help="voice sample, >= 2 s of speech (any format PyAV reads)")
    parser.add_argument("--text", required=True, help="text to speak, Latin script (other scripts, emoji: refused)")
    parser.add_argument("--out", required=True, help="mp4 to write (folders are created)")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampler steps per window, >= 1 (default: checkpoint's; about 10 suit --sampler dpm++)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale, >= 0 (default: checkpoint's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler", default="ddim", help=f"{' or '.join(SAMPLERS)} (DPM-Solver++; default: ddim)")
    parser.add_argument("--dtype", default="float32",
                        help=f"{', '.join(DTYPES)}: bfloat16 runs the networks under autocast (default: float32)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the video denoiser")
    parser.add_argument("--frames", type=int, default=None,
                        help="make the video exactly this many frames (25 fps) long (default: where the speech ends)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda[:N] or mps")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status: 2 on bad input, with one line on stderr."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = generate(args.ckpt, args.image, args.voice, args.text, out=args.out, num_inference_steps=args.steps,
                          guidance_scale=args.guidance, seed=args.seed, device=args.device, sampler=args.sampler,
                          dtype=args.dtype, compile=args.compile, num_frames=args.frames)
    except (GenerationInputError, FileNotFoundError) as err:
        if args.debug:
            traceback.print_exc()
        print(f"error: {_cli_message(err)}", file=sys.stderr)
        return 2
    print(f"wrote {result.path}: {len(result.video)} frames, {len(result.wav) / SAMPLE_RATE:.2f} s, "
          f"{len(result.sentences)} sentence(s)")
    return 0


def _cli_message(err: Exception) -> str:
    """The error in the words of the command line: ``--steps 0: ...`` rather than ``num_inference_steps=0``."""
    if isinstance(err, GenerationInputError) and err.argument in CLI_FLAGS:
        return f"{CLI_FLAGS[err.argument]} {_shown(err.value)}: {err.expected}"
    return str(err)


if __name__ == "__main__":
    raise SystemExit(main())
