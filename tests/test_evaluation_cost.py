"""The evaluation estimate of benchmarks/reproduce.py: every network of the suite counted, the total its parts' sum."""

from __future__ import annotations

import pytest

from benchmarks.evaluation_cost import (
    NETWORKS,
    RECORDED,
    CpuCost,
    EvaluationEstimate,
    Protocol,
    count_network_flops,
    format_estimate,
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
