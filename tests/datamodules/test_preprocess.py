"""The preprocessing core on real clips and on every kind of bad input, in one run each."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

import datamodules.preprocess as pre
from datamodules.audio import mel_frames
from datamodules.media import probe, read_video, write_mp4
from datamodules.preprocess import (
    CachedClip,
    ClipRejected,
    PreprocessConfig,
    load_clip,
    load_manifest,
    load_rejects,
    preprocess_clip,
    preprocess_clips,
)
from datamodules.sources import ClipSource

SIZE = 96
CONFIG = PreprocessConfig(image_size=SIZE, max_seconds=3.0)
BOX = (40.0, 30.0, 100.0, 110.0)  # face box of the synthetic clips (128x128 frames)


def _tone(seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (amplitude * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)


def _frames(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (int(seconds * 25), 128, 128, 3), dtype=np.uint8)


def _source(path: Path, key: str, **kwargs) -> ClipSource:
    return ClipSource(key=key, video_path=str(path), speaker=key, dataset="test", **kwargs)


def _synthetic(tmp: Path, key: str, seconds: float = 2.4, audio=True, **kwargs) -> ClipSource:
    """A noise video whose face box and landmarks are given (no detector needed)."""
    path = write_mp4(tmp / f"{key}.mp4", _frames(seconds), audio=_tone(seconds) if audio is True else audio)
    marks = np.array(BOX[:2]) + pre.facelib.MEAN_LANDMARKS * (np.array(BOX[2:]) - BOX[:2])
    return _source(path, key, face_box=BOX, landmarks=marks, **kwargs)


@pytest.fixture(scope="module")
def real_cache(shared_data, tmp_path_factory) -> tuple[Path, object]:
    """The two shortest real clips (MTCNN finds the face), capped to 3 s, at 96x96."""
    cache = tmp_path_factory.mktemp("real")
    sources = [_source(shared_data / "clips" / f"{k}.mp4", k, transcript=k) for k in ("kid_1", "kid_2")]
    return cache, preprocess_clips(sources, cache, CONFIG, progress=False)


def test_real_clips_kept_with_agreeing_lengths(real_cache) -> None:
    cache, report = real_cache
    assert report.num_kept == 2 and report.num_rejected == 0
    records = load_manifest(cache)
    assert [r["key"] for r in records] == ["kid_1", "kid_2"]
    for record in records:
        clip = load_clip(cache, record)
        assert record["fps"] == 25 and record["sample_rate"] == 16000 and record["path"] == f"clips/test/{record['key']}"
        info = probe(clip.folder / "video.mp4")
        assert (info.width, info.height, round(info.fps)) == (SIZE, SIZE, 25)
        assert abs(info.num_frames - record["num_frames"]) <= 1
        assert record["num_frames"] == 75  # 3 s cap
        assert abs(record["num_samples"] / 640 - record["num_frames"]) <= 1
        wav, mel = clip.wav(), clip.mel()
        assert wav.dtype == np.float32 and wav.size == record["num_samples"]
        assert mel.shape == (80, mel_frames(wav.size))
        masks = clip.masks()
        assert masks["face"].shape == masks["lip"].shape == (SIZE, SIZE)
        assert 0.1 < masks["face"].mean() < 0.6 and 0 < masks["lip"].mean() < masks["face"].mean() / 3
        assert clip.ref().shape == (SIZE, SIZE, 3)
        marks = np.array(record["landmarks_crop"])
        assert marks.shape == (5, 2) and (marks > 0).all() and (marks < SIZE).all()


def test_reader_windows_match_full_decode(real_cache) -> None:
    cache, _ = real_cache
    clip = CachedClip(cache / "clips" / "test" / "kid_1")
    full = read_video(clip.folder / "video.mp4")
    assert len(full) == clip.num_frames
    for start, stop in ((0, 18), (30, 48), (clip.num_frames - 5, clip.num_frames)):
        np.testing.assert_array_equal(clip.frames(start, stop), full[start:stop])
    np.testing.assert_allclose(clip.ref().astype(float), full[0].astype(float), atol=40)  # png vs crf-18 frame
    with pytest.raises(ValueError, match="outside"):
        clip.frames(10, clip.num_frames + 1)


def test_cached_frames_are_the_rgb_crop_of_the_source(real_cache, shared_data) -> None:
    """The YUV crop/scale + H.264 path gives the frames of the reference RGB crop and resize."""
    import av

    cache, _ = real_cache
    for key in ("kid_1", "kid_2"):
        clip = CachedClip(cache / "clips" / "test" / key)
        crop = tuple(clip.meta["crop_box"])
        assert all(v % 2 == 0 for v in crop)
        source = read_video(shared_data / "clips" / f"{key}.mp4", end=clip.num_frames / 25)  # (T, 512, 512, 3)
        reference = np.stack([pre.facelib.resize_image(pre.facelib.crop_square(image, crop), SIZE)
                              for image in source]).astype(float)
        cached = clip.frames().astype(float)
        psnr = 10 * np.log10(255.0**2 / np.mean((cached - reference) ** 2))
        assert psnr > 33, f"{key}: {psnr:.1f} dB"  # 36-37 dB at 96 px: crf 18 and 4:2:0 chroma
        assert np.abs(clip.ref() - reference[0]).mean() < 1.5  # lossless png of frame 0 (YUV path, no H.264)
        with av.open(str(clip.folder / "video.mp4")) as container:
            stream = container.streams.video[0]
            keys = sorted(round(float(p.pts * stream.time_base) * 25)
                          for p in container.demux(stream) if p.size and p.is_keyframe)
        assert keys[0] == 0 and max(np.diff(keys + [clip.num_frames])) <= CONFIG.keyframe_interval


def test_faces_in_photos_become_clips(shared_data, tmp_path) -> None:
    from PIL import Image

    sources = []
    for name in ("actor.jpg", "oldMan2.jpg", "Woman.png"):
        with Image.open(shared_data / "faces" / name) as image:
            image = image.convert("RGB")
            image.thumbnail((320, 320))
            still = np.asarray(image)[: image.height // 2 * 2, : image.width // 2 * 2]
        path = write_mp4(tmp_path / f"{Path(name).stem}.mp4", np.repeat(still[None], 55, 0), audio=_tone(2.2))
        sources.append(_source(path, Path(name).stem))
    report = preprocess_clips(sources, tmp_path / "cache", CONFIG, progress=False)
    assert report.num_kept == 3, load_rejects(tmp_path / "cache")
    for record in load_manifest(tmp_path / "cache"):
        assert record["num_frames"] == 55 and record["num_samples"] == 55 * 640


def test_bad_inputs_rejected_with_reason_good_ones_kept_and_rerun_skips(tmp_path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (media / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    noise = write_mp4(media / "noface.mp4", _frames(2.4, seed=3), audio=_tone(2.4))
    sources = [
        _synthetic(media, "good_a"),
        _source(media / "corrupt.mp4", "corrupt"),
        _synthetic(media, "noaudio", audio=None),
        _source(noise, "noface"),
        _synthetic(media, "short", seconds=1.5),
        _synthetic(media, "silent", audio=np.zeros(int(2.4 * 16000), np.float32)),
        _source(media / "missing.mp4", "missing"),
        _synthetic(media, "good_b"),
    ]
    cache = tmp_path / "cache"
    report = preprocess_clips(sources, cache, CONFIG, progress=False)
    assert sorted(report.kept) == ["good_a", "good_b"]
    reasons = {r["key"]: r["reason"] for r in load_rejects(cache)}
    assert reasons == {"corrupt": "unreadable", "noaudio": "no_audio", "noface": "no_face", "short": "too_short",
                       "silent": "silent", "missing": "unreadable"}
    for record in load_rejects(cache):
        assert record["path"] in record["detail"] and set(record) == {"key", "dataset", "path", "reason", "detail"}
    assert [r["key"] for r in load_manifest(cache)] == ["good_a", "good_b"]
    assert sorted(p.name for p in (cache / "clips" / "test").iterdir()) == ["good_a", "good_b"]
    assert not list(cache.glob(".tmp-*"))
    # rerun: finished clips are not redone, rejects are not duplicated
    stamp = (cache / "clips" / "test" / "good_a" / "video.mp4").stat().st_mtime_ns
    again = preprocess_clips(sources, cache, CONFIG, progress=False)
    assert sorted(again.skipped) == ["good_a", "good_b"] and again.num_kept == 0 and again.num_rejected == 6
    assert (cache / "clips" / "test" / "good_a" / "video.mp4").stat().st_mtime_ns == stamp
    assert len(load_rejects(cache)) == 6 and len(load_manifest(cache)) == 2


def test_interrupted_clip_leaves_nothing_and_run_resumes(tmp_path, monkeypatch) -> None:
    source = _synthetic(tmp_path, "clip")
    cache = tmp_path / "cache"

    def interrupted(wav):
        raise KeyboardInterrupt  # e.g. Ctrl-C while the clip is half written

    monkeypatch.setattr(pre, "log_mel", interrupted)
    with pytest.raises(KeyboardInterrupt):
        preprocess_clips([source], cache, CONFIG, progress=False)
    assert not (cache / "clips" / "test" / "clip").exists() and not list(cache.glob(".tmp-*"))
    # a folder left by a killed process (dead pid) of this host is cleaned up; the next run completes
    # the clip. Another node's folder in a shared cache is its work in progress: a local pid says
    # nothing about it, and it stays.
    host = socket.gethostname()
    (cache / f".tmp-test-clip@{host}@999999999").mkdir()
    (cache / ".tmp-test-clip-999999999").mkdir()  # the older form, without a host
    other = cache / f".tmp-test-clip@{host}-other-node@999999999"
    other.mkdir()
    monkeypatch.undo()
    report = preprocess_clips([source], cache, CONFIG, progress=False)
    assert report.kept == ["clip"] and list(cache.glob(".tmp-*")) == [other]


def test_unexpected_error_is_recorded_and_run_goes_on(tmp_path, monkeypatch) -> None:
    sources = [_synthetic(tmp_path, "a"), _synthetic(tmp_path, "b")]
    real = pre._save_png

    def fails_for_a(path, image):
        if "-a@" in path.parent.name:  # the temporary folder of clip "a" (.tmp-test-a@<host>@<pid>)
            raise RuntimeError("boom")
        real(path, image)

    monkeypatch.setattr(pre, "_save_png", fails_for_a)
    report = preprocess_clips(sources, tmp_path / "cache", CONFIG, progress=False)
    assert report.kept == ["b"] and report.rejected[0]["reason"] == "error"
    assert "RuntimeError: boom" in report.rejected[0]["detail"] and "a.mp4" in report.rejected[0]["detail"]
    assert not (tmp_path / "cache" / "clips" / "test" / "a").exists() and not list((tmp_path / "cache").glob(".tmp-*"))


def test_preprocess_clip_raises_clip_rejected_naming_file(tmp_path) -> None:
    source = _synthetic(tmp_path, "quiet", audio=np.full(int(2.4 * 16000), 1e-4, np.float32))
    with pytest.raises(ClipRejected, match="quiet.mp4") as info:
        preprocess_clip(source, tmp_path / "cache", CONFIG)
    assert info.value.reason == "silent"
    with pytest.raises(ValueError, match="unknown reject reason"):
        ClipRejected("bogus")


def test_start_end_and_box_only_source(tmp_path) -> None:
    source = _synthetic(tmp_path, "long", seconds=4.0)
    source.start, source.end, source.landmarks = 1.0, 3.5, None  # only a box: landmarks from the mean face
    meta = preprocess_clip(source, tmp_path / "cache", CONFIG)
    assert meta["num_frames"] == 63 and meta["start"] == 1.0  # 2.5 s
    assert json.loads((tmp_path / "cache" / "clips" / "test" / "long" / "meta.json").read_text()) == meta


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="image_size"):
        PreprocessConfig(image_size=15)
    with pytest.raises(ValueError, match="max_seconds"):
        PreprocessConfig(max_seconds=1.0)
    with pytest.raises(ValueError, match="box_scale"):
        PreprocessConfig(box_scale=0.5)


def test_process_pool_gives_same_clips(tmp_path) -> None:
    sources = [_synthetic(tmp_path, f"w{i}") for i in range(3)]
    report = preprocess_clips(sources, tmp_path / "pool", CONFIG, num_workers=2, progress=False)
    assert sorted(report.kept) == ["w0", "w1", "w2"]
    serial = preprocess_clip(sources[0], tmp_path / "serial", CONFIG)
    pooled = CachedClip(tmp_path / "pool" / "clips" / "test" / "w0")
    assert pooled.meta["num_frames"] == serial["num_frames"]
    np.testing.assert_array_equal(pooled.mel(), np.load(tmp_path / "serial" / "clips" / "test" / "w0" / "mel.npy"))


def _write_stereo_wav(path: Path, seconds: float) -> np.ndarray:
    """0.3 sin 440 Hz left, 0.5 sin 660 Hz right, as lossless float WAV; returns (2, S)."""
    from fractions import Fraction

    import av

    t = np.arange(int(seconds * 16000)) / 16000
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_f32le", rate=16000, layout="stereo")
        frame = av.AudioFrame.from_ndarray(stereo, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = 16000, 0, Fraction(1, 16000)
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return stereo


def test_cached_audio_of_a_stereo_source_is_the_channel_average(tmp_path) -> None:
    stereo = _write_stereo_wav(tmp_path / "voice.wav", 2.4)
    source = _synthetic(tmp_path, "stereo", audio_path=str(tmp_path / "voice.wav"))
    meta = preprocess_clip(source, tmp_path / "cache", CONFIG)
    wav = CachedClip(tmp_path / "cache" / "clips" / "test" / "stereo").wav()
    expected = stereo.mean(axis=0)[: wav.size]
    np.testing.assert_allclose(wav, expected, atol=1e-4)
    assert np.sqrt(np.mean(wav.astype(np.float64) ** 2)) / np.sqrt(np.mean(expected.astype(np.float64) ** 2)) \
        == pytest.approx(1.0, abs=1e-4)
    assert meta["cache_version"] == pre.CACHE_VERSION


def _make_old(folder: Path) -> None:
    """Turn a clip folder into one written before the cache recorded a version."""
    meta = json.loads((folder / "meta.json").read_text())
    del meta["cache_version"]
    (folder / "meta.json").write_text(json.dumps(meta))


def test_stale_cache_is_detected_and_a_rerun_remakes_only_stereo_sources(tmp_path, caplog) -> None:
    _write_stereo_wav(tmp_path / "voice.wav", 2.4)
    sources = [_synthetic(tmp_path, "stereo", audio_path=str(tmp_path / "voice.wav")), _synthetic(tmp_path, "mono")]
    cache = tmp_path / "cache"
    preprocess_clips(sources, cache, CONFIG, progress=False)
    clips = cache / "clips" / "test"
    good = np.load(clips / "stereo" / "audio.npy")
    for key in ("stereo", "mono"):
        _make_old(clips / key)
    np.save(clips / "stereo" / "audio.npy", good * np.sqrt(2))  # what the old downmix wrote
    pre.write_manifest(cache)
    with caplog.at_level("WARNING", logger="datamodules.preprocess"):
        load_manifest(cache)
    assert "2 clips" in caplog.text and "rebuild" in caplog.text  # a stale cache says so when read
    mono_video = (clips / "mono" / "video.mp4").stat().st_mtime_ns
    caplog.clear()
    report = preprocess_clips(sources, cache, CONFIG, progress=False)
    assert report.kept == ["stereo"] and report.skipped == ["mono"]  # a mono source's clip is unchanged
    np.testing.assert_allclose(np.load(clips / "stereo" / "audio.npy"), good, atol=1e-6)
    assert (clips / "mono" / "video.mp4").stat().st_mtime_ns == mono_video
    assert all(r["cache_version"] == pre.CACHE_VERSION for r in load_manifest(cache))
    assert "rebuild" not in caplog.text and not list(cache.glob(".tmp-*"))
