"""The evaluation estimate of benchmarks/reproduce.py: every network of the suite counted, each setting's work where
experiments.evaluate runs it, the total its parts' sum or, overlapped, the longer of the two processes."""

from __future__ import annotations

import pytest
import torch

from benchmarks.evaluation_cost import (
    FAST,
    NETWORKS,
    RECORDED,
    REFERENCE,
    CpuCost,
    EvaluationEstimate,
    Gpu,
    Protocol,
    count_network_flops,
    estimate_setting,
    format_estimate,
    format_estimates,
    gpu_unit_seconds,
    network_costs,
)
from metrics.suite import SUITE


@pytest.fixture(scope="module")
def counts() -> dict[str, tuple[float, str]]:
    return count_network_flops()


def test_every_network_of_the_suite_has_a_row_and_a_positive_count(counts) -> None:
    with_networks = {spec.label for spec in SUITE if spec.weights or spec.inject} | {"DNSMOS", "WER"}
    assert with_networks <= {spec.metric for spec in NETWORKS}
    for spec in NETWORKS:
        if spec.key is None:  # not countable: the row must say why
            assert spec.note.startswith("not counted: ")
            continue
        flops, source = counts[spec.key]
        assert flops > 0, spec
        assert source == "counted" or source.startswith(("recorded on ", "counted ("))
    # architectures installed here are counted live, not taken from a table
    assert {key for key, (_, source) in counts.items() if source == "counted"} >= {
        "inception", "lpips", "vggish", "syncnet", "ge2e", "whisper"}
    assert counts["i3d"][0] == RECORDED["i3d"].flops


def test_known_per_unit_counts(counts) -> None:
    # Inception-v3 at 299 px is about 5.7 GMAC; Whisper base's encoder alone 87 GFLOP per 30 s
    assert 11e9 < counts["inception"][0] < 12e9
    assert 87e9 < counts["whisper"][0] < 120e9


def test_total_is_the_sum_of_its_parts(counts) -> None:
    protocol = Protocol(clips=800, seconds=20.0, fps=25)
    networks = network_costs(counts, protocol)
    cpu = [CpuCost("(all)", "decoding", 0.1, passes=2), CpuCost("SSIM", "torch", 2.0), CpuCost("PESQ", "pesq", 0.05)]
    est = EvaluationEstimate(networks, cpu, protocol, flops_per_second=400e12, workers=16)
    gpu = sum(row.units * row.flops_per_unit / 400e12 for row in networks
              if row.in_total and row.flops_per_unit is not None)
    cpu_s = (0.1 * 2 + 2.0 + 0.05) * 16_000 / 16
    assert est.gpu_total == pytest.approx(gpu) and est.cpu_total == pytest.approx(cpu_s)
    assert est.total == pytest.approx(gpu + cpu_s)
    fid = next(row for row in networks if row.metric == "FID")
    assert fid.units == 2 * 800 * 500  # every frame of both sets
    whisper = next(row for row in networks if row.metric == "WER")
    assert not whisper.in_total and whisper.flops > 0  # beside the total, not in it
    text = format_estimate(est, goal_s=900.0)
    assert f"= {est.total:,.0f} s" in text and ("NOT met" in text) == (est.total > 900.0)


def _timed() -> list[CpuCost]:
    """Every kind of timed CPU part: decoding, parts the GPU takes over, CPU-bound metrics, device metrics' CPU side."""
    return [CpuCost("(all)", "decoding", 0.2, passes=2), CpuCost("SSIM", "torch", 2.0, suite_key="ssim", on_gpu=True),
            CpuCost("LSE", "face detection, MTCNN", 3.5, suite_key="lse", on_gpu=True),
            CpuCost("LSE", "face crops: cut and resize", 0.05, suite_key="lse", on_gpu=True),
            CpuCost("LSE", "face boxes: follow and smooth", 0.001, suite_key="lse"), CpuCost("PESQ", "pesq", 0.05, suite_key="pesq"),
            CpuCost("DNSMOS", "onnx", 0.17, suite_key="dnsmos"), CpuCost("WER", "PocketSphinx", 0.66, suite_key="wer"),
            CpuCost("Speaker sim.", "VAD", 0.01, suite_key="speaker_sim"), CpuCost("FAD", "patches", 0.003, suite_key="fad")]


def test_two_settings_place_the_work_where_evaluate_runs_it(counts) -> None:
    from metrics.suite import MetricSuite
    from metrics.syncnet import SyncNet

    protocol, gpu = Protocol(), Gpu(494.7e12)
    unit_seconds = gpu_unit_seconds(gpu)
    ref, fast = (estimate_setting(counts, unit_seconds, _timed(), protocol, gpu, s) for s in (REFERENCE, FAST))
    assert (REFERENCE.fvmd_stride, REFERENCE.asr, FAST.fvmd_stride, FAST.asr) == (1, "pocketsphinx", 16, "whisper_base_en")
    assert FAST.flags == ("--device cuda --workers 16 --asr whisper_base_en --metric-option fvmd.window_stride=16 "
                          "--metric-option lse.detect_every=5")
    assert (REFERENCE.lse_detect_every, FAST.lse_detect_every) == (1, 5)

    fvmd = [next(r for r in est.networks if r.metric == "FVMD") for est in (ref, fast)]
    assert [r.units for r in fvmd] == [2 * 800 * 485, 2 * 800 * 31]  # windows of 500 frames at stride 1 and 16
    whisper = [next(r for r in est.networks if r.metric == "WER") for est in (ref, fast)]
    assert [r.in_total for r in whisper] == [False, True]
    mtcnn = [next(r for r in est.networks if "MTCNN" in r.network) for est in (ref, fast)]
    assert [r.units for r in mtcnn] == [800 * 500, 800 * (100 + 1)]  # every frame; every 5th and the last (499)
    assert mtcnn[1].in_total and mtcnn[1].seconds(1.0) == pytest.approx(800 * 101 / (25.5 * 540 * 960 / 512**2))
    crops = [next(r for r in est.networks if r.network.startswith("face crops")) for est in (ref, fast)]
    assert all(r.in_total and r.units == 800 * 500 and 0 < r.seconds(1.0) < 30.0 for r in crops)  # seconds, batched on the GPU

    # the parts a GPU takes over are gone; PocketSphinx only where it transcribes
    assert {(r.metric, r.work) for r in ref.cpu} == {(r.metric, r.work) for r in _timed() if not r.on_gpu}
    assert ("WER", "PocketSphinx") not in {(r.metric, r.work) for r in fast.cpu}
    # every part runs where the suite would run it on a device with PocketSphinx for WER
    keys = ["ssim", "lse", "pesq", "dnsmos", "wer", "speaker_sim", "fad"]
    suite = MetricSuite(keys, paired=True, has_text=True, device="meta", overrides={
        "lse": {"net": SyncNet()}, "fad": {"feature_extractor": torch.nn.Linear(64, 8), "feature_dim": 8}})
    assert set(suite.metrics) == set(keys)
    for row in ref.cpu:
        expected = "workers" if row.suite_key is None or row.suite_key in suite.worker_keys else "main"
        assert row.where == expected, row

    for est in (ref, fast):  # overlapped: the longer of the main process and the workers
        main = est.gpu_total + sum(r.core_seconds(protocol) for r in est.cpu if r.where == "main")
        workers = sum(r.core_seconds(protocol) for r in est.cpu if r.where == "workers") / 16
        assert est.main_total == pytest.approx(main) and est.workers_total == pytest.approx(workers)
        assert est.total == pytest.approx(max(main, workers)) and est.overlap
    assert fast.total < ref.total
    text = format_estimates([ref, fast], goal_s=900.0, timed=_timed())
    for est in (ref, fast):
        verdict = next(line for line in text.splitlines() if line.startswith(f"  {est.setting.name} total:"))
        assert f"= {est.total:,.0f} s" in verdict and verdict.endswith("NOT met" if est.total > 900 else ": met")
    assert "| GPU | GPU |" in text  # SSIM on the CPU in neither setting
