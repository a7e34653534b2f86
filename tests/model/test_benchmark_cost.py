"""The generation cost table of benchmarks/model.py and the command line of benchmarks/gpu.py (no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import gpu
from benchmarks.model import H100_PEAK, SETTINGS, UTILISATION, Setting, setting_cost


class FixedCost:
    """Stand-in of ``GenerationCost`` with round numbers: 1 TFLOP per denoiser call, the rest 0."""

    frames, parameters = 16, 2**29  # 1 GiB in bf16

    def flops(self) -> dict[str, float]:
        return {"encoders": 0.0, "window inputs": 0.0, "denoiser call": 1e12, "decode frame": 0.0,
                "speech per mel frame": 0.0}

    def activation_peak(self, dtype: str, denoiser_batch: int, decode_frames: int) -> float:
        return denoiser_batch * 2**30


def test_cost_follows_steps_branches_batching_and_dtype() -> None:
    cost = FixedCost()
    before = setting_cost(cost, Setting("before"))
    assert before["tflop_per_s"] == pytest.approx(25 * 2 * 25 / 16)  # steps x branches x windows per second
    assert before["rtf"] == pytest.approx(before["tflop_per_s"] * 1e12 / (H100_PEAK["fp32"] * UTILISATION))
    batched = setting_cost(cost, Setting("batched", batched=True))
    assert batched["tflop_per_s"] == before["tflop_per_s"] and batched["calls_per_s"] == before["calls_per_s"] / 2
    assert batched["activations_gib"] == 2 * before["activations_gib"]  # the doubled batch
    fast = setting_cost(cost, Setting("dpm", dtype="bf16", steps=10))
    assert fast["tflop_per_s"] == pytest.approx(before["tflop_per_s"] * 10 / 25)
    assert fast["weights_gib"] == pytest.approx(1.0) and before["weights_gib"] == pytest.approx(2.0)
    assert [(s.steps, s.dtype, s.batched) for s in SETTINGS[-2:]] == [(10, "bf16", True)] * 2  # the fastest


def test_gpu_benchmark_without_cuda_exits_2_with_one_line(monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main(["--caps", "48"]) == 2
    err = capsys.readouterr().err
    assert "CUDA" in err and err.count("\n") == 1


def test_gpu_benchmark_arguments() -> None:
    default = gpu.parse([])
    assert default.caps == [48.0, 80.0] and default.steps == 3 and not default.skip_train
    args = gpu.parse(["--caps", "48", "141", "--steps", "2", "--seconds", "1.5", "--skip-generation"])
    assert args.caps == [48.0, 141.0] and args.steps == 2 and args.seconds == 1.5 and args.skip_generation
    with pytest.raises(SystemExit) as caught:
        gpu.parse(["--steps", "0"])
    assert caught.value.code == 2
