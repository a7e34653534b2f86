"""The suite table (every metric buildable, every paper column produced) and its runner."""

from __future__ import annotations

import importlib
import math
import re
import warnings

import numpy as np
import pytest
import torch

from metrics.fid import VideoFID
from metrics.intelligibility import STOI
from metrics.paper_tables import TABLES, OurRow, render_latex, render_markdown
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
    from metrics.paper_tables import DATASETS

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
    md = render_markdown(TABLES[5], OurRow({"lse_c": 6.123, "lse_d": float("nan")}, "run1"))
    assert "| run1 (ours) | 6.12 | -[1] |" in md.splitlines()
    assert r"\midrule" in render_latex(TABLES[5], OurRow({"lse_c": 6.1}, "run_1"))
    assert r"run\_1 (ours)" in render_latex(TABLES[5], OurRow({"lse_c": 6.1}, "run_1"))


def _table_lines(md: str) -> list[list[str]]:
    """Cells of the Markdown table rows (header and separator excluded)."""
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


def _notes(md: str) -> dict[str, str]:
    return dict(re.findall(r"^\[(\d+)\] (.*)$", md, flags=re.MULTILINE))


_OURS = OurRow(
    {"psnr": 30.0, "ssim": 0.9, "fid": 12.0, "mcd_paper": 50.0, "mcd": 5.123, "lse_c": 6.0},
    "run", "HDTF", num_clips=3,
    counts={"psnr": 3, "ssim": 3, "fid": "3 vs 5 real", "mcd_paper": 2, "mcd": 2, "lse_c": 3},
    reasons={"kvd": "missing weights ['i3d_fvd']", "lpips": "missing package(s) ['lpips']",
             "mos_video": "human ratings: give --ratings FILE", "fvd": "missing weights ['i3d_fvd']",
             "fvmd": "missing weights ['pips2'] (see `python -m metrics.registry`) <x>"},
    notes={"psnr": "frames identical to the ground truth count 100 dB (1 of 3 clips)"},
)


def test_tables_without_a_test_set_are_not_captioned_with_one() -> None:
    for number in (2, 4, 5):
        md = render_markdown(TABLES[number], _OURS)
        assert "HDTF" not in md.splitlines()[0], md.splitlines()[0]
        assert "The paper's rows name no test set; ours: HDTF." in md
        assert "HDTF" not in render_latex(TABLES[number], _OURS).split(r"\caption")[1].split("\n")[0]
    for number in (1, 3):
        assert md_caption(number).endswith("(HDTF)")
    assert "ours: test set not given (--dataset)" in render_markdown(TABLES[2], OurRow({}, "run"))


def md_caption(number: int) -> str:
    return render_markdown(TABLES[number], _OURS).splitlines()[0]


def test_headers_give_units_and_table_3_names_both_mcds() -> None:
    header = render_markdown(TABLES[2], None).splitlines()[2]
    assert "| PSNR (dB) ↑ |" in header and "| MOS (0-5) ↑ |" in header and "| LPIPS ↓ |" in header
    md = render_markdown(TABLES[3], _OURS)
    assert "| Dataset | Model | FAD ↓ | MFCC dist. (paper's MCD) ↓ | STOI (0-1) ↑ | MCD (dB) ↓ |" in md
    rows = _table_lines(md)
    assert rows[-2][:5] == ["HDTF", "Our Model", "106.43", "44.05", "0.15"]  # the paper's last HDTF row
    assert rows[-1] == ["HDTF", "run (ours)", rows[-1][2], "50.00", rows[-1][4], "5.12"]
    notes = _notes(md)
    assert notes[rows[-2][5][2:-1]] == "not reported in the paper"
    assert "Euclidean distance between MFCCs" in md and "standard mel-cepstral distortion in dB" in md
    assert r"MCD (dB) $\downarrow$" in render_latex(TABLES[3], _OURS)


def test_every_dash_carries_its_reason_and_every_table_its_clip_count() -> None:
    for number in (1, 2, 3, 4, 5):
        md = render_markdown(TABLES[number], _OURS)
        notes = _notes(md)
        dashes = [cell for row in _table_lines(md) for cell in row if cell.startswith("-")]
        assert dashes, number
        for cell in dashes:
            assert re.fullmatch(r"-\[\d+\]", cell) and cell[2:-1] in notes, (number, cell)
        assert "Clips: run (ours) covers 3 clips" in md
        assert "the paper does not say how many clips its rows cover" in md
    md2 = render_markdown(TABLES[2], _OURS)
    assert set(_notes(md2).values()) >= {"missing weights ['i3d_fvd']", "missing package(s) ['lpips']",
                                         "human ratings: give --ratings FILE"}
    assert "PSNR 3, SSIM 3" in md2 and "1 of 3 clips" in md2
    assert "FID 3 vs 5 real" in render_markdown(TABLES[1], _OURS)
    # a value missing without a recorded reason still says so
    assert "not computed in this run" in _notes(render_markdown(TABLES[5], _OURS)).values()


_UNTEX = [(r"\textbackslash{}", "\\"), (r"\textasciitilde{}", "~"), (r"\textasciicircum{}", "^"), ("-{}-", "--"),
          (r"\textasciigrave{}", "`"), (r"\textless{}", "<"), (r"\textgreater{}", ">"),
          (r"$\uparrow$", "↑"), (r"$\downarrow$", "↓")] + [("\\" + ch, ch) for ch in "&%$#_{}"]


def _untex(text: str) -> str:
    text = re.sub(r"\$\^\{(\d+)\}\$", r"[\1]", text)
    text = re.sub(r"^\[(\d+)\] ", r"[\1] ", text)
    for tex, plain in _UNTEX:
        text = text.replace(tex, plain)
    return text


def test_markdown_and_latex_carry_the_same_cells_and_notes() -> None:
    for number in (1, 2, 3, 4, 5):
        md, tex = render_markdown(TABLES[number], _OURS), render_latex(TABLES[number], _OURS)
        tex_rows = [line[: -len(r" \\")].split(" & ") for line in tex.splitlines() if line.endswith(r" \\") and " & " in line]
        assert [[_untex(c) for c in row] for row in tex_rows] == [
            [c.strip() for c in line.strip("|").split(" | ")] for line in md.splitlines() if line.startswith("| ")], number
        md_notes = md.split("\n\n", 2)[2].split("\n\n")
        tex_notes = [line[: -len(r"\par")] for line in tex.split("\\footnotesize\n")[1].splitlines() if line.endswith(r"\par")]
        assert [_untex(note) for note in tex_notes] == [note.strip() for note in md_notes], number
        assert _untex(tex.split(r"\caption{")[1].split("}\n")[0]) == md.splitlines()[0].replace(
            f"**Table {number}.**", f"Table {number}:")
    tex = render_latex(TABLES[1], _OURS)
    assert r"\textasciigrave{}python -{}-m" not in tex and r"\textasciigrave{}python -m metrics.registry\textasciigrave{}" in tex
    assert r"\textless{}x\textgreater{}" in tex  # "<" and ">" would print as inverted marks in OT1


def test_a_row_without_a_test_set_says_so() -> None:
    md = render_markdown(TABLES[1], OurRow({"fid": 10.0}, "run", num_clips=2))
    assert len(_table_lines(md)) == 21  # every block of the paper, then ours
    assert "Our row's test set is not given (--dataset); the paper's rows of every test set are shown." in md


# --------------------------------------------------------------------------------------------
# Where each metric runs: its networks and states on the device, the CPU-bound ones apart
# --------------------------------------------------------------------------------------------


class _PairNet(torch.nn.Module):
    """An LPIPS stand-in with weights: two (N, 3, H, W) batches -> (N, 1, 1, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.conv(a) - self.conv(b)).square().mean(dim=(1, 2, 3), keepdim=True)


class _Tracker(torch.nn.Module):
    """A PIPs++ stand-in with weights: (W, S, 3, H, W_) -> (W, S, 400, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 800)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        w, s = windows.shape[:2]
        return self.head(windows.mean(dim=(3, 4))).reshape(w, s, 400, 2)


class _Recognizer:
    """A recogniser that says what it hears: nothing."""

    name = "stand-in"

    def __call__(self, audio: torch.Tensor) -> list[str]:
        return [""] * len(audio)


def _injected_networks() -> dict[str, dict]:
    from resemblyzer import VoiceEncoder

    from metrics.syncnet import SyncNet

    frames = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, 4))
    clips = torch.nn.Sequential(torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(3, 4))
    return {
        "fid": {"feature_extractor": frames}, "fvd": {"feature_extractor": clips}, "kvd": {"feature_extractor": clips},
        "fvmd": {"tracker": _Tracker()}, "lpips": {"net": _PairNet()},
        "fad": {"feature_extractor": torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(96 * 64, 8)), "feature_dim": 8},
        "speaker_sim": {"encoder": VoiceEncoder("cpu", verbose=False)}, "lse": {"net": SyncNet()},
    }


def _tensors(metric: torch.nn.Module) -> list[torch.Tensor]:
    """Parameters, buffers and states of a metric (its networks included)."""
    states = [t for value in metric.metric_state.values() for t in (value if isinstance(value, list) else [value])]
    return [*metric.parameters(), *metric.buffers(), *states]


NETWORK_METRICS = {"fid", "fvd", "kvd", "fvmd", "lpips", "fad", "speaker_sim", "lse", "wer"}
CPU_BOUND = {"stoi", "estoi", "pesq", "mcd", "mcd_paper", "dnsmos"}


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_every_network_and_state_is_on_the_device_and_the_cpu_bound_metrics_stay_apart(device, monkeypatch) -> None:
    import metrics.asr

    asked = []
    monkeypatch.setattr(metrics.asr, "make_recognizer", lambda spec, device="cpu": asked.append(device) or _Recognizer())
    suite = MetricSuite(None, paired=True, has_text=True, overrides=_injected_networks(), recognizer="some-asr",
                        device=device)
    assert set(suite.metrics) == set(SPECS) and suite.skipped == {}
    assert asked == [torch.device(device)]  # the recogniser is loaded on the device
    on_device = set(suite.device_keys)
    if device == "cpu":  # every per-clip metric goes to the worker processes; the distributions stay here
        assert on_device == {"fid", "fvd", "kvd", "fvmd", "fad"}
    else:  # networks and the frame metrics on the device; library code on the CPU
        assert on_device == NETWORK_METRICS | {"psnr", "ssim"}
    assert set(suite.worker_keys) == set(SPECS) - on_device
    for key, metric in suite.metrics.items():
        where = {t.device.type for t in _tensors(metric)}
        assert where == {device if key in on_device else "cpu"}, (key, where)
    assert len(list(suite.metrics["fvmd"].tracker.parameters())) == 2  # the check above saw the networks
    assert len(list(suite.metrics["speaker_sim"].encoder.parameters())) > 0


def test_lse_and_the_face_detector_follow_the_metric_device(monkeypatch) -> None:
    from metrics import facecrop
    from metrics.lse import LipSyncError
    from metrics.syncnet import SyncNet

    asked = []

    def detector(device="cpu"):
        asked.append(torch.device(device))

        def detect(frames):
            return [np.array([[8.0, 8.0, 40.0, 40.0, 0.99]]) for _ in frames]

        detect.name = "stand-in"
        return detect

    monkeypatch.setattr(facecrop, "default_detector", detector)
    metric = LipSyncError(net=SyncNet()).to("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # whether random SyncNet weights score this clip does not matter here
        metric.update(torch.zeros(1, 30, 3, 48, 48, dtype=torch.uint8), torch.rand(1, 30 * 640) - 0.5)
    assert asked == [torch.device("cpu")] and metric.detectors_used == {"stand-in"}
    assert next(facecrop._mtcnn(torch.device("meta")).parameters()).device.type == "meta"


def test_states_taken_clip_by_clip_from_a_worker_suite_add_up_to_one_suite() -> None:
    keys = ["psnr", "ssim", "stoi", "pesq"]
    pairs = [(_clip(1), _clip(2)), (_clip(3, silent=True), _clip(4)), (_clip(5), _clip(6))]
    whole = MetricSuite(keys, paired=True)
    rows = [whole.update(p, g) for p, g in pairs]
    main = MetricSuite(keys, paired=True)
    worker = main.worker_suite()
    assert worker is not None and set(worker.metrics) == set(keys)
    for (pred, gt), row in zip(pairs, rows):
        assert worker.update(pred, gt) == row
        main.add_states(worker.take_states())
    assert all(not s["scores" if "scores" in s else "clip_scores"] for s in worker.take_states().values())
    assert main.compute() == whole.compute()  # exactly: the same values in the same order
    assert int(main.metrics["pesq"].num_excluded) == 1
