"""The evaluate CLI end to end: generated pred/gt folders (corrupt, silent, unpaired files) and the real clips."""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
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
    pairing = pair_clips(*folders)
    assert [p[0] for p in pairing.pairs] == ["a.mp4", "b.mp4", "corrupt.mp4", "silent.mp4"]
    assert pairing.pred_only == ["pred_only.mp4"] and pairing.gt_only == ["gt_only.mp4"]


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
    assert summary["unpaired"] == {"pred_only": ["pred_only.mp4"], "gt_only": ["gt_only.mp4"], "ambiguous": []}
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


# --------------------------------------------------------------------------------------------
# Pairs that need cutting, resizing or another frame rate; missing tracks; names that differ
# in case or extension; an identical pair
# --------------------------------------------------------------------------------------------


def _never(constant: str) -> None:
    raise ValueError(f"not strict JSON: {constant}")


@pytest.fixture(scope="module")
def odd_folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("odd")
    pred, gt = root / "pred", root / "gt"
    for i, name in enumerate(("same", "long", "noaudio", "upper", "other", "dup")):
        write_mp4(gt / f"{name}.mp4", _frames(25, i), audio=_speechlike(1.0, i))
    pred.mkdir()
    shutil.copy(gt / "same.mp4", pred / "same.mp4")  # an identical pair
    big = np.repeat(np.repeat(_frames(36, 1), 2, axis=1)[:, :40], 2, axis=2)[:, :, :48]  # (36, 40, 48, 3)
    write_mp4(pred / "long.mp4", big, fps=30, audio=_speechlike(1.2, 11))  # 1.2 s at 30 fps, 48x40
    write_mp4(pred / "noaudio.mp4", _frames(25, 12), audio=None)
    write_mp4(pred / "Upper.MP4", _frames(25, 13), audio=_speechlike(1.0, 13))
    write_mp4(pred / "other.mp4", _frames(25, 14), audio=_speechlike(1.0, 14))
    (pred / "other.mp4").rename(pred / "other.mov")
    for name in ("dup.mp4", "dup.mkv"):
        write_mp4(pred / name, _frames(25, 15), audio=_speechlike(1.0, 15))
    (pred / "notes.txt").write_text("not a clip")
    return pred, gt


@pytest.fixture(scope="module")
def odd_run(odd_folders, tmp_path_factory) -> tuple[dict, Path]:
    pred, gt = odd_folders
    out = tmp_path_factory.mktemp("odd_out")
    summary = evaluate(pred, out, gt_dir=gt, dataset="HDTF", name="odd", metrics=["psnr", "ssim", "stoi"])
    return summary, out


def _rows(out: Path) -> dict[str, dict[str, str]]:
    return {r["clip"]: r for r in csv.DictReader((out / "per_clip.csv").read_text().splitlines())}


def test_pairing_ignores_case_and_extension_and_lists_what_does_not_pair(odd_folders) -> None:
    pred, gt = odd_folders
    pairing = pair_clips(pred, gt)
    assert [(name, p.name, g.name) for name, p, g in pairing.pairs] == [
        ("long.mp4", "long.mp4", "long.mp4"), ("noaudio.mp4", "noaudio.mp4", "noaudio.mp4"),
        ("other.mov", "other.mov", "other.mp4"), ("same.mp4", "same.mp4", "same.mp4"),
        ("Upper.MP4", "Upper.MP4", "upper.mp4"),
    ]
    assert pairing.ambiguous == [str(pred / "dup.mkv"), str(pred / "dup.mp4")]  # which one is meant?
    assert pairing.gt_only == ["dup.mp4"] and pairing.pred_only == []
    assert pairing.ignored == [str(pred / "notes.txt")]


def test_cli_prints_every_unpaired_and_ignored_file(odd_folders, tmp_path, capsys) -> None:
    pred, gt = odd_folders
    summary = main(["--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "o"), "--metrics", "psnr"])
    printed = capsys.readouterr().out
    assert summary["num_clips"] == 5 and "Upper.MP4" in (tmp_path / "o" / "per_clip.csv").read_text()
    assert "unpaired, no generated clip: dup.mp4" in printed
    assert f"unpaired, several files share one name (case and extension ignored): {pred / 'dup.mkv'}, {pred / 'dup.mp4'}" in printed
    assert "ignored, not a video file" in printed and str(pred / "notes.txt") in printed
    assert summary["ignored_files"] == [str(pred / "notes.txt")]


def test_identical_pair_gives_strict_json_and_a_named_psnr_convention(odd_run) -> None:
    summary, out = odd_run
    strict = json.loads((out / "summary.json").read_text(), parse_constant=_never)
    assert strict == json.loads(json.dumps(summary))
    convention = strict["conventions"]["psnr"]
    assert convention["cap_db"] == 100.0 and convention["clips_with_infinite_psnr"] == 1
    assert "capped at 100 dB" in convention["rule"] and "per_clip.csv" in convention["rule"]
    rows = _rows(out)
    assert rows["same.mp4"]["psnr"] == "inf" and rows["same.mp4"]["psnr_capped"] == "100"
    assert rows["same.mp4"]["ssim"] == "1"
    scored = [r for r in rows.values() if r["psnr_capped"]]
    assert strict["results"]["psnr"] == pytest.approx(np.mean([float(r["psnr_capped"]) for r in scored]), abs=1e-4)
    assert "capped at 100 dB" in (out / "tables.md").read_text() and "capped at 100 dB" in (out / "tables.tex").read_text()


def test_per_clip_csv_records_what_was_cut_resized_or_converted(odd_run) -> None:
    _, out = odd_run
    rows = _rows(out)
    long = rows["long.mp4"]
    assert (long["pred_frames_cut"], long["gt_frames_cut"], long["pred_resized_from"]) == ("5", "0", "48x40")
    assert (long["pred_fps_converted"], long["gt_fps_converted"]) == ("30->25", "")
    assert 2500 < int(long["pred_audio_samples_cut"]) < 4000 and long["gt_audio_samples_cut"] == "0"  # about 0.2 s
    same = rows["same.mp4"]
    assert [same[k] for k in ("pred_frames_cut", "gt_frames_cut", "pred_resized_from", "pred_fps_converted",
                              "pred_audio_samples_cut", "gt_audio_samples_cut")] == ["0", "0", "", "", "0", "0"]
    assert rows["Upper.MP4"]["gt_clip"] == "upper.mp4"


def test_a_clip_without_audio_keeps_its_video_metrics(odd_run) -> None:
    summary, out = odd_run
    row = _rows(out)["noaudio.mp4"]
    assert row["status"] == "ok" and row["psnr"] and row["ssim"] and row["stoi"] == ""
    assert row["missing_tracks"] == "pred audio" and "stoi: no audio track in the generated clip" in row["excluded"]
    assert row["pred_audio_samples_cut"] == ""  # nothing to cut
    assert summary["num_failed"] == 0 and summary["exclusions_per_metric"] == {"stoi": 1}


def test_every_dash_in_the_tables_says_why(odd_run) -> None:
    summary, out = odd_run
    md, tex = (out / "tables.md").read_text(), (out / "tables.tex").read_text()
    for table in md.split("**Table ")[1:]:
        notes = dict(line[1:].split("] ", 1) for line in table.splitlines() if line.startswith("["))
        cells = [c.strip() for line in table.splitlines() if line.startswith("| ") for c in line.strip("|").split(" | ")]
        assert all(c[2:-1] in notes for c in cells if c.startswith("-")), table
        assert "Clips: odd (ours) covers 5 clips" in table
    assert "give --ratings FILE" in md and "give -{}-ratings FILE" in tex  # MOS is human ratings
    assert "not requested (--metrics)" in md  # e.g. FID
    assert summary["results_missing"]["mos_video"].startswith("human ratings")
    assert "PSNR 5, SSIM 5" in md and "STOI 4" in md


def test_summary_is_strict_json_even_for_an_infinite_result(odd_folders, tmp_path) -> None:
    pred, gt = odd_folders
    summary = evaluate(pred, tmp_path, gt_dir=gt, metrics=["psnr"], overrides={"psnr": {"max_db": None}})  # no cap
    strict = json.loads((tmp_path / "summary.json").read_text(), parse_constant=_never)
    assert strict["results"]["psnr"] is None and summary["results"]["psnr"] is None
    assert strict["results_missing"]["psnr"] == "not finite (inf)"
    assert "-[1]" in (tmp_path / "tables.md").read_text() and "[1] not finite (inf)" in (tmp_path / "tables.md").read_text()


@pytest.mark.parametrize("mask", [0o027])
def test_outputs_follow_the_umask(odd_folders, tmp_path, mask: int) -> None:
    pred, gt = odd_folders
    previous = os.umask(mask)
    try:
        evaluate(pred, tmp_path / "out", gt_dir=gt, metrics=["psnr"])
    finally:
        os.umask(previous)
    for name in ("per_clip.csv", "summary.json", "tables.md", "tables.tex"):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o666 & ~mask, name


# --------------------------------------------------------------------------------------------
# Where the scoring runs: --device, --workers, --metric-option
# --------------------------------------------------------------------------------------------


def test_worker_processes_give_the_numbers_of_one_process(folders, tmp_path) -> None:
    pred, gt = folders
    extractor = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        runs[workers] = evaluate(pred, out, gt_dir=gt, metrics=["psnr", "ssim", "stoi", "pesq", "mcd_paper", "fid"],
                                 overrides={"fid": {"feature_extractor": extractor}}, device="cpu", workers=workers)
        runs[workers]["csv"] = (out / "per_clip.csv").read_text()
        runs[workers]["json"] = json.loads((out / "summary.json").read_text())
    one, two = runs[1], runs[2]
    assert one["scored_on"] == {"device": "cpu", "workers": 1, "in_workers": ["mcd_paper", "pesq", "psnr", "ssim", "stoi"]}
    assert two["scored_on"]["workers"] == 2
    assert one["results"] == two["results"] and one["json"]["results"] == two["json"]["results"]  # exactly
    assert one["csv"] == two["csv"]
    assert {k: v for k, v in one["json"].items() if k != "scored_on"} == {k: v for k, v in two["json"].items() if k != "scored_on"}
    assert one["num_failed"] == 1 and one["exclusions_per_metric"]["pesq"] == 1  # corrupt and silent clips as before


def test_an_unavailable_device_or_bad_option_is_one_error_line_before_any_scoring(folders, tmp_path, monkeypatch,
                                                                                  capsys) -> None:
    import experiments.evaluate as ev

    def no_decoding(path):
        raise AssertionError("decoded before the options were checked")

    monkeypatch.setattr(ev, "load_clip", no_decoding)
    pred, gt = folders
    common = ["--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "o"), "--metrics", "psnr"]
    bad = {("--device", "cuda"): "--device='cuda'", ("--device", "tpu"): "--device='tpu'",
           ("--workers", "0"): "--workers=0", ("--metric-option", "fvmd.window_stride"): "--metric-option",
           ("--metric-option", "nope.x=1"): "'nope'"}
    for flags, named in bad.items():
        with pytest.raises(SystemExit) as stopped:
            main([*common, *flags])
        assert stopped.value.code == 2, flags
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and named in err, (flags, err)
        if flags[1] == "cuda":
            assert "CUDA is not available here" in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="device='cuda'"):
        evaluate(pred, tmp_path / "o", gt_dir=gt, metrics=["psnr"], device="cuda")
    assert not (tmp_path / "o").exists()


def test_metric_options_reach_the_metrics(odd_folders, tmp_path) -> None:
    pred, gt = odd_folders
    args = parse_args(["--pred", str(pred), "--gt", str(gt), "--out", "x"])
    assert args.device == "cpu" and args.workers is None and args.metric_option == []
    summary = main(["--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "o"), "--metrics", "psnr",
                    "--metric-option", "psnr.max_db=null", "--workers", "2"])
    assert summary["results"]["psnr"] is None and summary["results_missing"]["psnr"] == "not finite (inf)"
    assert summary["scored_on"] == {"device": "cpu", "workers": 2, "in_workers": ["psnr"]}


def test_lse_detect_every_is_a_metric_option() -> None:
    from experiments.evaluate import metric_options
    from metrics.suite import MetricSuite
    from metrics.syncnet import SyncNet

    options = metric_options(["lse.detect_every=5"])
    assert options == {"lse": {"detect_every": 5}}
    suite = MetricSuite(["lse"], overrides={"lse": {**options["lse"], "net": SyncNet()}})
    assert suite.metrics["lse"].detect_every == 5
