"""Reading and writing audio-video files with PyAV (FFmpeg inside the wheel, no system ffmpeg).

Every path in nfy that touches a media file goes through these functions, so that datasets,
generation and the metric suite decode the same way:

* video is resampled to a constant frame rate by picking, for each output instant
  ``start + k / fps``, the source frame nearest in time (what FFmpeg's ``fps`` filter does);
* audio is resampled to float32 at the requested rate with FFmpeg's resampler, and its
  channels are averaged to mono;
* mp4 files are written as H.264 (yuv420p) + AAC, atomically: a temporary file in the same
  folder is renamed into place, so an interrupted write leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import av
import numpy as np

from common.files import AtomicFile
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


def iter_frames(
    path: PathLike,
    fps: float = FPS,
    start: float = 0.0,
    end: Optional[float] = None,
) -> Iterator[av.VideoFrame]:
    """Yield the decoded frames of ``path`` at a constant ``fps`` between ``start`` and ``end`` seconds.

    Like :func:`iter_video_frames`, but the frames stay FFmpeg frames in the file's own pixel
    format (usually yuv420p), for callers that crop, scale or re-encode them without a round
    trip through RGB. A source frame nearest to several output instants is yielded several
    times (the same object); its ``pts`` is the source's.

    Args:
        path: any container FFmpeg reads.
        fps: output frame rate.
        start: first instant in seconds (seeks to the keyframe before it).
        end: last instant (exclusive) in seconds; ``None`` reads to the end.

    Yields:
        :class:`av.VideoFrame` objects, output frame ``k`` nearest in time to ``start + k / fps``.

    Raises:
        MediaError: ``unreadable`` or ``no_video``.
    """
    step = 1.0 / fps
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no_video")
        stream = container.streams.video[0]
        # Slice threads only: a frame-threaded decoder that is closed before it is drained (a
        # caller that stops early or raises while it holds the generator) can deadlock in PyAV.
        stream.thread_type = "SLICE"
        src_step = 1.0 / float(stream.average_rate) if stream.average_rate else step
        if start > 0 and stream.time_base:
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
        k, prev, prev_t = 0, None, None
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else index * src_step
                if prev is not None:
                    # every target instant closer to the previous frame than to this one
                    while start + k * step <= (prev_t + t) / 2 and (end is None or start + k * step < end):
                        yield prev
                        k += 1
                if end is not None and start + k * step >= end:
                    return
                prev, prev_t = frame, t
        except av.FFmpegError as err:
            raise MediaError(path, "unreadable", f"decoding failed after {k} frames: {err}") from err
        if prev is None:
            return
        stop = prev_t + src_step if end is None else min(end, prev_t + src_step)
        while start + k * step < stop - 1e-6:
            yield prev
            k += 1


def iter_video_frames(
    path: PathLike,
    fps: float = FPS,
    start: float = 0.0,
    end: Optional[float] = None,
    transform: Optional[Callable[[np.ndarray], np.ndarray]] = None,
) -> Iterator[np.ndarray]:
    """Yield RGB frames of ``path`` at a constant ``fps`` between ``start`` and ``end`` seconds.

    Frames are streamed (memory stays at two decoded frames), so hour-long sources are fine.
    Output frame ``k`` is the source frame nearest in time to ``start + k / fps``
    (see :func:`iter_frames`); only the frames that are yielded are converted to RGB.

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
    emit = transform or (lambda image: image)
    last, image = None, None
    for frame in iter_frames(path, fps=fps, start=start, end=end):
        if frame is not last:  # a repeated source frame is converted once
            last, image = frame, frame.to_ndarray(format="rgb24")  # (H, W, 3)
        yield emit(image)


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

    Channels are averaged, ``(L + R) / 2`` for stereo: FFmpeg's own downmix to mono would give
    ``(L + R) / sqrt(2)``, 3 dB louder, and clip channels above 0.707. An audio stream that
    starts after the video is padded with leading zeros so that sample 0 is time 0 of the
    container.

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
        # keep the source's channels (planar float) and average them below, in numpy
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        try:
            for frame in container.decode(stream):
                if not chunks and frame.time and frame.time > 0:
                    lead = np.zeros(int(round(frame.time * sample_rate)), np.float32)
                    chunks.append(lead)
                    have += lead.size
                for out in resampler.resample(frame):
                    chunk = _channel_mean(out)
                    chunks.append(chunk)
                    have += chunk.size
                if need is not None and have >= need:
                    break
            else:
                for out in resampler.resample(None):
                    chunks.append(_channel_mean(out))
        except av.FFmpegError as err:
            raise MediaError(path, "unreadable", f"audio decoding failed: {err}") from err
    wav = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    wav = wav[int(round(start * sample_rate)) : need]
    if wav.size == 0:
        raise MediaError(path, "empty", f"no audio between {start} s and {end} s")
    return np.clip(wav, -1.0, 1.0)


def _channel_mean(frame: av.AudioFrame) -> np.ndarray:
    """(S,) float32 average of the channels of a planar float frame (C, S)."""
    return frame.to_ndarray().mean(axis=0, dtype=np.float32)


class Mp4Writer:
    """Stream video frames (and then optional mono audio) into an H.264 (yuv420p) + AAC mp4, atomically.

    Frames are encoded as they come, so a clip never has to sit in memory whole. The file is
    written to a temporary file in the same folder and renamed to ``path`` by :meth:`close`;
    :meth:`abort` (or leaving the ``with`` block by an exception) removes it.

    Frame ``k`` gets timestamp ``k / fps`` exactly, whatever the ``pts`` of the frame given.

    Args:
        path: destination ``.mp4``; parent folders are created.
        width: frame width (even).
        height: frame height (even).
        fps: frame rate.
        crf: x264 constant rate factor (lower is better; 18 is visually lossless).
        preset: x264 speed preset.
        keyframe_interval: at most this many frames between keyframes (x264's ``keyint``);
            ``None`` keeps x264's 250. Short intervals make reading a window cheap (a reader
            decodes from the keyframe before it) at the cost of a larger file.
        threads: x264 threads; 0 lets x264 choose (several per core), 1 suits one process per core.
        sample_rate: rate of the audio given to :meth:`write_audio`; ``None``: no audio track.

    Example::

        with Mp4Writer(path, 512, 512) as writer:
            for frame in frames:
                writer.write(frame)
    """

    def __init__(
        self,
        path: PathLike,
        width: int,
        height: int,
        fps: float = FPS,
        crf: int = 18,
        preset: str = "veryfast",
        keyframe_interval: Optional[int] = None,
        threads: int = 0,
        sample_rate: Optional[int] = None,
    ) -> None:
        if height % 2 or width % 2:
            raise ValueError(f"H.264 (yuv420p) needs even height and width, got {height}x{width}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sample_rate = sample_rate
        self.num_frames = 0
        self._file = AtomicFile(self.path, suffix=".mp4")  # the muxer reads the format from the extension
        tmp = str(self._file.tmp)
        self._time_base = Fraction(1, 1) / Fraction(fps).limit_denominator(1001)
        try:
            self._container = av.open(tmp, mode="w", format="mp4")
            stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf), "preset": preset}
            if keyframe_interval is not None:
                stream.codec_context.gop_size = int(keyframe_interval)
            stream.codec_context.thread_count = int(threads)
            self._video = stream
            self._audio = None
            if sample_rate is not None:
                self._audio = self._container.add_stream("aac", rate=sample_rate, layout="mono")
        except BaseException:
            self.abort()
            raise

    def write(self, frame: Union[np.ndarray, av.VideoFrame]) -> None:
        """Encode one frame: (H, W, 3) ``uint8`` RGB, or an :class:`av.VideoFrame` of any pixel format."""
        if isinstance(frame, np.ndarray):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        frame.pts, frame.time_base = self.num_frames, self._time_base
        self._container.mux(self._video.encode(frame))
        self.num_frames += 1

    def write_audio(self, audio: np.ndarray) -> None:
        """Encode the whole (S,) float32 mono track (after the video frames), in [-1, 1]."""
        if self._audio is None:
            raise ValueError("this writer has no audio track (sample_rate=None)")
        self._container.mux(self._video.encode(None))
        self._video = None
        _encode_audio(self._container, self._audio, np.asarray(audio, np.float32).reshape(-1), self.sample_rate)
        self._audio = None

    def close(self) -> Path:
        """Flush the encoders, close the file and rename it into place; returns ``path``."""
        if self.num_frames == 0:
            self.abort()
            raise ValueError(f"no frame was written to {self.path}")
        try:
            if self._video is not None:
                self._container.mux(self._video.encode(None))
            self._container.close()
            self._file.commit()
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop what was written: the temporary file is removed, ``path`` is left untouched."""
        container = getattr(self, "_container", None)
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
        self._file.abort()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


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
    folder, then renamed; see :class:`Mp4Writer`). H and W must be even (yuv420p).

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
    with Mp4Writer(path, width, height, fps=fps, crf=crf, preset=preset,
                   sample_rate=None if audio is None else sample_rate) as writer:
        for image in frames:
            writer.write(image)
        if audio is not None:
            writer.write_audio(audio)
    return Path(path)


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
