"""Generate a narrated talking-face video from a trained NFY checkpoint.

Command line::

    python -m experiments.generate --ckpt last.ckpt --image face.jpg --voice voice.wav \\
        --text "Any text, of any length." --out out.mp4 [--steps 25 --guidance 1.0 --seed 0]

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

Every bad input fails before any generation with one :class:`GenerationInputError` naming the
argument, the value and what was expected; a missing checkpoint raises ``FileNotFoundError``.
"""

from __future__ import annotations

import argparse
import logging
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from datamodules import face as facelib
from datamodules.conventions import FPS, PROFILE_SAMPLES, SAMPLE_RATE, SAMPLES_PER_FRAME
from datamodules.media import MediaError, read_audio, write_mp4
from datamodules.preprocess import PreprocessConfig
from lightning_modules import NFYLitModule

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
MIN_VOICE_RMS: float = 1e-3
"""A voice sample whose speech RMS is below this (about -60 dBFS) counts as silent."""
MAX_SENTENCE_WORDS: int = 25
"""Sentences longer than this are cut at commas, then every this many words (about 8 s)."""


class GenerationInputError(ValueError):
    """A user input that generation cannot use; ``argument`` names the offending input."""

    def __init__(self, argument: str, value: Any, expected: str) -> None:
        self.argument, self.value, self.expected = argument, value, expected
        super().__init__(f"{argument}={value!r}: {expected}")


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


# ---------------------------------------------------------------------------------- inputs
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
    """Reject control, private-use and unassigned characters (the model was trained on none).

    Raises:
        GenerationInputError: naming each such character and its position.
    """
    bad = [(i, ch) for i, ch in enumerate(text) if unicodedata.category(ch)[0] == "C" and ch not in "\t\n\r"]
    if bad:
        shown = ", ".join(f"U+{ord(ch):04X} {unicodedata.name(ch, '(control)')} at {i}" for i, ch in bad[:5])
        raise GenerationInputError("text", text, f"printable characters only; found {shown}")


def encode_text(tokenizer: Any, sentence: str) -> torch.Tensor:
    """(L,) int64 ids of ``sentence``; an unknown-token id in the result is an error."""
    ids = _encode(tokenizer, sentence)
    unk = _token_id(tokenizer, "<unk>")
    if not ids or (unk is not None and unk in ids):
        raise GenerationInputError("text", sentence, "characters the tokenizer knows (it maps some to <unk>)")
    return torch.tensor(ids, dtype=torch.long)


def load_voice(voice: Union[PathLike, np.ndarray]) -> torch.Tensor:
    """(32000,) float32 voice profile: the first 2 s of speech of ``voice`` at 16 kHz.

    ``voice`` is any file PyAV decodes (resampled to 16 kHz mono) or a 16 kHz float array.
    Leading and trailing silence is trimmed before the 2 s are taken.

    Raises:
        GenerationInputError: unreadable, silent, or under 2 s of speech.
    """
    if isinstance(voice, np.ndarray):
        wav = np.asarray(voice, np.float32).reshape(-1)
    else:
        try:
            wav = read_audio(voice, sample_rate=SAMPLE_RATE)
        except (MediaError, FileNotFoundError) as err:
            raise GenerationInputError("voice", str(voice), f"an audio file PyAV can read ({err})") from err
    label = "array" if isinstance(voice, np.ndarray) else str(voice)
    loud = np.flatnonzero(np.abs(wav) > MIN_VOICE_RMS * 10)  # samples above -40 dBFS
    if loud.size == 0 or float(np.sqrt(np.mean(wav[loud[0] : loud[-1] + 1] ** 2))) < MIN_VOICE_RMS:
        raise GenerationInputError("voice", label, "speech; the sample is silent")
    speech = wav[loud[0] : loud[-1] + 1]
    if speech.size < PROFILE_SAMPLES:
        raise GenerationInputError(
            "voice", label, f"at least 2 s of speech at 16 kHz; got {speech.size / SAMPLE_RATE:.2f} s"
        )
    return torch.from_numpy(np.clip(speech[:PROFILE_SAMPLES], -1.0, 1.0).copy())


def load_face(
    image: Union[PathLike, np.ndarray], image_size: int, face_box: Optional[Sequence[float]] = None,
    landmarks: Optional[Sequence[Sequence[float]]] = None,
) -> dict[str, torch.Tensor]:
    """Detect the face in ``image`` (MTCNN), crop it square around the face and draw its masks.

    ``face_box`` [x0, y0, x1, y1] and ``landmarks`` (5 x [x, y], MTCNN order) in image pixels,
    when both are given, replace detection (e.g. the demo corpus' drawn faces come with them).

    Returns:
        ``ref_image`` (3, S, S) float in [-1, 1], ``face_mask`` and ``lip_mask`` (1, S, S) {0, 1}.

    Raises:
        GenerationInputError: unreadable image or no face found.
    """
    label = "array" if isinstance(image, np.ndarray) else str(image)
    rgb = _read_image(image, label)  # (H, W, 3) uint8
    if face_box is not None and landmarks is not None:
        detected = (np.asarray(face_box, np.float64), np.asarray(landmarks, np.float64).reshape(5, 2))
    else:
        detected = facelib.detect_face(rgb)
    if detected is None:
        raise GenerationInputError("image", label, "a photo with a detectable face (MTCNN found none)")
    box, landmarks = detected
    return _crop_like_preprocessing(rgb, box, landmarks, image_size)


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
    except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
        raise GenerationInputError("image", label, f"an image file PIL can read ({err})") from err


# ---------------------------------------------------------------------------------- model
def load_checkpoint(checkpoint: PathLike, device: Union[str, torch.device] = "cpu") -> tuple[NFYLitModule, Any]:
    """The LitModule (eval mode) and the tokenizer stored in ``checkpoint`` by training.

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        ValueError: the checkpoint lacks the network config or the tokenizer.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found (train one with `python -m experiments.fit`)")
    module = NFYLitModule.load_from_checkpoint(path, map_location=device, weights_only=False)
    module.eval()
    tokenizer = getattr(module, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"checkpoint {str(path)!r} holds no tokenizer: it was not saved by a training run")
    return module, tokenizer


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
) -> GenerationResult:
    """Text + face photo + voice sample -> speech and a talking-face video (and an mp4 at ``out``).

    Args:
        checkpoint: a checkpoint path, or an already loaded :class:`NFYLitModule`
            (then ``tokenizer`` defaults to ``module.tokenizer``).
        image: photo path (any PIL format) or (H, W, 3) uint8 RGB array.
        voice: audio path (any PyAV format) or (S,) float32 array at 16 kHz; >= 2 s of speech.
        text: the text to speak, any length.
        out: mp4 path to write (atomically); ``None`` writes nothing.
        num_inference_steps: DDIM steps per window (default: the checkpoint's setting).
        guidance_scale: classifier-free guidance (default: the checkpoint's setting).
        seed: seeds the diffusion noise.
        device: where to run.
        progress: tqdm bar over sentences.
        tokenizer: overrides the checkpoint's tokenizer.
        face_box: [x0, y0, x1, y1] of the face in ``image``; with ``landmarks`` it skips detection.
        landmarks: 5 x [x, y] (eyes, nose, mouth corners) in ``image`` pixels.

    Returns:
        :class:`GenerationResult` (frames uint8 (T, H, W, 3), speech (T * 640,) float32).
    """
    # 1. Inputs, all checked before any model work
    check_characters(str(text))
    sentences = split_sentences(text)
    if isinstance(checkpoint, NFYLitModule):
        module, tokenizer = checkpoint.eval(), tokenizer or getattr(checkpoint, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("generate(module, ...) needs a tokenizer: pass tokenizer= or set module.tokenizer")
    else:
        module, stored = load_checkpoint(checkpoint, device)
        tokenizer = tokenizer or stored
    ids = [encode_text(tokenizer, sentence) for sentence in sentences]
    face = load_face(image, int(module.net.image_size), face_box, landmarks)
    profile = load_voice(voice)
    # 2. Speech then video, sentence by sentence, carrying the motion frames across
    steps = num_inference_steps or module.hparams.num_inference_steps
    guidance = module.hparams.guidance_scale if guidance_scale is None else guidance_scale
    generator = torch.Generator(device=module.device).manual_seed(seed)
    frames, audio = _generate_sentences(module, ids, face, profile, steps, guidance, generator, progress)
    result = GenerationResult(video=frames, wav=audio, sentences=sentences)
    # 3. Mux (write_mp4 writes a temporary file and renames it: nothing partial on failure)
    if out is not None:
        result.path = write_mp4(out, frames, fps=FPS, audio=audio, sample_rate=SAMPLE_RATE)
        log.info("wrote %s (%d frames, %.2f s)", result.path, len(frames), len(audio) / SAMPLE_RATE)
    return result


def _generate_sentences(module, ids, face, profile, steps, guidance, generator, progress) -> tuple[np.ndarray, np.ndarray]:
    """Generate every sentence; returns (T, H, W, 3) uint8 frames and (T * 640,) float32 speech."""
    device = module.device
    cond = {k: v[None].to(device) for k, v in face.items()}  # (1, ...) each
    profile_wav = profile[None].to(device)  # (1, 32000)
    motion: Optional[torch.Tensor] = None
    videos, wavs = [], []
    for text_ids in tqdm(ids, desc="sentences", unit="sentence", disable=not progress):
        text_ids = text_ids[None].to(device)  # (1, L)
        out = module.generate(
            text_ids, torch.ones_like(text_ids, dtype=torch.bool), cond["ref_image"], cond["face_mask"],
            cond["lip_mask"], profile_wav, num_inference_steps=steps, guidance_scale=guidance,
            generator=generator, motion_frames=motion,
        )
        frames = int(out["num_frames"][0])
        video = out["video"][0, :frames]  # (T, 3, H, W) in [0, 1]
        wav = torch.zeros(frames * SAMPLES_PER_FRAME)
        length = min(int(out["wav_lengths"][0]), wav.numel())
        wav[:length] = out["wav"][0, :length].float().cpu()  # padded to the video's length: A/V stay in sync
        context = int(module.net.motion_frames)
        # the next sentence continues from this one's last frames (1, 2, 3, H, W) in [-1, 1]
        motion = out["video"][:, frames - context : frames] * 2 - 1 if 0 < context <= frames else None
        videos.append(video.cpu())
        wavs.append(wav)
    video = torch.cat(videos)  # (T, 3, H, W)
    frames_u8 = (video.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return frames_u8, torch.cat(wavs).numpy().astype(np.float32)


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
    parser.add_argument("--text", required=True, help="text to speak")
    parser.add_argument("--out", required=True, help="mp4 to write")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps per window (default: checkpoint's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: checkpoint's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input)."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = generate(args.ckpt, args.image, args.voice, args.text, out=args.out, num_inference_steps=args.steps,
                          guidance_scale=args.guidance, seed=args.seed, device=args.device)
    except (GenerationInputError, FileNotFoundError) as err:
        print(f"error: {err}")
        return 2
    print(f"wrote {result.path}: {len(result.video)} frames, {len(result.wav) / SAMPLE_RATE:.2f} s, "
          f"{len(result.sentences)} sentence(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
