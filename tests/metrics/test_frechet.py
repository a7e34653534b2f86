"""Frechet distance and kernel MMD cores against scipy/sklearn formulas on seeded features."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.metrics.pairwise import polynomial_kernel

from metrics.errors import MetricInputError
from metrics.functional.frechet import frechet_distance
from metrics.functional.kernel import kernel_distance


def _reference_frechet(x: np.ndarray, y: np.ndarray, ddof: int, eps: float) -> float:
    """pytorch-fid's formula: scipy sqrtm of the covariance product."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1 = np.cov(x, rowvar=False, ddof=ddof) + eps * np.eye(x.shape[1])
    s2 = np.cov(y, rowvar=False, ddof=ddof) + eps * np.eye(x.shape[1])
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _reference_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with sklearn's polynomial kernel (degree 3, gamma 1/d, coef0 1)."""
    d, m, n = x.shape[1], x.shape[0], y.shape[0]
    kxx = polynomial_kernel(x, x, degree=3, gamma=1.0 / d, coef0=1)
    kyy = polynomial_kernel(y, y, degree=3, gamma=1.0 / d, coef0=1)
    kxy = polynomial_kernel(x, y, degree=3, gamma=1.0 / d, coef0=1)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()
    )


@pytest.mark.parametrize(("ddof", "eps", "n_fake"), [(1, 0.0, 150), (0, 0.0, 150), (1, 1e-5, 40)])
def test_frechet_matches_scipy_sqrtm(ddof: int, eps: float, n_fake: int) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 24, generator=g, dtype=torch.float64)
    y = torch.randn(n_fake, 24, generator=g, dtype=torch.float64) @ torch.randn(24, 24, generator=g, dtype=torch.float64) * 0.3 + 0.5
    ours = frechet_distance(x, y, ddof=ddof, diag_eps=eps).item()
    assert ours == pytest.approx(_reference_frechet(x.numpy(), y.numpy(), ddof, eps), rel=1e-6, abs=1e-6)


def test_frechet_of_identical_sets_is_zero() -> None:
    x = torch.randn(300, 16, dtype=torch.float64)
    assert abs(frechet_distance(x, x).item()) < 1e-8


def test_frechet_needs_two_samples() -> None:
    with pytest.raises(MetricInputError, match="more than 1 samples"):
        frechet_distance(torch.randn(1, 4), torch.randn(5, 4))


@pytest.mark.parametrize(("m", "n", "d"), [(60, 45, 16), (30, 30, 400)])
def test_kernel_distance_matches_sklearn(m: int, n: int, d: int) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(m, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64) * 1.2 + 0.3
    assert kernel_distance(x, y).item() == pytest.approx(_reference_mmd(x.numpy(), y.numpy()), rel=1e-9, abs=1e-12)


def test_kernel_distance_rejects_mismatched_dims() -> None:
    with pytest.raises(MetricInputError, match=r"\(M, D\) and \(N, D\)"):
        kernel_distance(torch.randn(5, 3), torch.randn(5, 4))
