"""The evaluate CLI end to end: generated pred/gt folders (corrupt, silent, unpaired files) and the real clips."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pystoi import stoi as pystoi_stoi

from datamodules.media import read_audio, write_mp4
from experiments.evaluate import evaluate, main, pair_clips, parse_args


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)  # syllable-rate modulation
    tone = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((180, 360, 540, 1200)))
    return (0.2 * envelope * tone + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _frames(num: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (1, 32, 32, 3))
    drift = np.arange(num)[:, None, None, None]
    return np.clip(base + drift, 0, 255).astype(np.uint8)  # (T, 32, 32, 3)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    pred, gt = root / "pred", root / "gt"
    for i, name in enumerate(("a.mp4", "b.mp4", "silent.mp4")):
        frames, wav = _frames(25, i), _speechlike(1.0, i)
        write_mp4(gt / name, frames, audio=wav)
        noisy = np.clip(frames.astype(int) + np.random.default_rng(9).integers(-6, 7, frames.shape), 0, 255).astype(np.uint8)
        pred_wav = np.zeros_like(wav) if name == "silent.mp4" else np.clip(wav + 0.02 * np.random.default_rng(i).standard_normal(wav.size), -1, 1).astype(np.float32)
        write_mp4(pred / name, noisy, audio=pred_wav)
    write_mp4(gt / "corrupt.mp4", _frames(10, 5), audio=_speechlike(0.4, 5))
    (pred / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    write_mp4(pred / "pred_only.mp4", _frames(10, 6), audio=_speechlike(0.4, 6))
    write_mp4(gt / "gt_only.mp4", _frames(10, 7), audio=_speechlike(0.4, 7))
    return pred, gt


def test_pairing_reports_unpaired(folders) -> None:
    pairs, pred_only, gt_only = pair_clips(*folders)
    assert [p[0] for p in pairs] == ["a.mp4", "b.mp4", "corrupt.mp4", "silent.mp4"]
    assert pred_only == ["pred_only.mp4"] and gt_only == ["gt_only.mp4"]


def test_paired_run_writes_csv_summary_and_tables(folders, tmp_path) -> None:
    pred, gt = folders
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("clip,mos_video,mos_audio\na.mp4,4,3\nb.mp4,3,5\n")
    extractor = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())  # 12-d FID features
    summary = evaluate(
        pred, tmp_path / "out", gt_dir=gt, ratings=ratings, dataset="HDTF", name="tiny",
        metrics=["psnr", "ssim", "stoi", "pesq", "fid", "lpips"], overrides={"fid": {"feature_extractor": extractor}},
    )
    out = tmp_path / "out"
    assert summary["num_clips"] == 4 and summary["num_failed"] == 1
    assert summary["failures"][0]["clip"] == "corrupt.mp4" and "corrupt.mp4" in summary["failures"][0]["reason"]
    assert summary["unpaired"] == {"pred_only": ["pred_only.mp4"], "gt_only": ["gt_only.mp4"]}
    assert "fid" in summary["metrics_run"]
    if "lpips" in summary["metrics_skipped"]:
        assert "alexnet" in summary["metrics_skipped"]["lpips"]
    assert summary["exclusions_per_metric"]["pesq"] == 1 and summary["exclusions_per_metric"]["stoi"] == 1

    rows = {r["clip"]: r for r in csv.DictReader((out / "per_clip.csv").read_text().splitlines())}
    assert rows["corrupt.mp4"]["status"] == "failed"
    assert "silent" in rows["silent.mp4"]["excluded"] and rows["silent.mp4"]["pesq"] == ""
    # the CSV holds what pystoi gives on the decoded audio
    ref = pystoi_stoi(read_audio(gt / "a.mp4"), read_audio(pred / "a.mp4"), 16000)
    assert float(rows["a.mp4"]["stoi"]) == pytest.approx(ref, abs=1e-5)
    stoi_values = [float(rows[c]["stoi"]) for c in ("a.mp4", "b.mp4")]
    assert summary["results"]["stoi"] == pytest.approx(np.mean(stoi_values), abs=1e-5)
    assert summary["results"]["mos_video"] == 3.5 and summary["results"]["mos_audio"] == 4.0

    md, tex = (out / "tables.md").read_text(), (out / "tables.tex").read_text()
    assert "| HDTF | Our Model | 11.72 | 15.58 | 1784.16 |" in md  # the paper's row of Table 1
    assert "| tiny (ours) | " in md and "DNSMOS ovr (1-5) ↑" in md
    psnr_row = next(line for line in md.splitlines() if line.startswith("| tiny (ours)") and "3.50" in line)
    assert f"{summary['results']['psnr']:.2f}" in psnr_row
    assert tex.count(r"\begin{tabular}") == 5 and r"tiny (ours)" in tex
    assert json.loads((out / "summary.json").read_text())["num_failed"] == 1


def test_cli_main_and_argument_errors(folders, tmp_path, capsys) -> None:
    pred, gt = folders
    summary = main(["--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "o"), "--metrics", "psnr"])
    printed = capsys.readouterr().out
    assert "scored 3/4 clips" in printed and "failed corrupt.mp4" in printed
    assert summary["metrics_run"] == ["psnr"]
    with pytest.raises(SystemExit):
        parse_args(["--pred", str(pred), "--out", "x"])  # neither --gt nor --no-ref
    with pytest.raises(SystemExit):
        parse_args(["--pred", str(pred), "--gt", str(gt), "--ref-set", str(gt), "--out", "x"])


def test_no_ref_on_real_clips(shared_data, tmp_path) -> None:
    from metrics.syncnet import SyncNet

    pred = tmp_path / "pred"
    pred.mkdir()
    for name in ("kid_1.mp4",):  # the shortest clip keeps the test fast
        (pred / name).symlink_to(shared_data / "clips" / name)
    summary = evaluate(
        pred, tmp_path / "out", transcripts=shared_data / "clips" / "transcripts.json",
        metrics=["wer", "dnsmos", "lse", "psnr"], overrides={"lse": {"net": SyncNet(), "detect_every": 25}},
    )
    assert summary["mode"] == "no-reference" and summary["num_failed"] == 0
    assert summary["metrics_skipped"] == {"psnr": "needs ground-truth clips (no-reference mode)"}
    assert summary["face_detector"] in (["mtcnn"], ["s3fd"])
    rows = list(csv.DictReader((tmp_path / "out" / "per_clip.csv").read_text().splitlines()))
    assert all(0.0 <= float(r["wer"]) <= 0.4 for r in rows)  # clear speech (README: 0.10-0.31)
    assert all(-15 <= float(r["lse_offset"]) <= 15 for r in rows)
    assert 1.0 < summary["results"]["dnsmos"] < 5.0


def test_no_ref_with_reference_set(folders, tmp_path) -> None:
    pred, gt = folders
    extractor = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    summary = evaluate(pred, tmp_path / "out", ref_set=gt, metrics=["fid", "psnr"],
                       overrides={"fid": {"feature_extractor": extractor}})
    assert summary["mode"] == "no-reference" and summary["metrics_run"] == ["fid"]
    assert summary["num_clips"] == 5 and summary["num_failed"] == 1  # corrupt.mp4 cannot be decoded
    assert summary["reference_set_failures"] == []  # all 5 ground-truth files decode
    assert summary["results"]["fid"] is not None and summary["results"]["fid"] > 0


def test_asr_flag_chooses_the_wer_recogniser(folders, tmp_path, monkeypatch, capsys) -> None:
    pytest.importorskip("whisper", reason="openai-whisper is the nfy[whisper] extra")
    from metrics.asr import WhisperRecognizer
    from metrics.functional.wer import normalized_word_error_rate_per_utterance
    from tests.metrics._tiny_whisper import NAME, install_tiny_whisper

    pred, _ = folders
    texts = {"a.mp4": "let it go", "b.mp4": "good morning to you", "silent.mp4": "nothing", "pred_only.mp4": "hello"}
    transcripts = tmp_path / "transcripts.json"
    transcripts.write_text(json.dumps(texts))
    common = ["--pred", str(pred), "--no-ref", "--transcripts", str(transcripts), "--metrics", "wer"]
    assert parse_args([*common, "--out", "x"]).asr == "pocketsphinx"

    monkeypatch.setenv("NFY_CACHE", str(tmp_path / "empty"))  # a missing checkpoint skips WER and says why
    summary = main([*common, "--out", str(tmp_path / "missing"), "--asr", "whisper_tiny"])
    assert summary["metrics_run"] == [] and summary["wer_recognizer"] is None
    assert "recogniser 'whisper_tiny' could not be loaded" in summary["metrics_skipped"]["wer"]
    assert str(tmp_path / "empty" / "whisper_tiny" / "tiny.pt") in summary["metrics_skipped"]["wer"]

    install_tiny_whisper(tmp_path / "cache", monkeypatch)
    capsys.readouterr()
    summary = main([*common, "--out", str(tmp_path / "out"), "--asr", NAME])
    assert summary["metrics_run"] == ["wer"] and summary["wer_recognizer"].startswith(f"{NAME} (openai-whisper ")
    assert f"WER transcribed by {NAME} (openai-whisper" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["wer_recognizer"] == summary["wer_recognizer"]
    # each clip's WER is that of the same recogniser's transcript of the decoded audio
    rows = {r["clip"]: r for r in csv.DictReader((tmp_path / "out" / "per_clip.csv").read_text().splitlines())}
    names = ["a.mp4", "b.mp4"]
    hyps = WhisperRecognizer(NAME)([torch.from_numpy(read_audio(pred / n)) for n in names])
    expected = normalized_word_error_rate_per_utterance(hyps, [texts[n] for n in names])
    np.testing.assert_allclose([float(rows[n]["wer"]) for n in names], expected.numpy(), atol=1e-5)  # the CSV keeps 6 digits
