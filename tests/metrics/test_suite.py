"""The suite table (every metric buildable, every paper column produced) and its runner."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from metrics.fid import VideoFID
from metrics.intelligibility import STOI
from metrics.paper_tables import TABLES
from metrics.suite import (
    SPECS,
    SUITE,
    Clip,
    MetricSpec,
    MetricSuite,
    align_pair,
    alignment_report,
    missing_requirement,
)


def _clip(seed: int, frames: int = 8, side: int = 16, seconds: float = 1.0, silent: bool = False) -> Clip:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    wav = 0.3 * torch.sin(2 * math.pi * (140 + 10 * seed) * t) * (0.6 + 0.4 * torch.sin(2 * math.pi * 3 * t))
    return Clip(torch.randint(0, 256, (frames, 3, side, side), dtype=torch.uint8, generator=g), wav * (0 if silent else 1))


def test_every_factory_resolves_and_every_paper_column_is_produced() -> None:
    for spec in SUITE:
        module, name = spec.factory.split(":")
        cls = getattr(importlib.import_module(module), name)
        assert isinstance(cls, type), spec.key
        assert spec.needs_gt == (spec.reference == "paired")
    produced = {col for spec in SUITE for col in spec.outputs}
    human = {"mos_video", "mos_audio"}
    for table in TABLES.values():
        for column in table.columns + table.extra_columns:
            assert column.key in produced | human, f"Table {table.number} column {column.key} has no metric"


def test_missing_requirements_name_the_weights_or_package(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("NFY_CACHE", str(tmp_path))  # an empty cache: no weights at all
    reason = missing_requirement(SPECS["lse"])
    assert "syncnet" in reason and str(tmp_path / "syncnet" / "syncnet_v2.model") in reason
    assert missing_requirement(SPECS["lse"], {"net": torch.nn.Identity()}) is None  # injected network
    fake = MetricSpec("x", "X", "audio", "none", "per_clip", "metrics.pesq:WidebandPESQ", packages=("no_such_package_xyz",))
    assert "no_such_package_xyz" in missing_requirement(fake)
    assert missing_requirement(SPECS["psnr"]) is None


def test_modes_skip_with_reasons() -> None:
    suite = MetricSuite(["psnr", "fid", "wer", "dnsmos"], paired=False, has_reference_set=False, has_text=False)
    assert set(suite.skipped) == {"psnr", "fid", "wer"}
    assert "no-reference" in suite.skipped["psnr"] and "--ref-set" in suite.skipped["fid"]
    assert "--transcripts" in suite.skipped["wer"] and list(suite.metrics) == ["dnsmos"]
    with pytest.raises(ValueError, match="unknown metric"):
        MetricSuite(["psnr", "bogus"])


def test_per_clip_values_and_exclusions_match_the_metrics() -> None:
    suite = MetricSuite(["psnr", "stoi"], paired=True)
    pairs = [(_clip(1), _clip(2)), (_clip(3), _clip(4)), (_clip(5, silent=True), _clip(6))]
    rows = [suite.update(p, g) for p, g in pairs]
    direct = STOI()
    direct.update(torch.stack([pairs[0][0].wav, pairs[1][0].wav]), torch.stack([pairs[0][1].wav, pairs[1][1].wav]))
    assert [r[0]["stoi"] for r in rows[:2]] == pytest.approx(direct.per_clip().tolist(), abs=1e-9)
    assert "stoi" not in rows[2][0] and "silent" in rows[2][1]["stoi"]
    assert "psnr" in rows[2][0]  # the video metric still scores the clip
    results, failed = suite.compute()
    assert not failed and results["stoi"] == pytest.approx(float(direct.compute()), abs=1e-9)


def test_reference_set_feeds_the_real_side() -> None:
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    suite = MetricSuite(["fid"], paired=False, has_reference_set=True, overrides={"fid": {"feature_extractor": net}})
    direct = VideoFID(feature_extractor=net)
    for seed in (1, 2):
        suite.add_reference(_clip(seed))
        direct.update(_clip(seed).video[None], real=True)
    for seed in (3, 4):
        values, refused = suite.update(_clip(seed))
        assert values == {} and refused == {}  # a distribution metric has no per-clip value
        direct.update(_clip(seed).video[None], real=False)
    results, _ = suite.compute()
    assert results["fid"] == pytest.approx(float(direct.compute()), rel=1e-6)


def test_align_pair_cuts_and_resizes_and_says_what_it_did() -> None:
    long_big, short_small = _clip(1, frames=10, side=32, seconds=1.2), _clip(2, frames=8, side=16)
    pred, gt = align_pair(long_big, short_small)
    assert pred.video.shape == gt.video.shape == (8, 3, 16, 16)
    assert pred.wav.shape == gt.wav.shape == (16000,)
    assert pred.video.dtype == torch.uint8
    assert alignment_report(long_big, short_small) == {
        "pred_frames_cut": 2, "gt_frames_cut": 0, "pred_resized_from": "32x32",
        "pred_audio_samples_cut": 3200, "gt_audio_samples_cut": 0,
    }
    assert alignment_report(short_small, long_big) == {
        "pred_frames_cut": 0, "gt_frames_cut": 2, "pred_resized_from": "16x16",
        "pred_audio_samples_cut": 0, "gt_audio_samples_cut": 3200,
    }
    same = _clip(3)
    assert alignment_report(same, same) == {
        "pred_frames_cut": 0, "gt_frames_cut": 0, "pred_resized_from": "", "pred_audio_samples_cut": 0, "gt_audio_samples_cut": 0,
    }
    no_audio = alignment_report(Clip(same.video, None), same)  # nothing cut where a track is missing
    assert no_audio["pred_audio_samples_cut"] is None and no_audio["gt_audio_samples_cut"] is None


def test_a_missing_track_excludes_only_the_metrics_that_need_it() -> None:
    suite = MetricSuite(["psnr", "stoi"], paired=True)
    values, refused = suite.update(Clip(_clip(1).video, None), _clip(2))
    assert "psnr" in values and "stoi" not in values
    assert refused == {"stoi": "no audio track in the generated clip"}
    values, refused = suite.update(_clip(3), Clip(_clip(4).video, None))
    assert "psnr" in values and refused == {"stoi": "no audio track in the ground-truth clip"}
    values, refused = suite.update(Clip(None, _clip(5).wav), _clip(6))
    assert "stoi" in values and refused == {"psnr": "no video track in the generated clip"}
    results, failed = suite.compute()
    assert not failed and set(results) == {"psnr", "stoi"}
    assert results["psnr"] == pytest.approx(float(MetricSuite(["psnr"]).metrics["psnr"].forward(
        torch.stack([_clip(1).video, _clip(3).video]), torch.stack([_clip(2).video, _clip(4).video]))), rel=1e-12)


def test_psnr_rows_keep_the_uncapped_value_beside_the_capped_one() -> None:
    suite = MetricSuite(["psnr"], paired=True)
    values, _ = suite.update(_clip(1), _clip(1))
    assert values == {"psnr": math.inf, "psnr_capped": 100.0}
    results, _ = suite.compute()
    assert results == {"psnr": 100.0}


def test_paper_tables_transcription_spot_checks() -> None:
    from metrics.paper_tables import DATASETS, render_latex, render_markdown

    assert {n: len(t.rows) for n, t in TABLES.items()} == {1: 20, 2: 5, 3: 20, 4: 5, 5: 7, 6: 5, 7: 6}
    assert all(len(values) == len(t.columns) for t in TABLES.values() for _, _, values in t.rows)
    assert TABLES[1].block("CelebV-HQ")[-1] == ("CelebV-HQ", "Our Model", (34.01, 43.67, 2743.29))
    assert TABLES[3].block("FakeAVCeleb")[2] == ("FakeAVCeleb", "XTTS_v2", (184.39, 77.88, 0.11))
    assert TABLES[4].rows[-1][2] == (0.43, 4.01, 0.18, 4.56) and TABLES[5].rows[0][2] == (5.45, 8.52)
    assert TABLES[7].rows[2][2][0] == 85.25
    # the proposed model's numbers repeat across Tables 1, 3, 6 and 7 in the paper (VoxCeleb)
    vox = TABLES[1].block("VoxCeleb")[-1][2] + TABLES[3].block("VoxCeleb")[-1][2]
    assert TABLES[6].rows[-1][2] == vox and TABLES[7].rows[-1][2] == vox
    assert len(TABLES[2].block("HDTF")) == 5 and DATASETS[0] == "VoxCeleb"
    with pytest.raises(ValueError, match="dataset must be one of"):
        TABLES[1].block("LRS3")
    md = render_markdown(TABLES[5], {"lse_c": 6.123, "lse_d": float("nan")}, "run1")
    assert md.splitlines()[-1] == "| run1 (ours) | 6.12 | - |"
    assert r"\midrule" in render_latex(TABLES[5], {"lse_c": 6.1}, "run\\_1")
