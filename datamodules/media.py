"""Reading and writing audio-video files with PyAV (FFmpeg inside the wheel, no system ffmpeg).

Every path in nfy that touches a media file goes through these functions, so that datasets,
generation and the metric suite decode the same way:

* video is resampled to a constant frame rate by picking, for each output instant
  ``start + k / fps``, the source frame nearest in time (what FFmpeg's ``fps`` filter does);
* audio is resampled to mono float32 at the requested rate with FFmpeg's resampler;
* mp4 files are written as H.264 (yuv420p) + AAC, atomically: a temporary file in the same
  folder is renamed into place, so an interrupted write leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import av
import numpy as np

from datamodules.conventions import FPS, SAMPLE_RATE

PathLike = Union[str, os.PathLike]


class MediaError(RuntimeError):
    """A media file cannot be used; ``reason`` is a short code, the message names the file.

    Reason codes: ``unreadable``, ``no_video``, ``no_audio``, ``empty``.
    """

    def __init__(self, path: PathLike, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` reads from a container's headers (no decoding)."""

    path: str
    duration: float
    """Seconds; the longest stream's duration when the container gives none."""
    has_video: bool
    has_audio: bool
    fps: Optional[float] = None
    width: Optional[int] = None
    height: Optional[int] = None
    num_frames: Optional[int] = None
    sample_rate: Optional[int] = None
    channels: Optional[int] = None


@contextlib.contextmanager
def _open(path: PathLike) -> Iterator[av.container.InputContainer]:
    if not Path(path).is_file():
        raise MediaError(path, "unreadable", "no such file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as err:
        raise MediaError(path, "unreadable", str(err)) from err
    try:
        yield container
    finally:
        container.close()


def probe(path: PathLike) -> MediaInfo:
    """Read stream properties of ``path``.

    Raises:
        MediaError: ``unreadable`` if FFmpeg cannot open the file.
    """
    with _open(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        durations = []
        if container.duration is not None:
            durations.append(container.duration / av.time_base)
        for stream in (video, audio):
            if stream is not None and stream.duration is not None and stream.time_base:
                durations.append(float(stream.duration * stream.time_base))
        fps = float(video.average_rate) if video is not None and video.average_rate else None
        return MediaInfo(
            path=str(path),
            duration=max(durations) if durations else 0.0,
            has_video=video is not None,
            has_audio=audio is not None,
            fps=fps,
            width=video.codec_context.width if video is not None else None,
            height=video.codec_context.height if video is not None else None,
            num_frames=(video.frames or None) if video is not None else None,
            sample_rate=audio.codec_context.sample_rate if audio is not None else None,
            channels=audio.codec_context.channels if audio is not None else None,
        )


def iter_video_frames(
    path: PathLike,
    fps: float = FPS,
    start: float = 0.0,
    end: Optional[float] = None,
    transform: Optional[Callable[[np.ndarray], np.ndarray]] = None,
) -> Iterator[np.ndarray]:
    """Yield RGB frames of ``path`` at a constant ``fps`` between ``start`` and ``end`` seconds.

    Frames are streamed (memory stays at two decoded frames), so hour-long sources are fine.
    Output frame ``k`` is the source frame nearest in time to ``start + k / fps``.

    Args:
        path: any container FFmpeg reads.
        fps: output frame rate.
        start: first instant in seconds (seeks to the keyframe before it).
        end: last instant (exclusive) in seconds; ``None`` reads to the end.
        transform: applied to each output frame (e.g. crop and resize) before it is yielded.

    Yields:
        ``uint8`` arrays of shape (H, W, 3), or whatever ``transform`` returns.

    Raises:
        MediaError: ``unreadable`` or ``no_video``.
    """
    step = 1.0 / fps
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no_video")
        stream = container.streams.video[0]
        # Slice threads only: a frame-threaded decoder that is closed before it is drained (a
        # caller that stops early, an exception in ``transform``) can deadlock in PyAV.
        stream.thread_type = "SLICE"
        src_step = 1.0 / float(stream.average_rate) if stream.average_rate else step
        if start > 0 and stream.time_base:
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
        k, prev, prev_t = 0, None, None
        emit = transform or (lambda image: image)
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else index * src_step
                if prev is not None:
                    # every target instant closer to the previous frame than to this one
                    while start + k * step <= (prev_t + t) / 2 and (end is None or start + k * step < end):
                        yield emit(prev)
                        k += 1
                if end is not None and start + k * step >= end:
                    return
                prev, prev_t = frame.to_ndarray(format="rgb24"), t
        except av.FFmpegError as err:
            raise MediaError(path, "unreadable", f"decoding failed after {k} frames: {err}") from err
        if prev is None:
            return
        stop = prev_t + src_step if end is None else min(end, prev_t + src_step)
        while start + k * step < stop - 1e-6:
            yield emit(prev)
            k += 1


def read_video(
    path: PathLike,
    fps: float = FPS,
    start: float = 0.0,
    end: Optional[float] = None,
    transform: Optional[Callable[[np.ndarray], np.ndarray]] = None,
) -> np.ndarray:
    """Decode ``path`` into a (T, H, W, 3) ``uint8`` RGB array at ``fps`` (see :func:`iter_video_frames`).

    Raises:
        MediaError: ``unreadable``, ``no_video``, or ``empty`` when no frame lies in the range.
    """
    frames = list(iter_video_frames(path, fps=fps, start=start, end=end, transform=transform))
    if not frames:
        raise MediaError(path, "empty", f"no video frame between {start} s and {end} s")
    return np.stack(frames)


def read_audio(
    path: PathLike,
    sample_rate: int = SAMPLE_RATE,
    start: float = 0.0,
    end: Optional[float] = None,
) -> np.ndarray:
    """Decode the first audio stream of ``path`` to mono float32 in [-1, 1] at ``sample_rate``.

    Channels are averaged (FFmpeg's downmix); an audio stream that starts after the video is
    padded with leading zeros so that sample 0 is time 0 of the container.

    Raises:
        MediaError: ``unreadable``, ``no_audio``, or ``empty``.
    """
    chunks: list[np.ndarray] = []
    have = 0
    need = None if end is None else int(round(end * sample_rate))
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(path, "no_audio")
        stream = container.streams.audio[0]
        # AAC pads its last frame: the stream's own duration says where the signal really ends
        if stream.duration is not None and stream.time_base:
            stream_end = float((stream.duration + (stream.start_time or 0)) * stream.time_base)
            total = int(round(stream_end * sample_rate))
            need = total if need is None else min(need, total)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        try:
            for frame in container.decode(stream):
                if not chunks and frame.time and frame.time > 0:
                    lead = np.zeros(int(round(frame.time * sample_rate)), np.float32)
                    chunks.append(lead)
                    have += lead.size
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    have += chunk.size
                if need is not None and have >= need:
                    break
            else:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray().reshape(-1))
        except av.FFmpegError as err:
            raise MediaError(path, "unreadable", f"audio decoding failed: {err}") from err
    wav = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    wav = wav[int(round(start * sample_rate)) : need]
    if wav.size == 0:
        raise MediaError(path, "empty", f"no audio between {start} s and {end} s")
    return np.clip(wav, -1.0, 1.0)


def write_mp4(
    path: PathLike,
    frames: np.ndarray,
    fps: float = FPS,
    audio: Optional[np.ndarray] = None,
    sample_rate: int = SAMPLE_RATE,
    crf: int = 18,
    preset: str = "veryfast",
) -> Path:
    """Write (T, H, W, 3) ``uint8`` RGB ``frames`` and optional mono float32 ``audio`` as H.264 + AAC.

    The file appears at ``path`` only when complete (written to a temporary file in the same
    folder, then renamed). H and W must be even (yuv420p).

    Args:
        path: destination ``.mp4``; parent folders are created.
        frames: (T, H, W, 3) uint8.
        fps: frame rate of ``frames``.
        audio: (S,) float32 in [-1, 1], or ``None`` for a silent video without audio track.
        sample_rate: rate of ``audio``.
        crf: x264 constant rate factor (lower is better; 18 is visually lossless).
        preset: x264 speed preset.

    Returns:
        The written path.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty (T, H, W, 3) uint8 array, got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 (yuv420p) needs even height and width, got {height}x{width}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".mp4", prefix=f".{path.stem}.", dir=path.parent)
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            vstream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
            vstream.options = {"crf": str(crf), "preset": preset}
            astream = None
            if audio is not None:
                astream = container.add_stream("aac", rate=sample_rate, layout="mono")
            for image in frames:
                container.mux(vstream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(vstream.encode(None))
            if astream is not None:
                _encode_audio(container, astream, np.asarray(audio, np.float32).reshape(-1), sample_rate)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _encode_audio(container, stream, audio: np.ndarray, sample_rate: int, chunk: int = 1024) -> None:
    audio = np.clip(audio, -1.0, 1.0)
    for offset in range(0, audio.size, chunk):
        piece = np.ascontiguousarray(audio[offset : offset + chunk]).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = offset
        frame.time_base = Fraction(1, sample_rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
