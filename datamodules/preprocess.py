"""The preprocessing core: one code path that turns every dataset's clips into training clips.

A dataset module lists its clips as :class:`~datamodules.sources.ClipSource` objects;
:func:`preprocess_clips` does the rest, per clip:

1. decode video at 25 fps and audio at 16 kHz mono with :mod:`datamodules.media`, from
   ``start`` to ``end``, at most ``max_seconds`` (20 s, paper Sec. 4.1);
2. reject clips that cannot be used (unreadable, no video or audio track, shorter than the
   2 s voice profile, silent, no face) with a :class:`ClipRejected` reason;
3. find the face on the first frame (MTCNN, unless the dataset gives a box/landmarks), expand
   it to a square (``box_scale``), crop every frame with that one box and resize it to
   ``image_size``; frames are cut and resized in their decoded YUV format (FFmpeg filters, see
   :class:`~datamodules.face.FrameCropper`) and streamed to the encoder, never held whole;
4. compute the log-mel (:func:`datamodules.audio.log_mel`) and the face/lip masks;
5. write the clip folder atomically.

Cache layout under ``cache_dir``::

    clips/<dataset>/<key>/video.mp4   cropped frames, H.264 yuv420p (crf 18, a keyframe every second), no audio
                         /audio.npy   (S,) float32 16 kHz mono in [-1, 1]
                         /mel.npy     (80, S // 256 + 1) float32 log-mel
                         /masks.npz   face, lip: (image_size, image_size) uint8 {0, 1}
                         /ref.png     first cropped frame (the reference image)
                         /meta.json   the ClipSource + what preprocessing measured
    manifest.jsonl                    one line per kept clip: {"path": "clips/<dataset>/<key>", **meta}
    rejects.jsonl                     one line per rejected clip: key, dataset, path, reason, detail

A clip is written into ``.tmp-<dataset>-<key>@<host>@<pid>/`` and renamed into place when
complete, so a crashed run leaves no half-written clip folder and a rerun skips the clips already
done. A leftover folder is removed only by a run on the same host whose process table shows the
pid gone: nodes sharing a cache never delete each other's work in progress.

Each ``meta.json`` records the :data:`CACHE_VERSION` it was written with. A rerun re-makes a
clip of an older version whose result would now differ (version 1 read stereo sources 3 dB
too loud) and marks the others current; :func:`load_manifest` warns about older clips.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from common.files import replace_folder, write_text_atomic
from common.workers import exit_with_parent
from datamodules import face as facelib
from datamodules.audio import log_mel
from datamodules.conventions import (
    FPS,
    IMAGE_SIZE,
    MAX_SOURCE_SECONDS,
    PROFILE_SECONDS,
    SAMPLE_RATE,
)
from datamodules.media import MediaError, Mp4Writer, iter_frames, probe, read_audio
from datamodules.sources import ClipSource

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
CACHE_VERSION: int = 2
"""Version of the clip folders, in each ``meta.json`` (``cache_version``; absent means 1).

1: stereo audio downmixed as ``(L + R) / sqrt(2)`` (FFmpeg's default, 3 dB too loud).
2: channels averaged, ``(L + R) / 2``.
"""
REJECT_REASONS: tuple[str, ...] = (
    "unreadable", "no_video", "no_audio", "empty", "too_short", "silent", "no_face", "error",
)
"""Reason codes written to ``rejects.jsonl``."""


@dataclass
class PreprocessConfig:
    """Settings of the preprocessing core.

    Args:
        image_size: side of the square face crop written to the cache (paper: 512).
        fps: video frame rate.
        sample_rate: audio rate (mono).
        max_seconds: clips are cut to at most this long from their ``start`` (paper: 20 s).
        profile_seconds: minimum length, the voice profile's (2 s).
        box_scale: the face box is scaled by this about its centre before squaring.
        silence_rms: audio whose RMS (full scale 1.0) is below this is ``silent`` (1e-3 = -60 dBFS).
        mtcnn_thresholds: MTCNN's three stage thresholds.
        min_face_size: smallest face side (pixels) MTCNN searches for.
        crf: x264 quality of the cropped video (18 is visually lossless).
        preset: x264 speed preset; ``superfast`` encodes ~2.5x faster than ``veryfast`` for
            files ~1.5x larger at the same quality, the better trade for a local cache.
            ``ultrafast`` halves the encoding time again and the decoding time of a training
            window, for files ~1.5x larger still (512x512 talking heads: ~16 instead of ~11 MB
            per minute, same PSNR).
        keyframe_interval: at most this many frames between keyframes of the cached video: a
            reader of a random window decodes from the keyframe before it, so short intervals
            make training reads cheap (25, one a second: an 18-frame window decodes in ~2.4x
            less time than with x264's default, for a ~3 % larger file); ``None`` keeps x264's 250.
        encoder_threads: x264 threads per clip; 1 suits one preprocessing process per core
            (``num_workers``), 0 lets x264 use several (faster wall clock in a single process).
    """

    image_size: int = IMAGE_SIZE
    fps: int = FPS
    sample_rate: int = SAMPLE_RATE
    max_seconds: float = MAX_SOURCE_SECONDS
    profile_seconds: float = PROFILE_SECONDS
    box_scale: float = 1.45
    silence_rms: float = 1e-3
    mtcnn_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    min_face_size: int = 20
    crf: int = 18
    preset: str = "superfast"
    keyframe_interval: Optional[int] = 25
    encoder_threads: int = 1

    def __post_init__(self) -> None:
        if self.image_size < 16 or self.image_size % 2:
            raise ValueError(f"image_size must be an even number >= 16, got {self.image_size}")
        if self.max_seconds < self.profile_seconds:
            raise ValueError(f"max_seconds ({self.max_seconds}) must be >= profile_seconds ({self.profile_seconds})")
        if self.box_scale < 1.0:
            raise ValueError(f"box_scale must be >= 1.0, got {self.box_scale}")
        self.mtcnn_thresholds = tuple(float(t) for t in self.mtcnn_thresholds)


class ClipRejected(Exception):
    """A clip cannot be used; ``reason`` is one of :data:`REJECT_REASONS`, ``detail`` says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REJECT_REASONS:
            raise ValueError(f"unknown reject reason {reason!r}; expected one of {REJECT_REASONS}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass
class PreprocessReport:
    """What one :func:`preprocess_clips` run did.

    ``kept``: keys written in this run; ``skipped``: keys whose folder already existed;
    ``rejected``: the reject records (dicts with key, dataset, path, reason, detail).
    """

    kept: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    media_seconds: float = 0.0

    @property
    def num_kept(self) -> int:
        return len(self.kept)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    @property
    def num_rejected(self) -> int:
        return len(self.rejected)

    def __str__(self) -> str:
        return (f"{self.num_kept} kept, {self.num_skipped} already done, {self.num_rejected} rejected "
                f"({self.media_seconds:.1f} s of media in {self.seconds:.1f} s)")


# ------------------------------------------------------------------------------- one clip
def clip_folder(cache_dir: PathLike, source: ClipSource) -> Path:
    """Final folder of ``source`` in the cache: ``<cache>/clips/<dataset>/<key>``."""
    return Path(cache_dir) / "clips" / source.dataset / source.key


def preprocess_clip(source: ClipSource, cache_dir: PathLike, config: Optional[PreprocessConfig] = None) -> dict:
    """Preprocess one clip into ``<cache>/clips/<dataset>/<key>/`` (atomically).

    If the folder already exists its ``meta.json`` is returned and nothing is redone.

    Args:
        source: the clip.
        cache_dir: cache root.
        config: settings (defaults: :class:`PreprocessConfig`).

    Returns:
        The clip's meta (what ``meta.json`` holds).

    Raises:
        ClipRejected: the clip cannot be used; the detail names the file and the problem.
    """
    config = config or PreprocessConfig()
    final = clip_folder(cache_dir, source)
    if _is_done(cache_dir, source):
        return json.loads((final / "meta.json").read_text())
    tmp = Path(cache_dir) / _tmp_name(f"{source.dataset}-{source.key}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        meta = _process_into(source, tmp, config)
        final.parent.mkdir(parents=True, exist_ok=True)
        _replace_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _is_done(cache_dir: PathLike, source: ClipSource) -> bool:
    """Whether the clip folder of ``source`` is complete and current.

    A folder of an older :data:`CACHE_VERSION` is current if re-making it would give the same
    files: its source audio is mono (or cannot be read any more); it is then marked current.
    """
    meta_file = clip_folder(cache_dir, source) / "meta.json"
    if not meta_file.is_file():
        return False
    meta = json.loads(meta_file.read_text())
    if int(meta.get("cache_version", 1)) >= CACHE_VERSION:
        return True
    path = source.audio_path or source.video_path
    try:
        channels = probe(path).channels or 1
    except MediaError:
        return True  # the source is gone: keep what was made from it (load_manifest still warns)
    if channels > 1:
        log.debug("%s/%s: its stereo audio was cached 3 dB too loud (cache version %s)",
                  source.dataset, source.key, meta.get("cache_version", 1))
        return False
    meta["cache_version"] = CACHE_VERSION
    write_text_atomic(meta_file, json.dumps(meta, indent=1))
    return True


def _replace_folder(new: Path, final: Path) -> None:
    """Rename ``new`` to ``final``; an existing ``final`` (an outdated clip) is removed after.

    The old folder is moved aside under a ``.tmp-*@<host>@<pid>`` name, so a crash in between leaves
    no half-written clip: the next run removes the leftover and makes the clip again.
    """
    replace_folder(new, final, aside=new.with_name(_tmp_name(f"{new.name[len('.tmp-'):].split('@', 1)[0]}-old")))


def _process_into(source: ClipSource, out: Path, config: PreprocessConfig) -> dict:
    """Decode, check, crop and write one clip into folder ``out``; returns its meta."""
    start, end = _time_range(source, config)
    wav = _load_audio(source, start, end, config)
    # video and audio cover the same span: the video stops at the frame that holds the audio's end
    per_frame = config.sample_rate / config.fps
    max_frames = int(np.ceil(wav.size / per_frame))
    num_frames, ref, crop, box, marks = _write_frames(source, start, end, max_frames, out / "video.mp4", config)
    wav = wav[: int(round(num_frames * per_frame))]
    size = config.image_size
    box_c = facelib.to_crop_coords(box.reshape(2, 2), crop, size).reshape(4)
    marks_c = facelib.to_crop_coords(marks, crop, size)
    np.save(out / "audio.npy", wav.astype(np.float32))
    np.save(out / "mel.npy", log_mel(wav).numpy())
    np.savez_compressed(out / "masks.npz", face=facelib.face_mask(box_c, size), lip=facelib.lip_mask(marks_c, size))
    _save_png(out / "ref.png", ref)
    meta = _meta(source, config, start, num_frames, wav.size, crop, box_c, marks_c)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def _time_range(source: ClipSource, config: PreprocessConfig) -> tuple[float, float]:
    start = max(0.0, float(source.start or 0.0))
    end = start + config.max_seconds
    if source.end is not None:
        end = min(end, float(source.end))
    if end - start < config.profile_seconds:
        raise ClipRejected("too_short", f"{source.video_path}: clip range {start:.2f}-{end:.2f} s is shorter "
                                        f"than the {config.profile_seconds} s voice profile")
    return start, end


def _load_audio(source: ClipSource, start: float, end: float, config: PreprocessConfig) -> np.ndarray:
    """(S,) float32 audio of the clip; rejects missing, short and silent audio."""
    path = source.audio_path or source.video_path
    try:
        wav = read_audio(path, sample_rate=config.sample_rate, start=start, end=end)
    except MediaError as err:
        raise ClipRejected(_media_reason(err), f"{err.path}: {err.reason} {err.detail}".strip()) from err
    seconds = wav.size / config.sample_rate
    if seconds < config.profile_seconds:
        raise ClipRejected("too_short", f"{path}: {seconds:.2f} s of audio from {start:.2f} s, "
                                        f"need at least {config.profile_seconds} s")
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    if rms < config.silence_rms:
        raise ClipRejected("silent", f"{path}: audio RMS {rms:.2e} is below the silence threshold "
                                     f"{config.silence_rms:.1e}")
    return wav


def _write_frames(source: ClipSource, start: float, end: float, max_frames: int, path: Path,
                  config: PreprocessConfig):
    """Crop, resize and encode the clip's frames into ``path`` as they are decoded.

    The face is found on the first frame (the only one converted to RGB); every frame is then
    cut and resized in its own YUV format by :class:`~datamodules.face.FrameCropper` and goes
    to the encoder without a round trip through RGB.

    Returns:
        ``(num_frames, ref, crop, box, marks)``: frames written, the first cropped frame
        (S, S, 3) uint8 RGB, the crop box and the face box (4,) / landmarks (5, 2) in source pixels.
    """
    size = config.image_size
    # the range holds at most this many frames (the decoder may give one more at the end)
    max_frames = min(max_frames, int(np.ceil((end - start) * config.fps)) + 1)
    ref, crop, box, marks, cropper = None, None, None, None, None
    try:
        with Mp4Writer(path, size, size, fps=config.fps, crf=config.crf, preset=config.preset,
                       keyframe_interval=config.keyframe_interval, threads=config.encoder_threads) as writer:
            for frame in iter_frames(source.video_path, fps=config.fps, start=start, end=end):
                if writer.num_frames == max_frames:
                    break
                if cropper is None:
                    box, marks = _find_face(source, frame.to_ndarray(format="rgb24"), config)
                    crop = facelib.square_box(box, config.box_scale)
                    cropper = facelib.FrameCropper(crop, size)
                cut = cropper(frame)
                if ref is None:
                    ref = cut.to_ndarray(format="rgb24")  # (S, S, 3)
                writer.write(cut)
            if writer.num_frames == 0:
                raise ClipRejected("empty", f"{source.video_path}: no video frame between {start:.2f} s "
                                            f"and {end:.2f} s")
            count = writer.num_frames
    except MediaError as err:
        raise ClipRejected(_media_reason(err), f"{err.path}: {err.reason} {err.detail}".strip()) from err
    return count, ref, crop, box, marks


def _find_face(source: ClipSource, frame: np.ndarray, config: PreprocessConfig):
    """Face box (4,) and landmarks (5, 2) in source pixels: given by the dataset, or detected."""
    if source.face_box is not None:
        box = np.asarray(source.face_box, np.float64).reshape(4)
        if source.landmarks is not None:
            return box, np.asarray(source.landmarks, np.float64).reshape(5, 2)
        return box, facelib.landmarks_in_box(frame, box, config.mtcnn_thresholds)
    found = facelib.detect_face(frame, config.mtcnn_thresholds, config.min_face_size)
    if found is None:
        raise ClipRejected("no_face", f"{source.video_path}: MTCNN found no face on the first frame "
                                      f"({frame.shape[1]}x{frame.shape[0]}) at {source.start or 0.0:.2f} s")
    box, marks = found
    if source.landmarks is not None:
        marks = np.asarray(source.landmarks, np.float64).reshape(5, 2)
    return box, marks


def _media_reason(err: MediaError) -> str:
    return err.reason if err.reason in REJECT_REASONS else "unreadable"


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    # zlib level 1: ~2.5x faster than PIL's default 6 for a ~15 % larger file (lossless either way)
    Image.fromarray(image).save(path, compress_level=1)


def _meta(source, config, start, num_frames, num_samples, crop, box_c, marks_c) -> dict:
    meta = dataclasses.asdict(source)
    meta["face_box"] = None if source.face_box is None else [float(v) for v in source.face_box]
    meta["landmarks"] = None if source.landmarks is None else np.asarray(source.landmarks, float).tolist()
    meta.update(
        cache_version=CACHE_VERSION,
        start=start,
        num_frames=int(num_frames),
        num_samples=int(num_samples),
        duration=num_samples / config.sample_rate,
        fps=config.fps,
        sample_rate=config.sample_rate,
        image_size=config.image_size,
        crop_box=[int(v) for v in crop],
        face_box_crop=[round(float(v), 2) for v in box_c],
        landmarks_crop=np.round(marks_c, 2).tolist(),
    )
    return meta


# ------------------------------------------------------------------------------- many clips
def preprocess_clips(
    sources: Iterable[ClipSource],
    cache_dir: PathLike,
    config: Optional[PreprocessConfig] = None,
    num_workers: int = 0,
    progress: bool = True,
) -> PreprocessReport:
    """Preprocess every clip of ``sources`` into ``cache_dir``; bad clips are recorded, never fatal.

    Clips whose folder exists are skipped (the run is resumable). At the end ``manifest.jsonl``
    is rebuilt from the clip folders and ``rejects.jsonl`` from earlier and new rejects (a clip
    kept now leaves the rejects).

    Args:
        sources: the clips (keys unique per dataset).
        cache_dir: cache root (created).
        config: settings (defaults: :class:`PreprocessConfig`).
        num_workers: 0 works in this process; more uses a spawn process pool, one MTCNN per worker.
        progress: show a tqdm bar.

    Returns:
        :class:`PreprocessReport` of this run.
    """
    from tqdm.auto import tqdm

    config = config or PreprocessConfig()
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(cache)
    report, started = PreprocessReport(), time.perf_counter()
    todo = []
    for source in sources:
        if _is_done(cache, source):
            report.skipped.append(source.key)
        else:
            todo.append(source)
    outdated = sum((clip_folder(cache, source) / "meta.json").is_file() for source in todo)
    if outdated:
        log.info("re-making %d clips of stereo sources cached before version %d (3 dB too loud)",
                 outdated, CACHE_VERSION)
    bar = tqdm(total=len(todo), desc=f"preprocess {cache.name}", unit="clip", disable=not progress)
    for source, outcome in _run(todo, cache, config, num_workers):
        if isinstance(outcome, dict) and "reason" in outcome:
            report.rejected.append(outcome)
            log.warning("rejected %s/%s: %s (%s)", source.dataset, source.key, outcome["reason"], outcome["detail"])
        else:
            report.kept.append(source.key)
            report.media_seconds += float(outcome["duration"])
        bar.update(1)
    bar.close()
    write_manifest(cache)
    _write_rejects(cache, report.rejected)
    report.seconds = time.perf_counter() - started
    log.info("preprocessing into %s: %s", cache, report)
    return report


def _run(todo: list[ClipSource], cache: Path, config: PreprocessConfig, num_workers: int):
    """Yield ``(source, meta or reject record)`` as clips finish."""
    if num_workers <= 0 or len(todo) <= 1:
        for source in todo:
            yield source, _safe_process(source, str(cache), config)
        return
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(num_workers, mp_context=context, initializer=_worker_init,
                                initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_safe_process, source, str(cache), config): source for source in todo}
        for future in cf.as_completed(futures):
            yield futures[future], future.result()


def _worker_init(parent_pid: int) -> None:
    import torch

    exit_with_parent(parent_pid)  # a killed run must not leave its workers behind
    torch.set_num_threads(1)  # one process per core


def _safe_process(source: ClipSource, cache_dir: str, config: PreprocessConfig) -> dict:
    """:func:`preprocess_clip`, with any failure turned into a reject record."""
    try:
        return preprocess_clip(source, cache_dir, config)
    except ClipRejected as err:
        return _reject_record(source, err.reason, err.detail)
    except Exception as err:  # a bad clip must never stop the run: record what happened
        log.exception("unexpected failure on %s", source.video_path)
        return _reject_record(source, "error", f"{source.video_path}: {type(err).__name__}: {err}")


def _reject_record(source: ClipSource, reason: str, detail: str) -> dict:
    return {"key": source.key, "dataset": source.dataset, "path": str(source.video_path),
            "reason": reason, "detail": detail}


def _tmp_name(what: str) -> str:
    """``.tmp-<what>@<host>@<pid>``: whose work in progress it is, on which machine."""
    return f".tmp-{what}@{socket.gethostname()}@{os.getpid()}"


def _remove_stale_tmp(cache: Path) -> None:
    """Remove ``.tmp-*`` folders of this host's processes that no longer run (an interrupted run).

    A pid means something only on its own host: another node's folders (a shared cache) are left
    alone, whatever this host's process table says. Folders of the older ``.tmp-*-<pid>`` form,
    without a host, are judged by the local pid as before.
    """
    host = socket.gethostname()
    for tmp in cache.glob(".tmp-*"):
        parts = tmp.name.rsplit("@", 2)
        if len(parts) == 3:
            owner, pid = parts[1], parts[2]
        else:
            owner, pid = host, tmp.name.rsplit("-", 1)[-1]
        if owner == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------------- manifest
def _atomic_write_lines(path: Path, records: Iterable[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(record) + "\n" for record in records))


def write_manifest(cache_dir: PathLike) -> list[dict]:
    """Rebuild ``<cache>/manifest.jsonl`` from the clip folders; returns its records (sorted)."""
    cache = Path(cache_dir)
    records = []
    for meta_file in sorted(cache.glob("clips/*/*/meta.json")):
        meta = json.loads(meta_file.read_text())
        records.append({"path": meta_file.parent.relative_to(cache).as_posix(), **meta})
    _atomic_write_lines(cache / "manifest.jsonl", records)
    return records


def _read_lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_manifest(cache_dir: PathLike) -> list[dict]:
    """Records of ``<cache>/manifest.jsonl`` (``path`` relative to the cache, plus the clip's meta).

    Raises:
        FileNotFoundError: no manifest in ``cache_dir`` (run :func:`preprocess_clips` first).
    """
    path = Path(cache_dir) / "manifest.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}: preprocess the clips first (preprocess_clips)")
    records = _read_lines(path)
    _warn_if_outdated(Path(cache_dir), records)
    return records


def _warn_if_outdated(cache: Path, records: list[dict]) -> None:
    """Warn (once per cache and count) about clips written by an older :data:`CACHE_VERSION`."""
    old = sum(int(r.get("cache_version", 1)) < CACHE_VERSION for r in records)
    if old and (str(cache.resolve()), old) not in _WARNED:
        _WARNED.add((str(cache.resolve()), old))
        log.warning("%s: %d clips were preprocessed before cache version %d: those with a stereo source "
                    "hold audio 3 dB too loud. To rebuild them, run `python -m experiments.prepare` again "
                    "on this cache: it re-makes the clips of stereo sources and marks the others current.",
                    cache, old, CACHE_VERSION)


_WARNED: set[tuple[str, int]] = set()


def load_rejects(cache_dir: PathLike) -> list[dict]:
    """Records of ``<cache>/rejects.jsonl`` (key, dataset, path, reason, detail); empty if none."""
    return _read_lines(Path(cache_dir) / "rejects.jsonl")


def _write_rejects(cache: Path, new: list[dict]) -> None:
    kept = {(r["dataset"], r["key"]) for r in load_manifest(cache)}
    merged = {(r["dataset"], r["key"]): r for r in load_rejects(cache)}
    merged.update({(r["dataset"], r["key"]): r for r in new})
    merged = {k: r for k, r in merged.items() if k not in kept}
    _atomic_write_lines(cache / "rejects.jsonl", merged.values())


# ------------------------------------------------------------------------------- reading
class CachedClip:
    """Read access to one preprocessed clip folder.

    Args:
        folder: ``<cache>/clips/<dataset>/<key>``, or a manifest record's path joined to the cache.
    """

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        if not (self.folder / "meta.json").is_file():
            raise FileNotFoundError(f"{self.folder} is not a preprocessed clip folder (no meta.json)")
        self.meta: dict = json.loads((self.folder / "meta.json").read_text())

    @property
    def num_frames(self) -> int:
        return int(self.meta["num_frames"])

    def frames(self, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Frames ``start`` .. ``stop - 1`` (25 fps indices) as (n, S, S, 3) uint8 RGB.

        Raises:
            ValueError: the range is empty or outside ``[0, num_frames]``.
        """
        stop = self.num_frames if stop is None else stop
        if not 0 <= start < stop <= self.num_frames:
            raise ValueError(f"frame range [{start}, {stop}) outside [0, {self.num_frames}) of {self.folder}")
        return _decode_range(self.folder / "video.mp4", float(self.meta["fps"]), start, stop)

    def wav(self) -> np.ndarray:
        """(S,) float32 audio in [-1, 1] at the clip's sample rate."""
        return np.load(self.folder / "audio.npy")

    def mel(self) -> np.ndarray:
        """(80, T) float32 log-mel."""
        return np.load(self.folder / "mel.npy")

    def masks(self) -> dict[str, np.ndarray]:
        """``face`` and ``lip``: (S, S) uint8 {0, 1}."""
        with np.load(self.folder / "masks.npz") as data:
            return {"face": data["face"], "lip": data["lip"]}

    def ref(self) -> np.ndarray:
        """(S, S, 3) uint8 RGB reference image (the first frame)."""
        from PIL import Image

        with Image.open(self.folder / "ref.png") as image:
            return np.array(image.convert("RGB"))  # writable copy


def _decode_range(path: Path, fps: float, start: int, stop: int) -> np.ndarray:
    """Frames ``start`` .. ``stop - 1`` of a constant-rate video written by the core, (n, H, W, 3) uint8.

    Frame ``k`` has timestamp ``k / fps`` exactly (we wrote the file), so frames are picked by
    timestamp after seeking to the keyframe before ``start``. Decoding is single-threaded: a
    DataLoader already runs one process per core, and closing a frame-threaded FFmpeg decoder
    in the middle of a stream was seen to hang after heavy use of the encoder in that process.
    """
    import av

    out: Optional[np.ndarray] = None
    count = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if start > 0:
                container.seek(int(start / fps / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                index = int(round(frame.time * fps))
                if index >= stop:
                    break
                if index >= start:
                    image = frame.to_ndarray(format="rgb24")  # (H, W, 3)
                    out = np.empty((stop - start, *image.shape), np.uint8) if out is None else out
                    out[index - start] = image
                    count += 1
    except (av.FFmpegError, OSError) as err:
        raise MediaError(path, "unreadable", f"decoding frames {start}-{stop}: {err}") from err
    if out is None or count != stop - start:
        raise MediaError(path, "empty", f"decoded {count} of frames {start}-{stop - 1}")
    return out


def load_clip(cache_dir: PathLike, record: dict) -> CachedClip:
    """The :class:`CachedClip` of a manifest ``record`` in ``cache_dir``."""
    return CachedClip(Path(cache_dir) / record["path"])
