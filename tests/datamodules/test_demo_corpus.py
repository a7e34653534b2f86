"""The synthetic demo corpus: layout, determinism, splits, and a mouth that follows the speech."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datamodules import demo_corpus
from datamodules.demo_corpus import (
    SPEAKERS,
    PhonemeEvent,
    build_demo_corpus,
    ensure_demo_corpus,
    load_metadata,
    mouth_opening,
    mouth_track,
    render_face,
    synthesize,
)
from datamodules.media import probe, read_audio, read_video

SIZE = 128
TINY = {"num_clips": 5, "size": SIZE, "min_seconds": 1.5, "max_seconds": 3.0, "progress": False}
FIELDS = {"key", "speaker", "voice", "face_id", "transcript", "split", "duration", "num_frames", "fps",
          "sample_rate", "width", "height", "face_box", "landmarks", "mouth_center", "mouth_open"}


@pytest.fixture(scope="session")
def corpora(tmp_path_factory) -> dict[str, Path]:
    """Two builds with seed 0 (in worker processes, then in-process) and one with seed 1."""
    base = tmp_path_factory.mktemp("demo_corpus")
    return {
        "a": build_demo_corpus(base / "a", seed=0, num_workers=2, **TINY),
        "b": build_demo_corpus(base / "b", seed=0, num_workers=0, **TINY),
        "c": build_demo_corpus(base / "c", seed=1, num_workers=0, **TINY),
    }


@pytest.fixture(scope="session")
def decoded(corpora) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """(record, frames (T, H, W, 3) uint8, audio (S,) float32) of every clip of corpus ``a``."""
    root = corpora["a"]
    out = []
    for record in load_metadata(root):
        path = root / "clips" / f"{record['key']}.mp4"
        out.append((record, read_video(path), read_audio(path)))
    return out


def test_layout_and_metadata_fields(corpora):
    root = corpora["a"]
    info = json.loads((root / "corpus.json").read_text())
    assert {k: info[k] for k in ("seed", "num_clips", "size", "fps", "sample_rate", "version")} == {
        "seed": 0, "num_clips": 5, "size": SIZE, "fps": 25, "sample_rate": 16000, "version": 1}
    assert set(info["speakers"]) == {s.name for s in SPEAKERS}
    assert all({"voice", "face_id", "split"} <= set(v) for v in info["speakers"].values())
    records = load_metadata(root)
    assert len(records) == 5
    assert sorted(p.stem for p in (root / "clips").iterdir()) == sorted(r["key"] for r in records)
    assert not [p for p in root.parent.iterdir() if ".building-" in p.name]
    for r in records:
        assert set(r) == FIELDS
        assert re.fullmatch(r"spk\d\d_\d{4}", r["key"]) and r["key"].startswith(r["speaker"] + "_")
        assert info["speakers"][r["speaker"]]["voice"] == r["voice"]
        assert r["transcript"][0].isupper() and r["transcript"].endswith(".")
        assert (r["width"], r["height"], r["fps"], r["sample_rate"]) == (SIZE, SIZE, 25, 16000)
        assert len(r["mouth_open"]) == r["num_frames"] and r["duration"] == pytest.approx(r["num_frames"] / 25)
        assert 0.0 <= min(r["mouth_open"]) and max(r["mouth_open"]) <= 1.0 and max(r["mouth_open"]) > 0.3
        x0, y0, x1, y1 = r["face_box"]
        assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
        (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = r["landmarks"]
        assert lex < nx < rex and lmx < r["mouth_center"][0] < rmx  # MTCNN order, "left" = smaller x
        assert ley < ny < lmy and ley == rey and lmy == rmy == r["mouth_center"][1]
        assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in r["landmarks"])
        info_mp4 = probe(root / "clips" / f"{r['key']}.mp4")
        assert info_mp4.has_audio and info_mp4.sample_rate == 16000 and info_mp4.fps == pytest.approx(25)
        assert (info_mp4.width, info_mp4.height, info_mp4.num_frames) == (SIZE, SIZE, r["num_frames"])


def test_same_seed_same_corpus_other_seed_differs(corpora):
    a, b, c = (load_metadata(corpora[k]) for k in "abc")
    assert a == b  # worker processes and in-process build agree
    assert [r["transcript"] for r in a] != [r["transcript"] for r in c]
    for ra, rb, rc in zip(a, b, c):
        path = lambda root, r: root / "clips" / f"{r['key']}.mp4"
        np.testing.assert_array_equal(read_video(path(corpora["a"], ra)), read_video(path(corpora["b"], rb)))
        np.testing.assert_array_equal(read_audio(path(corpora["a"], ra)), read_audio(path(corpora["b"], rb)))
        assert ra["mouth_open"] != rc["mouth_open"]


def test_splits_are_speaker_disjoint(corpora):
    records = load_metadata(corpora["a"])
    split_of = {}
    for r in records:
        assert split_of.setdefault(r["speaker"], r["split"]) == r["split"]
    assert set(split_of.values()) == {"train", "val", "test"}  # even a 5-clip corpus has all three
    table = {s.split for s in SPEAKERS}, [s.split for s in SPEAKERS]
    assert table[0] == {"train", "val", "test"} and table[1].count("train") == 8
    assert len({s.name for s in SPEAKERS}) == len(SPEAKERS)


def test_default_speakers_have_distinct_voices_and_faces():
    assert len({s.voice for s in SPEAKERS}) >= 8
    assert len({s.face_id for s in SPEAKERS}) == len(SPEAKERS)
    waves = [synthesize("The dog sang.", s.name)[0] for s in SPEAKERS]
    for x, y in itertools.combinations(waves, 2):
        n = min(x.size, y.size)
        assert x.size != y.size or not np.allclose(x[:n], y[:n], atol=1e-3)


_HASH_VOICES = """
import hashlib, sys
from datamodules.demo_corpus import SPEAKERS, synthesize
for s in SPEAKERS:
    print(hashlib.sha1(synthesize(sys.argv[1], s.name)[0].tobytes()).hexdigest())
"""


def test_speech_is_the_same_in_every_process_whatever_came_before():
    text = "Frank liked the early door, and the happy teacher sang a song."
    here = [hashlib.sha1(synthesize(text, s.name)[0].tobytes()).hexdigest() for s in reversed(SPEAKERS)][::-1]
    runs = [subprocess.run([sys.executable, "-c", _HASH_VOICES, text], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).resolve().parents[2]).stdout.split() for _ in range(2)]
    assert runs[0] == runs[1] == here


def test_durations_within_bounds(corpora, decoded):
    for r, frames, audio in decoded:
        assert TINY["min_seconds"] <= r["duration"] <= TINY["max_seconds"]
        assert len(frames) == r["num_frames"]
        assert audio.size / 16000 == pytest.approx(r["duration"], abs=0.05)


def _mouth_interior_pixels(frames: np.ndarray, record: dict) -> np.ndarray:
    """(T,) count of mouth-interior-coloured pixels near the mouth (margins cover the head motion)."""
    return mouth_opening(frames, record["mouth_center"], record["width"])


def test_mouth_follows_the_speech(decoded):
    pixels, energy, drawn = [], [], []
    for r, frames, audio in decoded:
        t = len(frames)
        audio = np.pad(audio, (0, max(0, t * 640 - audio.size)))[: t * 640].reshape(t, 640)  # (T, 640)
        pixels.append(_mouth_interior_pixels(frames, r))
        energy.append(np.sqrt(np.mean(audio**2, axis=1)))  # (T,) RMS per 25 fps frame
        drawn.append(np.asarray(r["mouth_open"]))
    pixels, energy, drawn = (np.concatenate(v) for v in (pixels, energy, drawn))
    r_speech = np.corrcoef(pixels, energy)[0, 1]
    r_drawn = np.corrcoef(pixels, drawn)[0, 1]
    print(f"Pearson r over {pixels.size} frames: mouth pixels vs speech RMS {r_speech:.3f}, "
          f"vs drawn opening {r_drawn:.3f}")
    assert r_speech > 0.5
    assert r_drawn > 0.9
    assert pixels[energy < 1e-4].max(initial=0) <= 2  # silent frames: closed mouth


def test_mouth_track_follows_phonemes():
    wav = np.full(16000, 0.3, np.float32)  # 1 s at constant level: the phonemes alone shape the mouth
    events = [PhonemeEvent(0.0, "a"), PhonemeEvent(0.2, "m"), PhonemeEvent(0.4, "u:"), PhonemeEvent(0.6, "_:")]
    opening, rounding = mouth_track(wav, events, 25)
    assert opening.shape == rounding.shape == (25,)
    assert opening[:5].min() > 0.9 and opening[5:10].max() == 0.0
    assert 0.2 < opening[10:15].mean() < 0.6 and rounding[10:15].min() == 1.0 and rounding[:5].max() == 0.0
    assert opening[15:].max() == 0.0  # pause, then silence after the last phoneme
    silent, _ = mouth_track(np.zeros(16000, np.float32), events, 25)
    assert silent.max() == 0.0


def test_faces_differ():
    faces = [render_face(i, size=SIZE).astype(np.int16) for i in range(len(SPEAKERS))]
    distances = [np.abs(x - y).mean() for x, y in itertools.combinations(faces, 2)]
    print(f"mean abs pixel distance between face ids: min {min(distances):.1f}")
    assert min(distances) > 8.0
    np.testing.assert_array_equal(render_face(3, size=SIZE), faces[3].astype(np.uint8))
    assert np.abs(render_face(3, size=SIZE, mouth_open=1.0).astype(np.int16) - faces[3]).max() > 100


def test_blinks_happen(decoded):
    for r, frames, _ in decoded:
        white = []
        margin = int(0.09 * r["width"])
        for x, y in r["landmarks"][:2]:
            x, y = round(x), round(y)
            eye = frames[:, y - margin : y + margin, x - margin : x + margin]  # (T, h, w, 3)
            white.append((eye > 215).all(axis=-1).sum(axis=(1, 2)))  # (T,) sclera pixels
        white = np.sum(white, axis=0)
        assert np.median(white) > 20 and white.min() < 0.3 * np.median(white), r["key"]


def test_head_moves_a_little(decoded):
    for r, frames, _ in decoded:
        (lex, ley), _, _, (lmx, lmy), _ = r["landmarks"]
        cheek = frames[0, round((ley + lmy) / 2), round((lex + lmx) / 2)].astype(np.float64)  # skin colour
        rows = frames[:, : round(r["face_box"][3]) - 4].astype(np.float64)  # (T, h, W, 3) above the chin
        skin = np.linalg.norm(rows - cheek, axis=-1) < 25  # (T, h, W)
        xs = np.arange(skin.shape[2])
        centre_x = (skin.sum(axis=1) * xs).sum(axis=1) / skin.sum(axis=(1, 2))  # (T,) horizontal centroid
        drift = np.abs(centre_x - centre_x[0])
        assert 0.3 < drift.max() < 0.06 * r["width"], (r["key"], drift.max())


def test_synthesize_output_and_errors():
    wav, events = synthesize("Hello there, my friend.", "en-gb-x-rp+m5", rate=160, pitch=40)
    assert wav.dtype == np.float32 and wav.ndim == 1 and 0.8 < wav.size / 16000 < 3.0
    assert np.abs(wav).max() <= 1.0 and np.abs(wav).max() > 0.05
    times = [e.time for e in events]
    assert len(events) > 10 and times == sorted(times) and times[-1] < wav.size / 16000
    assert all("'" not in e.phoneme and e.phoneme for e in events)
    with pytest.raises(ValueError, match="no voice 'xx-nowhere'"):
        synthesize("Hello.", "xx-nowhere")
    with pytest.raises(ValueError, match="non-empty"):
        synthesize("  ", "en-us")
    with pytest.raises(ValueError, match="rate"):
        synthesize("Hello.", "en-us", rate=10)


def test_ensure_reuses_and_failures_leave_nothing(corpora, tmp_path, monkeypatch):
    root = corpora["a"]
    stamp = (root / "corpus.json").stat().st_mtime_ns
    assert ensure_demo_corpus(root, **TINY) == root
    assert (root / "corpus.json").stat().st_mtime_ns == stamp
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="other"):
        build_demo_corpus(tmp_path / "other", **TINY)
    with pytest.raises(ValueError, match="num_clips"):
        build_demo_corpus(tmp_path / "bad", **{**TINY, "num_clips": 0})

    real = demo_corpus._make_clip

    def failing(job):
        if job.index == 1:
            raise RuntimeError("interrupted")
        return real(job)

    monkeypatch.setattr(demo_corpus, "_make_clip", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        build_demo_corpus(tmp_path / "broken", num_workers=0, **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]  # no root, no temporary folder
    with pytest.raises(FileNotFoundError, match="broken"):
        load_metadata(tmp_path / "broken")


def test_command_line(tmp_path, capsys):
    assert demo_corpus.main(["--root", str(tmp_path / "cli"), "--num-clips", "2", "--size", "64",
                             "--workers", "0", "--min-seconds", "1", "--max-seconds", "2.5"]) == 0
    assert "2 clips" in capsys.readouterr().out
    assert len(load_metadata(tmp_path / "cli")) == 2
