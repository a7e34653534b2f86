"""VideoSSIM: per-frame SSIM averaged per clip, against skimage (gaussian window, sigma 1.5)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from metrics.errors import MetricInputError
from metrics.functional.image_quality import video_ssim
from metrics.image_quality import VideoSSIM
from tests.metrics._video_pairs import degraded, real_clip, video_pair
from tests.metrics.tester import check_metric_contract


def _reference_ssim(preds: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """skimage per frame: gaussian weights, sigma 1.5, population covariance, data_range 1."""
    p = preds.double().permute(0, 1, 3, 4, 2).numpy()  # (B, T, H, W, 3)
    t = target.double().permute(0, 1, 3, 4, 2).numpy()
    scores = [
        [
            structural_similarity(
                t[b, f], p[b, f], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1
            )
            for f in range(p.shape[1])
        ]
        for b in range(p.shape[0])
    ]
    return np.array(scores).mean(1)


def test_per_clip_ssim_matches_skimage() -> None:
    preds, target = video_pair(0, b=3, t=3, size=32)
    np.testing.assert_allclose(video_ssim(preds, target).numpy(), _reference_ssim(preds, target), atol=1e-5)


def test_non_square_uint8_frames_in_decoder_layout_match_skimage() -> None:
    """Rows and columns are filtered separately: a non-square frame catches a swapped axis."""
    g = torch.Generator().manual_seed(5)
    target = torch.randint(0, 256, (2, 3, 40, 29, 3), dtype=torch.uint8, generator=g)
    preds = (target.int() + torch.randint(-30, 31, target.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    p, t = preds.permute(0, 1, 4, 2, 3), target.permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W), channels-last memory
    np.testing.assert_allclose(video_ssim(p, t).numpy(), _reference_ssim(p.double() / 255, t.double() / 255), atol=1e-5)


def test_torchmetrics_contract_and_reference() -> None:
    batches = [video_pair(s, b=2, size=24) for s in range(4)]
    expected = np.concatenate([_reference_ssim(*b) for b in batches]).mean()
    check_metric_contract(VideoSSIM, batches, atol=1e-5, rtol=1e-5, expected=expected)


def test_frames_smaller_than_the_window_raise() -> None:
    preds, target = video_pair(0, size=8)
    with pytest.raises(MetricInputError, match="at least 11x11"):
        video_ssim(preds, target)


@pytest.mark.parametrize("kind,strengths", [("noise", [0.02, 0.05, 0.1, 0.2]), ("blur", [0.8, 1.5, 3.0])])
def test_real_clip_ssim_falls_with_degradation(shared_data, kind: str, strengths: list[float]) -> None:
    clip = real_clip(shared_data)
    scores = [video_ssim(degraded(clip, kind, s), clip).item() for s in strengths]
    assert scores[0] < 1.0 and all(a > b for a, b in pairwise(scores)), scores


def test_identical_clips_score_exactly_one() -> None:
    """Flat regions make E[x^2] - E[x]^2 round below zero; SSIM of a clip with itself must still be 1.0."""
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 256, (2, 2, 3, 4, 4), dtype=torch.uint8, generator=g)
    clip = blocks.repeat_interleave(16, -1).repeat_interleave(16, -2)  # (2, 2, 3, 64, 64), piecewise flat
    assert video_ssim(clip, clip).tolist() == [1.0, 1.0]
    unit = clip.float() / 255
    assert video_ssim(unit, unit).tolist() == [1.0, 1.0]
    metric = VideoSSIM()
    metric.update(clip, clip)
    assert metric.compute().item() == 1.0
