"""FVD: I3D preprocessing and the Frechet stage (1/N covariance) against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from metrics.features.i3d import preprocess_i3d
from metrics.fvd import FrechetVideoDistance, KernelVideoDistance
from metrics.registry import available, expected_path
from tests.metrics.tester import (
    TrainModeHead,
    assert_frozen,
    assert_trainable,
    check_metric_contract,
)


def _random_i3d_standin() -> nn.Module:
    """Random 3D-conv network taking (B, 3, T, 224, 224) -> (B, 12)."""
    torch.manual_seed(4)
    net = nn.Sequential(
        nn.Conv3d(3, 4, kernel_size=(3, 7, 7), stride=(2, 8, 8)), nn.ReLU(), nn.AdaptiveAvgPool3d((1, 1, 3)), nn.Flatten()
    )
    return net.eval().requires_grad_(False)


def _videos(seed: int, b: int, t: int = 18, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, t, 3, 24, 32, generator=g) * 0.7 + shift).clamp(0, 1)


def _reference_preprocess(videos_uint8: torch.Tensor) -> torch.Tensor:
    """StyleGAN-V's detector path: 0-255 -> [-1, 1], (B, C, T, H, W), trilinear to (T, 224, 224)."""
    x = videos_uint8[:, :16].permute(0, 2, 1, 3, 4).double()  # (B, 3, 16, H, W)
    x = x / 127.5 - 1.0
    return F.interpolate(x, size=(16, 224, 224), mode="trilinear", align_corners=False)


def _reference_fvd(net: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance with 1/N covariances (StyleGAN-V) via scipy sqrtm."""
    with torch.no_grad():
        a = net(_reference_preprocess(real).float()).double().numpy()
        b = net(_reference_preprocess(fake).float()).double().numpy()
    s1, s2 = np.cov(a, rowvar=False, bias=True), np.cov(b, rowvar=False, bias=True)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _as_uint8(videos: torch.Tensor) -> torch.Tensor:
    return (videos * 255).round().to(torch.uint8)


def test_preprocessing_matches_the_detector_path() -> None:
    videos = _as_uint8(_videos(0, b=2))
    ours = preprocess_i3d(videos.float() / 255.0)
    assert ours.shape == (2, 3, 16, 224, 224)
    torch.testing.assert_close(ours.double(), _reference_preprocess(videos), atol=1e-5, rtol=0)
    assert ours.min() >= -1.0 and ours.max() <= 1.0


def test_fvd_matches_direct_computation() -> None:
    net = _random_i3d_standin()
    real, fake = _as_uint8(_videos(1, b=20)), _as_uint8(_videos(2, b=18, shift=0.2))
    metric = FrechetVideoDistance(feature_extractor=net, extract_batch_size=7)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    assert metric.compute().item() == pytest.approx(_reference_fvd(net, real, fake), rel=1e-4, abs=1e-6)


def test_ddof_one_matches_tats_convention() -> None:
    net = _random_i3d_standin()
    real, fake = _videos(1, b=6), _videos(2, b=6, shift=0.2)
    values = []
    for ddof in (0, 1):
        metric = FrechetVideoDistance(feature_extractor=net, ddof=ddof)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        values.append(metric.compute().item())
    assert values[0] != pytest.approx(values[1], rel=1e-6)


def test_torchmetrics_contract() -> None:
    net = _random_i3d_standin()
    batches = [[(_videos(s, b=3), True), (_videos(10 + s, b=3, shift=0.15), False)] for s in range(4)]
    check_metric_contract(lambda: FrechetVideoDistance(feature_extractor=net), batches, atol=1e-8, rtol=1e-6)


def test_short_clip_is_excluded_with_warning() -> None:
    metric = FrechetVideoDistance(feature_extractor=_random_i3d_standin())
    with pytest.warns(UserWarning) as record:
        metric.update(_videos(0, b=2, t=10), real=True)
    messages = sorted(str(w.message) for w in record)
    assert messages == [
        f"FrechetVideoDistance: clip {i} of the batch excluded: has 10 frames, needs at least 16" for i in (0, 1)
    ]
    assert metric.num_excluded.item() == 2 and metric.real_features_num_samples.item() == 0


def _trainable_i3d_standin() -> nn.Module:
    """(B, 3, T, 224, 224) -> (B, 12), built as a user would: train mode, gradients on."""
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv3d(3, 4, kernel_size=(3, 7, 7), stride=(2, 8, 8)), nn.ReLU(),
                         nn.AdaptiveAvgPool3d((1, 1, 3)), nn.Flatten(), TrainModeHead(12))


def _side_features(metric: FrechetVideoDistance | KernelVideoDistance, side: str) -> torch.Tensor:
    if isinstance(metric, KernelVideoDistance):
        return torch.cat(getattr(metric, f"{side}_features"))
    return getattr(metric, f"{side}_features_sum")


@pytest.mark.parametrize("metric_class", [FrechetVideoDistance, KernelVideoDistance])
def test_injected_extractor_is_frozen_in_eval_mode_even_after_train(metric_class) -> None:
    net = _trainable_i3d_standin()
    assert_trainable(net)
    metric = metric_class(feature_extractor=net).train()  # e.g. inside a LightningModule in training
    assert_frozen(metric.feature_extractor)
    running_mean = net[-1].norm.running_mean.clone()
    clips = _videos(0, b=4)
    metric.update(clips, real=True)
    metric.update(clips, real=False)
    # eval mode: no dropout, BatchNorm on its running statistics, which do not move
    torch.testing.assert_close(_side_features(metric, "real"), _side_features(metric, "fake"), rtol=0, atol=0)
    torch.testing.assert_close(net[-1].norm.running_mean, running_mean, rtol=0, atol=0)
    assert not _side_features(metric, "real").requires_grad


@pytest.mark.skipif(not available("i3d_fvd"), reason=f"weights not found: {expected_path('i3d_fvd')}")
def test_real_i3d_weights() -> None:
    metric = FrechetVideoDistance()
    metric.feature_extractor.train()
    assert not metric.feature_extractor.training
    clips = _videos(0, b=3)
    metric.update(clips, real=True)
    metric.update(clips, real=False)
    assert metric.real_features_sum.shape == (400,)
    assert abs(metric.compute().item()) < 1e-3
