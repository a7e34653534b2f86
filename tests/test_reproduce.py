"""experiments.reproduce end to end on the demo corpus: two tiny checkpoints -> clips -> scores -> Tables 1-7.

The corpus has three test clips (one test speaker in the demo's split, two more relabelled so
that ``--limit`` has something to leave out); the source video of one of them is deleted after
preprocessing, so that its generation fails and the run must go on without it.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.demo_corpus import build_demo_corpus
from datamodules.media import read_video
from experiments import fit
from experiments import generate as gen
from experiments import reproduce as rep

slow = pytest.mark.slow  # the tests on trained checkpoints: about two minutes together on 2 cores

TEST_KEYS = ["spk03_0000", "spk04_0000", "spk09_0000"]
BROKEN = "spk03_0000"  # its source video is gone: no first frame to generate from
METRICS = "psnr,ssim,stoi,mcd_paper,fid"
TABLE_CAPTIONS = [f"**Table {n}.**" for n in range(1, 8)]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    """A 7-clip demo corpus at 64 px: train spk00-02, val spk08, test spk03, spk04, spk09."""
    root = build_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus", num_clips=7, size=64, min_seconds=2.8,
                             max_seconds=3.2, num_workers=0, progress=False)
    records = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    for record in records:
        if record["key"] in TEST_KEYS:
            record["split"] = "test"
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def _train(root: Path, out: Path, *configs: str) -> Path:
    """A few steps of ``configs`` + tiny.yaml on the corpus; the checkpoint as training writes it."""
    args = [arg for config in configs for arg in ("--config", config)]
    cli = fit.main([*args, "--config", "tiny.yaml", f"--data.root={root}", "--data.build_if_missing=false",
                    "--data.batch_size=3", "--model.init_args.max_mel_frames=30", "--trainer.max_steps=2",
                    # untrained, the alignment aid's length head would end speech after a few frames, too
                    # short for the audio metrics; without it the speech runs to the 30-frame cap
                    "--model.init_args.net.init_args.alignment_aid=false",
                    "--trainer.num_sanity_val_steps=0", "--trainer.logger=false", "--trainer.callbacks=[]",
                    "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={out}"])
    path = out / "last.ckpt"
    cli.trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(demo_root: Path, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ckpts")
    found = {"ete": _train(demo_root, out / "ete", "ete.yaml"),
             "dc_off": _train(demo_root, out / "dc_off", "ete.yaml", "dc_off.yaml")}
    (demo_root / "clips" / f"{BROKEN}.mp4").unlink()  # after preprocessing: the cache still has the clip
    return found


@pytest.fixture(scope="module")
def run(checkpoints: dict[str, Path], tmp_path_factory) -> tuple[Path, dict]:
    """The command on the demo test split, first two clips, FID with a small injected feature network."""
    out = tmp_path_factory.mktemp("results")
    extractor = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())  # 12-d FID features
    report = rep.reproduce(checkpoints, out, datasets=["demo"], limit=2, steps=2, metrics=METRICS.split(","),
                           overrides={"fid": {"feature_extractor": extractor}})
    return out, report


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


@slow
def test_clips_are_generated_by_the_protocol_and_failures_listed(run) -> None:
    out, report = run
    for name in ("ete", "dc_off"):
        assert sorted(p.name for p in (out / "generated" / name / "demo").glob("*.mp4")) == ["spk04_0000.mp4"]
        assert report["generation"][name]["demo"] == {"clips": 2, "generated": 1, "kept": 0, "failed": 1}
    clips = json.loads((out / "test_sets" / "demo" / "clips.json").read_text())
    for name in ("ete", "dc_off"):  # generated at the ground truth's length (the protocol)
        assert read_video(out / "generated" / name / "demo" / "spk04_0000.mp4").shape[0] == clips[1]["num_frames"]
    assert [c["key"] for c in clips] == TEST_KEYS[:2]  # --limit 2, in key order
    assert clips[1]["text"] and clips[1]["num_frames"] > 50 and clips[1]["source_video"].endswith("spk04_0000.mp4")
    assert sorted(p.name for p in (out / "test_sets" / "demo" / "ground_truth").iterdir()) == [
        f"{k}.mp4" for k in TEST_KEYS[:2]]
    failures = _csv(out / "failures.csv")
    assert [(f["model"], f["dataset"], f["clip"], f["stage"]) for f in failures] == [
        ("ete", "demo", BROKEN, "generation"), ("dc_off", "demo", BROKEN, "generation")]
    assert BROKEN in failures[0]["reason"] and "not found" in failures[0]["reason"]


@slow
def test_every_table_file_has_every_table_with_our_rows(run) -> None:
    out, _ = run
    md, tex = (out / "tables.md").read_text(), (out / "tables.tex").read_text()
    assert all(caption in md for caption in TABLE_CAPTIONS)
    assert tex.count(r"\begin{table}") == 7 and tex.count(r"\end{table}") == 7
    records = _csv(out / "tables.csv")
    assert {r["table"] for r in records} == {str(n) for n in range(1, 8)}
    ours = {(r["table"], r["dataset"], r["model"]) for r in records if r["source"] == "ours"}
    # Tables 1 and 3: the four paper blocks (ours missing there, with the reason) and the demo block
    for table in ("1", "3"):
        assert {(d, m) for t, d, m in ours if t == table} == {
            (d, "ete (ours)") for d in ("VoxCeleb", "FakeAVCeleb", "CelebV-HQ", "HDTF", "demo")}
    vox = [r for r in records if r["table"] == "1" and r["dataset"] == "VoxCeleb" and r["source"] == "ours"]
    assert {r["reason"] for r in vox} == {"no VoxCeleb test set: the checkpoint's DataModule names demo"}
    fid = next(r for r in records if r["table"] == "1" and r["dataset"] == "demo" and r["metric"] == "fid")
    assert float(fid["value"]) >= 0 and fid["clips"] == "1"
    fvd = next(r for r in records if r["table"] == "1" and r["dataset"] == "demo" and r["metric"] == "fvd")
    assert fvd["value"] == "" and fvd["reason"] == "not requested (--metrics)"
    psnr = next(r for r in records if r["table"] == "2" and r["source"] == "ours" and r["metric"] == "psnr")
    assert float(psnr["value"]) > 0 and psnr["model"] == "ete (ours)"
    # Tables 6 and 7: one row per config; configs without a checkpoint say so
    assert {m for t, _, m in ours if t == "6"} == {f"{c} (ours)" for c in ("ete", "dc_off", "no_te", "dc_ec_off",
                                                                            "ec_off", "ste")}
    assert {m for t, _, m in ours if t == "7"} == {f"{c} (ours)" for c in ("ete", "only_visual_tokens",
                                                                            "only_audio_tokens", "no_audio_sequence",
                                                                            "no_audio_profile", "no_visual_tokens")}
    ste = {r["reason"] for r in records if r["table"] == "6" and r["model"] == "ste (ours)"}
    assert len(ste) == 1 and "missing checkpoint" in ste.pop()
    dc_off = {r["metric"]: r for r in records if r["table"] == "6" and r["model"] == "dc_off (ours)"}
    # a 2-step model's speech may be excluded by the audio metrics (per_clip.csv says why): then the
    # cell is a "-" with its reason, else a value over the one clip
    mcd = dc_off["mcd_paper"]
    assert (float(mcd["value"]) > 0 and mcd["clips"] == "1") if mcd["value"] else mcd["reason"].startswith("no clip")
    assert float(dc_off["fid"]["value"]) >= 0
    stoi = dc_off["stoi"]
    assert (0 <= float(stoi["value"]) <= 1) if stoi["value"] else stoi["reason"]  # a "-" always says why
    assert "1 clip(s) failed" in md and "failures.csv" in md


@slow
def test_second_run_regenerates_nothing_and_a_killed_clip_is_redone(run, checkpoints, capsys) -> None:
    out, _ = run
    kept = out / "generated" / "ete" / "demo" / "spk04_0000.mp4"
    before = kept.stat().st_mtime_ns
    args = ["--ckpt", f"ete={checkpoints['ete']}", "--out", str(out), "--datasets", "demo", "--limit", "2",
            "--steps", "2", "--metrics", METRICS]
    assert rep.main(args) == 0
    report = json.loads((out / "reproduce.json").read_text())
    assert report["generation"]["ete"]["demo"] == {"clips": 2, "generated": 0, "kept": 1, "failed": 1}
    assert kept.stat().st_mtime_ns == before
    # a run killed while writing spk09 leaves only a hidden temporary file: the next run makes the clip
    (kept.parent / ".spk09_0000.1a2b3c.mp4").write_bytes(b"\x00" * 100)
    assert rep.main(args[:-4] + ["--limit", "3", "--steps", "2", "--metrics", METRICS]) == 0
    report = json.loads((out / "reproduce.json").read_text())
    assert report["generation"]["ete"]["demo"] == {"clips": 3, "generated": 1, "kept": 1, "failed": 1}
    assert kept.stat().st_mtime_ns == before and (kept.parent / "spk09_0000.mp4").is_file()
    assert "tables.md" in capsys.readouterr().out


@slow
def test_baseline_folder_is_scored_on_the_same_clips(run, checkpoints, tmp_path) -> None:
    out, _ = run
    baseline = tmp_path / "hallo"
    baseline.mkdir()
    shutil.copy(out / "test_sets" / "demo" / "ground_truth" / "spk04_0000.mp4", baseline / "spk04_0000.mp4")
    report = rep.reproduce({"ete": checkpoints["ete"]}, out, datasets=["demo"], limit=2, steps=2,
                           metrics=["psnr", "stoi"], baselines={"hallo": baseline})
    assert report["generation"]["ete"]["demo"]["generated"] == 0
    records = _csv(out / "tables.csv")
    psnr = {r["model"]: r for r in records if r["table"] == "2" and r["metric"] == "psnr" and r["source"] != "paper"}
    assert psnr["hallo (scored here)"]["source"] == "scored here" and psnr["hallo (scored here)"]["clips"] == "1"
    assert float(psnr["hallo (scored here)"]["value"]) > float(psnr["ete (ours)"]["value"])  # the ground truth itself
    summary = json.loads((out / "scores" / "hallo" / "demo" / "summary.json").read_text())
    assert summary["unpaired"]["gt_only"] == [f"{BROKEN}.mp4"]  # the same two test clips as ours


def _refuse_generation(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("generation started before the bad input was refused")

    monkeypatch.setattr(rep, "generate_clips", refuse)


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("case, match", [
    ("missing_ckpt", "no such file"),
    ("corrupt_ckpt", "not a PyTorch checkpoint"),
    ("bad_ckpt_flag", "NAME=PATH"),
    ("missing_baseline", "--baseline .*none: an existing folder"),
    ("bad_limit", "--limit 0: an integer >= 1"),
    ("word_limit", "--limit ten: an integer >= 1"),
    ("unknown_dataset", "--datasets lrs3: one of"),
])
def test_bad_option_one_line_exit_2(case, match, tmp_path, monkeypatch, capsys) -> None:
    _refuse_generation(monkeypatch)
    ckpt, args = tmp_path / "nope.ckpt", ["--out", str(tmp_path / "out"), "--datasets", "demo", "--limit", "1"]
    if case == "corrupt_ckpt":
        ckpt.write_bytes(b"not a checkpoint")
    elif case == "missing_baseline":
        args += ["--baseline", f"hallo={tmp_path / 'none'}"]
    elif case in ("bad_limit", "word_limit"):
        args[-1] = "0" if case == "bad_limit" else "ten"
    elif case == "unknown_dataset":
        args[3] = "lrs3"
    args = ["--ckpt", str(ckpt) if case == "bad_ckpt_flag" else f"ete={ckpt}", *args]
    assert rep.main(args) == 2
    assert re.search(match, _one_error_line(capsys))
    assert not (tmp_path / "out").exists()


@slow
@pytest.mark.parametrize("case, match", [
    ("no_test_split", "SyntheticDataModule has no test split"),
    ("empty_split", "the demo test split is empty"),
    ("missing_root", "names the demo dataset root .*gone.*, which is not there"),
])
def test_bad_checkpoint_data_one_line_exit_2(case, match, checkpoints, demo_root, tmp_path, monkeypatch,
                                            capsys) -> None:
    _refuse_generation(monkeypatch)
    if case == "no_test_split":  # a DataModule of generated batches: no clips to take a test split from
        changes = {"_class_path": "tests.model.test_module.SyntheticDataModule"}
    elif case == "empty_split":
        changes = {"root": _corpus_without_test_clips(demo_root, tmp_path)}
    else:
        changes = {"root": str(tmp_path / "gone")}
    ckpt = _with_datamodule(checkpoints["ete"], tmp_path, changes)
    assert rep.main(["--ckpt", f"ete={ckpt}", "--out", str(tmp_path / "out"), "--datasets", "demo"]) == 2
    assert re.search(match, _one_error_line(capsys))
    assert not (tmp_path / "out").exists()


def _with_datamodule(ckpt: Path, tmp_path: Path, changes: dict) -> Path:
    """A copy of ``ckpt`` whose saved DataModule config has ``changes`` (a class path replaces it all)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    saved = state["datamodule_hyper_parameters"]
    state["datamodule_hyper_parameters"] = dict(changes) if "_class_path" in changes else {**saved, **changes}
    path = tmp_path / "changed.ckpt"
    torch.save(state, path)
    return path


def _corpus_without_test_clips(root: Path, tmp_path: Path) -> str:
    """A copy of the corpus whose preprocessed manifest has no test-split clip."""
    copy = tmp_path / "corpus"
    shutil.copytree(root, copy)
    manifest = copy / "cache" / "64" / "manifest.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records if r.get("split") != "test"))
    return str(copy)




# --------------------------------------------------------------------------------------------
# Batched generation (--batch-size)
# --------------------------------------------------------------------------------------------


def _generable_clips(ckpt: Path, limit: int = 3) -> list[rep.TestClip]:
    """The first ``limit`` demo test clips (``BROKEN`` among them) as the command reads them."""
    return rep.plan_run({"ete": ckpt}, ["demo"], limit, {}).test_sets["demo"].clips


def _recorded_writes(monkeypatch) -> dict[str, tuple]:
    """``{clip key: (frames, wav)}`` of every clip written through ``experiments.generate.write_clip``."""
    written: dict[str, tuple] = {}
    real = gen.write_clip

    def record(path, frames, wav):
        written[Path(path).stem] = (frames, wav)
        return real(path, frames, wav)

    monkeypatch.setattr(gen, "write_clip", record)
    return written


@pytest.fixture()
def tiny_module(checkpoints):
    """The ete checkpoint's module, as experiments.generate loads it."""
    module, _ = gen.load_checkpoint(checkpoints["ete"])
    return module


@slow
def test_batch_of_one_equals_experiments_generate(tiny_module, checkpoints, tmp_path, monkeypatch) -> None:
    """The batched path with one clip per call is experiments.generate, byte for byte in the arrays."""
    written = _recorded_writes(monkeypatch)
    clip = _generable_clips(checkpoints["ete"])[1]
    options = rep.GenerationOptions(num_inference_steps=2, seed=3, batch_size=1)
    counts, failures = rep.generate_clips(tiny_module, [clip], tmp_path / "batched", options, "test")
    assert counts["generated"] == 1 and failures == []
    rep.generate_clip(tiny_module, clip, tmp_path / "alone" / "one.mp4", options)
    frames, wav = written[clip.key]
    assert frames.shape[0] > 1 and np.array_equal(frames, written["one"][0]) and np.array_equal(wav, written["one"][1])


@slow
def test_batched_rows_equal_their_clips_generated_alone(tiny_module, checkpoints, tmp_path, monkeypatch) -> None:
    """Each row of a batch (texts of different lengths, so one is padded) is its clip generated alone,
    at the ground truth's length: each clip has its own random streams (noise and pre-net dropout),
    and nothing in reproduce (inputs, collation, cutting, writing) mixes rows."""
    written = _recorded_writes(monkeypatch)
    clips = _generable_clips(checkpoints["ete"])[1:]  # spk04, spk09
    tokens = {c.key: len(gen.encode_text(tiny_module.tokenizer, c.text)) for c in clips}
    assert len(set(tokens.values())) == 2  # the batch pads one text
    options = rep.GenerationOptions(num_inference_steps=2, batch_size=2)
    counts, failures = rep.generate_clips(tiny_module, clips, tmp_path / "batched", options, "test")
    assert counts == {"clips": 2, "generated": 2, "kept": 0, "failed": 0} and failures == []
    for clip in clips:
        frames, wav = written[clip.key]
        assert len(frames) == clip.num_frames and len(wav) == len(frames) * 640  # the protocol's length
        rep.generate_clip(tiny_module, clip, tmp_path / "alone" / "alone.mp4", options)
        frames_1, wav_1 = written["alone"]
        assert frames.shape == frames_1.shape and wav.shape == wav_1.shape
        assert np.abs(frames.astype(int) - frames_1.astype(int)).max() <= 1  # float rounding, then uint8
        # Griffin-Lim's iterations amplify the float differences of batched matmuls (about 1 % of the signal)
        assert np.linalg.norm(wav - wav_1) <= 5e-2 * np.linalg.norm(wav_1) and np.abs(wav_1).max() > 1e-3
    one, other = (written[c.key][0] for c in clips)
    assert not np.array_equal(one[:10], other[:10])  # the rows were not mixed up: another face


@slow
def test_a_clip_failing_in_a_batch_is_listed_and_the_others_written(tiny_module, checkpoints, tmp_path,
                                                                    monkeypatch) -> None:
    """A batch whose pipeline call fails is redone clip by clip: only the failing clip is lost."""
    real = gen.generate_rows
    calls = []

    def poisoned(module, rows, *args, **kwargs):
        calls.append(len(rows))
        if any("poison" in " ".join(row.sentences) for row in rows):
            raise RuntimeError("the pipeline failed on the poisoned text")
        return real(module, rows, *args, **kwargs)

    monkeypatch.setattr(gen, "generate_rows", poisoned)
    broken, good, bad = _generable_clips(checkpoints["ete"])
    bad = replace(bad, text="Some poison in this text.")
    folder = tmp_path / "out"
    options = rep.GenerationOptions(num_inference_steps=2, batch_size=3)
    counts, failures = rep.generate_clips(tiny_module, [broken, good, bad], folder, options, "test")
    assert calls == [2, 1, 1]  # the batch of the two clips with inputs, then each alone
    assert counts == {"clips": 3, "generated": 1, "kept": 0, "failed": 2}
    assert sorted(p.name for p in folder.iterdir()) == [f"{good.key}.mp4"]
    reasons = {f["clip"]: f["reason"] for f in failures}
    assert set(reasons) == {broken.key, bad.key}
    assert "not found" in reasons[broken.key] and "poisoned text" in reasons[bad.key]


@pytest.mark.parametrize(("option", "value", "expected"), [
    *[("--batch-size", v, "an integer >= 1 (clips per pipeline call)") for v in ("0", "two", "1.5")],
    *[("--workers", v, rep.WORKERS_EXPECTED) for v in ("0", "four")],
])
def test_bad_integer_option_one_line_exit_2(option, value, expected, tmp_path, monkeypatch, capsys) -> None:
    _refuse_generation(monkeypatch)
    ckpt = tmp_path / "nope.ckpt"
    ckpt.write_bytes(b"not read: the option is checked first")
    args = ["--ckpt", f"ete={ckpt}", "--out", str(tmp_path / "out"), "--datasets", "demo", option, value]
    assert rep.main(args) == 2
    assert _one_error_line(capsys) == f"error: {option} {value}: {expected}"
    assert not (tmp_path / "out").exists()


def test_device_and_workers_reach_the_scoring(tmp_path, monkeypatch) -> None:
    calls: list[dict] = []
    monkeypatch.setattr(rep, "reproduce", lambda *args, **kwargs: calls.append({"args": args, **kwargs}) or
                        {"generation": {}})
    assert rep.main(["--ckpt", "ete=x.ckpt", "--out", str(tmp_path), "--device", "cpu", "--workers", "3"]) == 0
    assert calls[0]["args"][8] == "cpu" and calls[0]["workers"] == 3  # device: reproduce's ninth argument
    assert rep.main(["--ckpt", "ete=x.ckpt", "--out", str(tmp_path)]) == 0 and calls[1]["workers"] is None

    def fake_evaluate(pred, out, **kwargs):
        calls.append(kwargs)
        out.mkdir()  # as evaluate does: score() writes its inputs beside the summary
        return {"failures": []}

    monkeypatch.setattr(rep, "evaluate", fake_evaluate)
    options = rep.ScoreOptions(["psnr"], device="cuda:1", workers=16)
    rep.score(tmp_path / "pred", tmp_path / "gt", tmp_path / "scores", tmp_path / "t.json", "ete", "demo", options)
    assert calls[-1]["device"] == "cuda:1" and calls[-1]["workers"] == 16 and calls[-1]["metrics"] == ["psnr"]
