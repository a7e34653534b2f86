"""VideoPSNR: per-frame PSNR averaged per clip, against skimage on the same frames."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from metrics.errors import MetricInputError
from metrics.functional.image_quality import video_psnr
from metrics.image_quality import VideoPSNR
from tests.metrics._video_pairs import degraded, real_clip, video_pair
from tests.metrics.tester import check_metric_contract


def _reference_psnr(preds: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """skimage per frame (data_range 1), mean over frames per clip."""
    p, t = preds.double().numpy(), target.double().numpy()
    return np.array([[peak_signal_noise_ratio(t[b, f], p[b, f], data_range=1.0) for f in range(p.shape[1])] for b in range(p.shape[0])]).mean(1)


def test_per_clip_psnr_matches_skimage() -> None:
    preds, target = video_pair(0, b=3, t=4)
    np.testing.assert_allclose(video_psnr(preds, target).numpy(), _reference_psnr(preds, target), rtol=1e-5)


def test_uint8_input_equals_scaled_float() -> None:
    preds, target = video_pair(1)
    p8, t8 = (preds * 255).round().to(torch.uint8), (target * 255).round().to(torch.uint8)
    torch.testing.assert_close(video_psnr(p8, t8), video_psnr(p8.float() / 255, t8.float() / 255))


def test_uint8_frames_in_decoder_layout_match_skimage_exactly() -> None:
    """(T, H, W, 3) uint8 arrays permuted to (T, 3, H, W), as decoded videos arrive: no copy, same values."""
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 256, (2, 4, 20, 28, 3), dtype=torch.uint8, generator=g)
    preds = (target.int() + torch.randint(-9, 10, target.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    ours = video_psnr(preds.permute(0, 1, 4, 2, 3), target.permute(0, 1, 4, 2, 3))
    expected = [np.mean([peak_signal_noise_ratio(t.numpy(), p.numpy(), data_range=255) for p, t in zip(pc, tc)]) for pc, tc in zip(preds, target)]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12)


def test_torchmetrics_contract_and_reference() -> None:
    batches = [video_pair(s, b=2) for s in range(4)]
    expected = np.concatenate([_reference_psnr(*b) for b in batches]).mean()
    check_metric_contract(VideoPSNR, batches, atol=1e-4, rtol=1e-5, expected=expected)


def test_per_clip_values_are_exposed() -> None:
    metric = VideoPSNR()
    for seed in range(2):
        metric.update(*video_pair(seed))
    assert metric.per_clip().shape == (4,)
    torch.testing.assert_close(metric.compute(), metric.per_clip().mean())


def test_mismatched_shapes_raise() -> None:
    preds, target = video_pair(0)
    with pytest.raises(MetricInputError, match=r"VideoPSNR: preds \(2, 3, 3, 24, 24\) and target \(2, 2, 3, 24, 24\)"):
        VideoPSNR().update(preds, target[:, :2])


def test_out_of_range_clip_is_excluded() -> None:
    preds, target = video_pair(0)
    preds[0] *= 255.0
    metric = VideoPSNR()
    with pytest.warns(UserWarning, match=r"clip 0 of the batch excluded: preds float values must lie in \[0, 1\]"):
        metric.update(preds, target)
    assert metric.num_excluded.item() == 1 and metric.per_clip().shape == (1,)


@pytest.mark.parametrize("kind,strengths", [("noise", [0.02, 0.05, 0.1, 0.2]), ("blur", [0.8, 1.5, 3.0])])
def test_real_clip_psnr_falls_with_degradation(shared_data, kind: str, strengths: list[float]) -> None:
    clip = real_clip(shared_data)
    scores = [video_psnr(degraded(clip, kind, s), clip).item() for s in strengths]
    assert all(a > b for a, b in pairwise(scores)), scores


class _WronglyReducedPSNR(VideoPSNR):
    """Same values, but a DDP reduction that averages clip counts across processes."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("clip_count", torch.tensor(0.0), dist_reduce_fx="mean")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(preds, target)
        self.clip_count += preds.shape[0]

    def compute(self) -> torch.Tensor:
        return torch.cat(self.clip_scores).sum() / self.clip_count


def test_tester_catches_a_wrong_ddp_reduction() -> None:
    batches = [video_pair(s, b=1 + s % 2) for s in range(4)]
    # forward() merges batch states with the same dist_reduce_fx, so the error shows up at once.
    with pytest.raises(AssertionError, match="accumulated vs concatenated|DDP-merged"):
        check_metric_contract(_WronglyReducedPSNR, batches)
    with pytest.raises(AssertionError, match="DDP-merged"):
        check_metric_contract(_WronglyReducedPSNR, batches, check_forward=False)


def test_identical_frames_are_capped_at_100_db_in_the_mean_only() -> None:
    """A frame equal to its target has PSNR inf: per_clip() keeps it, compute() caps each frame at 100 dB."""
    preds, target = video_pair(0, b=2, t=3)
    preds[0] = target[0]  # clip 0: identical
    preds[1, 0] = target[1, 0]  # clip 1: first frame identical, two noisy ones
    metric = VideoPSNR()
    metric.update(preds, target)
    assert torch.isinf(metric.per_clip()).all()
    noisy = [peak_signal_noise_ratio(target[1, f].numpy(), preds[1, f].numpy(), data_range=1.0) for f in (1, 2)]
    expected = torch.tensor([100.0, (100.0 + sum(noisy)) / 3], dtype=torch.float64)
    torch.testing.assert_close(metric.per_clip(capped=True), expected)
    torch.testing.assert_close(metric.compute(), expected.mean())
    torch.testing.assert_close(video_psnr(preds, target, max_db=100.0), expected)
    assert torch.isinf(VideoPSNR(max_db=None).forward(preds, target))  # no cap: the plain mean
    with pytest.raises(ValueError, match="max_db must be a positive number of dB or None, got -1"):
        VideoPSNR(max_db=-1)
