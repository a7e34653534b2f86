"""VideoFID: frames through an injected random network vs a direct scipy FID; real weights if present."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from metrics.fid import VideoFID
from metrics.registry import available, expected_path
from tests.metrics.tester import (
    TrainModeHead,
    assert_frozen,
    assert_trainable,
    check_metric_contract,
)


def _random_net() -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2), nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten())  # (N, 24)
    return net.eval().requires_grad_(False)


def _videos(seed: int, b: int = 3, t: int = 4, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, t, 3, 20, 20, generator=g) * 0.8 + shift).clamp(0, 1)


def _reference_fid(net: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> float:
    """Features of every frame, numpy mean/cov (N-1) and scipy sqrtm, as pytorch-fid does."""
    with torch.no_grad():
        a = net(real.flatten(0, 1)).double().numpy()
        b = net(fake.flatten(0, 1)).double().numpy()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_matches_direct_scipy_computation() -> None:
    net = _random_net()
    real, fake = _videos(0, b=6, t=6), _videos(1, b=5, t=6, shift=0.2)
    metric = VideoFID(feature_extractor=net, extract_batch_size=7)  # chunks that cut clips
    metric.update(real, real=True)
    metric.update(fake, real=False)
    assert metric.compute().item() == pytest.approx(_reference_fid(net, real, fake), rel=1e-4, abs=1e-6)


def test_uint8_and_float_inputs_agree() -> None:
    net = _random_net()
    real, fake = _videos(0, b=4), _videos(1, b=4, shift=0.1)
    as_uint8 = lambda v: (v * 255).round().to(torch.uint8)
    results = []
    for convert in (lambda v: (v * 255).round() / 255, as_uint8):
        metric = VideoFID(feature_extractor=net)
        metric.update(convert(real), real=True)
        metric.update(convert(fake), real=False)
        results.append(metric.compute().item())
    assert results[0] == pytest.approx(results[1], rel=1e-5)


def test_torchmetrics_contract() -> None:
    net = _random_net()
    batches = [[(_videos(s, b=2), True), (_videos(9 + s, b=2, shift=0.1), False)] for s in range(4)]
    check_metric_contract(lambda: VideoFID(feature_extractor=net), batches, atol=1e-6, rtol=1e-5)


def test_bad_clip_is_excluded_with_warning() -> None:
    net = _random_net()
    videos = _videos(0, b=3)
    videos[1, 0, 0, 0, 0] = float("nan")
    metric = VideoFID(feature_extractor=net)
    with pytest.warns(UserWarning, match="clip 1 of the batch excluded: contains NaN"):
        metric.update(videos, real=True)
    assert metric.num_excluded.item() == 1
    assert metric.real_features_num_samples.item() == 2 * videos.shape[1]


def test_reset_real_features_false_keeps_real_statistics() -> None:
    metric = VideoFID(feature_extractor=_random_net(), reset_real_features=False)
    metric.update(_videos(0), real=True)
    metric.update(_videos(1, shift=0.1), real=False)
    metric.reset()
    assert metric.real_features_num_samples.item() == 12 and metric.fake_features_num_samples.item() == 0


@pytest.mark.skipif(not available("inception_fid"), reason=f"weights not found: {expected_path('inception_fid')}")
def test_real_inception_weights() -> None:
    from metrics.features.inception import FIDInceptionV3

    net = FIDInceptionV3()
    net.train()
    assert not net.training
    frames = torch.rand(2, 3, 64, 64)
    features = net(frames)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    metric = VideoFID()
    clip = _videos(0, b=2, t=3)
    metric.update(clip, real=True)
    metric.update(clip, real=False)
    assert abs(metric.compute().item()) < 1e-2


def test_injected_extractor_is_frozen_in_eval_mode_even_after_train() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2), nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), TrainModeHead(24))
    assert_trainable(net)
    metric = VideoFID(feature_extractor=net).train()
    assert_frozen(metric.inception)
    clips = _videos(0, b=2)
    metric.update(clips, real=True)
    metric.update(clips, real=False)
    torch.testing.assert_close(metric.real_features_sum, metric.fake_features_sum, rtol=0, atol=0)
    assert not metric.real_features_sum.requires_grad
