"""KVD: unbiased polynomial-kernel MMD^2 on I3D-style features vs sklearn on the same features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import polynomial_kernel
from torch import nn

from metrics.features.i3d import preprocess_i3d
from metrics.fvd import KernelVideoDistance
from tests.metrics.tester import check_metric_contract


def _random_i3d_standin() -> nn.Module:
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv3d(3, 4, kernel_size=(3, 7, 7), stride=(2, 8, 8)), nn.ReLU(), nn.AdaptiveAvgPool3d((1, 2, 2)), nn.Flatten())
    return net.eval().requires_grad_(False)  # (B, 16)


def _videos(seed: int, b: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 16, 3, 20, 20, generator=g) * 0.7 + shift).clamp(0, 1)


def _reference_kvd(x: np.ndarray, y: np.ndarray) -> float:
    d, m, n = x.shape[1], x.shape[0], y.shape[0]
    k = lambda a, b: polynomial_kernel(a, b, degree=3, gamma=1.0 / d, coef0=1)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean())


def test_kvd_matches_sklearn_on_the_same_features() -> None:
    net = _random_i3d_standin()
    real, fake = _videos(0, b=10), _videos(1, b=8, shift=0.2)
    metric = KernelVideoDistance(feature_extractor=net, extract_batch_size=3)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.no_grad():
        a = net(preprocess_i3d(real)).double().numpy()
        b = net(preprocess_i3d(fake)).double().numpy()
    assert metric.compute().item() == pytest.approx(_reference_kvd(a, b), rel=1e-6, abs=1e-9)


def test_torchmetrics_contract() -> None:
    net = _random_i3d_standin()
    batches = [[(_videos(s, b=2), True), (_videos(10 + s, b=2, shift=0.15), False)] for s in range(4)]
    check_metric_contract(lambda: KernelVideoDistance(feature_extractor=net), batches, atol=1e-9, rtol=1e-6)


def test_reset_real_features_false_keeps_real_features() -> None:
    metric = KernelVideoDistance(feature_extractor=_random_i3d_standin(), reset_real_features=False)
    metric.update(_videos(0, b=3), real=True)
    metric.update(_videos(1, b=3), real=False)
    metric.reset()
    assert sum(f.shape[0] for f in metric.real_features) == 3 and metric.fake_features == []
