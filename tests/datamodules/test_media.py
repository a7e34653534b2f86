"""PyAV reading/writing: frame-rate resampling, audio resampling, atomic writes, errors."""

from __future__ import annotations

import os
import stat
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from datamodules.media import (
    MediaError,
    Mp4Writer,
    iter_frames,
    probe,
    read_audio,
    read_video,
    write_mp4,
)


def _index_frames(num: int, size: int = 32) -> np.ndarray:
    """Frames whose mean grey level encodes their index (robust to H.264 at crf 0)."""
    levels = np.linspace(10, 245, num).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num, size, size, 3)).copy()


def _write_raw(path: Path, frames: np.ndarray, fps: int, audio: np.ndarray | None = None,
               sample_rate: int = 44100, layout: str = "stereo") -> None:
    """Write a clip at an arbitrary fps / audio layout (write_mp4 covers the nfy defaults only)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "0"}
        astream = None if audio is None else container.add_stream("aac", rate=sample_rate, layout=layout)
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
        if astream is not None:
            channels = 2 if layout == "stereo" else 1
            planar = np.ascontiguousarray(np.tile(audio[None, :], (channels, 1)).astype(np.float32))
            for offset in range(0, planar.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(planar[:, offset : offset + 1024], format="fltp", layout=layout)
                frame.sample_rate, frame.pts, frame.time_base = sample_rate, offset, Fraction(1, sample_rate)
                container.mux(astream.encode(frame))
            container.mux(astream.encode(None))


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    frames = _index_frames(50)
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)).astype(np.float32)
    path = write_mp4(tmp_path / "clip.mp4", frames, fps=25, audio=tone, crf=0)
    info = probe(path)
    assert (info.fps, info.width, info.height, info.sample_rate, info.channels) == (25.0, 32, 32, 16000, 1)
    video = read_video(path)
    assert video.shape == (50, 32, 32, 3)
    np.testing.assert_allclose(video.mean(axis=(1, 2, 3)), frames.mean(axis=(1, 2, 3)), atol=2)
    wav = read_audio(path)
    assert abs(wav.size - tone.size) <= 640  # within one video frame (AAC pads its last frame)
    peak = np.abs(np.fft.rfft(wav[:16000])).argmax()  # 1 s window -> bin index == Hz
    assert peak == 440


def test_30fps_is_resampled_to_25fps_by_nearest_timestamp(tmp_path: Path) -> None:
    frames = _index_frames(60)  # 2 s at 30 fps
    _write_raw(tmp_path / "v30.mp4", frames, fps=30)
    video = read_video(tmp_path / "v30.mp4", fps=25)
    assert video.shape[0] == 50
    # output frame k at t = k / 25 takes source frame round(k * 30 / 25)
    expected = frames[np.minimum(np.round(np.arange(50) * 30 / 25).astype(int), 59)].mean(axis=(1, 2, 3))
    np.testing.assert_allclose(video.mean(axis=(1, 2, 3)), expected, atol=2)


def test_start_end_window(tmp_path: Path) -> None:
    frames = _index_frames(75)
    write_mp4(tmp_path / "clip.mp4", frames, crf=0)
    video = read_video(tmp_path / "clip.mp4", start=1.0, end=2.0)
    assert video.shape[0] == 25
    np.testing.assert_allclose(video.mean(axis=(1, 2, 3)), frames[25:50].mean(axis=(1, 2, 3)), atol=2)


def test_stereo_44k_audio_becomes_16k_mono(tmp_path: Path) -> None:
    tone = (0.3 * np.sin(2 * np.pi * 1000 * np.arange(44100) / 44100)).astype(np.float32)
    _write_raw(tmp_path / "stereo.mp4", _index_frames(25), fps=25, audio=tone)
    wav = read_audio(tmp_path / "stereo.mp4")
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(wav.size - 16000) <= 640
    assert np.abs(np.fft.rfft(wav[:16000])).argmax() == 1000
    # the same tone on both channels: their average is the tone (AAC is lossy: 1 % on the peak)
    assert np.abs(wav[2000:14000]).max() == pytest.approx(0.3, rel=0.01)


def _write_wav(path: Path, channels: np.ndarray, sample_rate: int) -> None:
    """Write (C, S) float32 samples losslessly (32-bit float PCM in a WAV file)."""
    layout = {1: "mono", 2: "stereo"}[channels.shape[0]]
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_f32le", rate=sample_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(channels, np.float32), format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = sample_rate, 0, Fraction(1, sample_rate)
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _stereo(left_amp: float, left_hz: float, right_amp: float, right_hz: float, rate: int) -> np.ndarray:
    t = np.arange(rate) / rate  # 1 s
    return np.stack([left_amp * np.sin(2 * np.pi * left_hz * t),
                     right_amp * np.sin(2 * np.pi * right_hz * t)]).astype(np.float32)  # (2, S)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_stereo_is_downmixed_to_the_exact_channel_average(tmp_path: Path) -> None:
    stereo = _stereo(0.3, 440, 0.5, 660, 16000)  # distinct tones: a swap or a single channel would show
    _write_wav(tmp_path / "lr.wav", stereo, 16000)
    wav = read_audio(tmp_path / "lr.wav", sample_rate=16000)
    expected = stereo.mean(axis=0)
    assert wav.shape == expected.shape
    np.testing.assert_allclose(wav, expected, atol=1e-4)
    assert _rms(wav) / _rms(expected) == pytest.approx(1.0, abs=1e-4)  # no 3 dB (sqrt 2) gain


def test_stereo_downmix_gain_survives_resampling(tmp_path: Path) -> None:
    stereo = _stereo(0.3, 440, 0.5, 660, 44100)
    _write_wav(tmp_path / "lr.wav", stereo, 44100)
    _write_wav(tmp_path / "mean.wav", stereo.mean(axis=0, keepdims=True), 44100)
    wav = read_audio(tmp_path / "lr.wav")  # 44.1 kHz stereo -> 16 kHz mono
    expected = read_audio(tmp_path / "mean.wav")  # the numpy average, resampled the same way
    np.testing.assert_allclose(wav, expected, atol=1e-4)
    assert _rms(wav) / _rms(expected) == pytest.approx(1.0, abs=1e-4)


def test_loud_stereo_channels_do_not_clip(tmp_path: Path) -> None:
    stereo = _stereo(0.9, 440, 0.8, 440, 16000)  # both above 1/sqrt(2): (L+R)/sqrt(2) would clip
    _write_wav(tmp_path / "loud.wav", stereo, 16000)
    wav = read_audio(tmp_path / "loud.wav", sample_rate=16000)
    np.testing.assert_allclose(wav, stereo.mean(axis=0), atol=1e-4)
    assert np.abs(wav).max() == pytest.approx(0.85, abs=1e-3)


def test_write_is_atomic_and_validates(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even height and width"):
        write_mp4(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(tmp_path / "float.mp4", np.zeros((2, 32, 32, 3), np.float32))
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no temporary file left


@pytest.mark.parametrize(
    "content, reader, reason",
    [
        (None, read_video, "unreadable"),  # missing file
        (b"not a video at all" * 100, read_video, "unreadable"),
        ("silent", read_audio, "no_audio"),
    ],
)
def test_errors_name_file_and_reason(tmp_path: Path, content, reader, reason) -> None:
    path = tmp_path / "bad.mp4"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "silent":
        write_mp4(path, _index_frames(5))  # no audio track
    with pytest.raises(MediaError) as info:
        reader(path)
    assert info.value.reason == reason
    assert str(path) in str(info.value)


def test_real_clip_lengths_agree(shared_data: Path) -> None:
    path = shared_data / "clips" / "kid_1.mp4"
    video, wav = read_video(path), read_audio(path)
    assert video.shape[1:] == (512, 512, 3)
    assert abs(wav.size / 16000 - video.shape[0] / 25) <= 1 / 25


def test_iter_frames_gives_the_frames_iter_video_frames_converts(tmp_path: Path) -> None:
    frames = _index_frames(60)  # 2 s at 30 fps: one source frame in six is skipped at 25 fps
    _write_raw(tmp_path / "v30.mp4", frames, fps=30)
    raw = list(iter_frames(tmp_path / "v30.mp4", fps=25, start=0.4, end=1.6))
    rgb = read_video(tmp_path / "v30.mp4", fps=25, start=0.4, end=1.6)
    assert len(raw) == len(rgb) == 30
    assert all(isinstance(frame, av.VideoFrame) and frame.format.name == "yuv420p" for frame in raw)
    np.testing.assert_array_equal(np.stack([frame.to_ndarray(format="rgb24") for frame in raw]), rgb)


def test_mp4_writer_streams_av_frames_with_exact_timestamps_and_keyframes(tmp_path: Path) -> None:
    frames = _index_frames(60)
    yuv = [av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p") for image in frames]
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(40000) / 16000)).astype(np.float32)
    with Mp4Writer(tmp_path / "clip.mp4", 32, 32, fps=25, crf=0, keyframe_interval=10, sample_rate=16000) as writer:
        for i, frame in enumerate(yuv):
            frame.pts = 1000 + 7 * i  # ignored: frame k is written at k / fps
            writer.write(frame if i % 2 else frames[i])  # av frames and RGB arrays alike
        writer.write_audio(tone)
    assert writer.num_frames == 60 and [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
    np.testing.assert_allclose(read_video(tmp_path / "clip.mp4").mean(axis=(1, 2, 3)), frames.mean(axis=(1, 2, 3)),
                               atol=2)
    with av.open(str(tmp_path / "clip.mp4")) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        times = sorted(float(p.pts * stream.time_base) for p in packets)
        keys = sorted(round(float(p.pts * stream.time_base) * 25) for p in packets if p.is_keyframe)
    np.testing.assert_allclose(times, np.arange(60) / 25, atol=1e-6)
    assert keys[0] == 0 and max(np.diff(keys)) <= 10  # a keyframe at least every 10 frames
    assert abs(read_audio(tmp_path / "clip.mp4").size - tone.size) <= 640


def test_mp4_writer_leaves_nothing_on_error_or_without_frames(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="stop"), Mp4Writer(tmp_path / "a.mp4", 32, 32) as writer:
        writer.write(_index_frames(3)[0])
        raise RuntimeError("stop")
    with pytest.raises(ValueError, match="no frame"), Mp4Writer(tmp_path / "b.mp4", 32, 32):
        pass
    with pytest.raises(ValueError, match="no audio track"), Mp4Writer(tmp_path / "c.mp4", 32, 32) as writer:
        writer.write(_index_frames(3)[0])
        writer.write_audio(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="even"):
        Mp4Writer(tmp_path / "d.mp4", 31, 32)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_written_mp4_gets_the_usual_mode(tmp_path: Path, umask: int) -> None:
    """The atomic write goes through a temporary file, yet the result is 0666 & ~umask like any new file."""
    previous = os.umask(umask)
    try:
        path = write_mp4(tmp_path / "clip.mp4", _index_frames(2))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
