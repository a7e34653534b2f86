r"""Unbiased squared MMD with a polynomial kernel (KVD on I3D logits, KID on Inception features).

.. math:: k(x, y) = (\gamma\, x \cdot y + c_0)^{p}, \quad \gamma = 1/D,\ c_0 = 1,\ p = 3

.. math:: \mathrm{MMD}^2_u = \frac{\sum_{i\ne j} k(x_i,x_j)}{m(m-1)} + \frac{\sum_{i\ne j} k(y_i,y_j)}{n(n-1)}
          - \frac{2}{mn}\sum_{i,j} k(x_i, y_j)

This equals the value of StyleGAN-V's KVD on the whole set (no subsets) and sklearn's
``polynomial_kernel(degree=3, gamma=1/D, coef0=1)`` plugged into the unbiased estimator.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metrics.errors import MetricInputError


def _polynomial_kernel(x: Tensor, y: Tensor, degree: int, gamma: float, coef0: float) -> Tensor:
    """(M, D), (N, D) -> (M, N) kernel matrix."""
    return (gamma * (x @ y.T) + coef0) ** degree


def _kernel_distance_compute(
    real: Tensor, fake: Tensor, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> Tensor:
    """Unbiased MMD^2 of (M, D) ``real`` and (N, D) ``fake`` features, in float64."""
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise MetricInputError(
            "kernel_distance", f"features must be (M, D) and (N, D), got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    m, n = real.shape[0], fake.shape[0]
    if m < 2 or n < 2:
        raise MetricInputError("kernel_distance", f"needs at least 2 samples per set, got {m} real and {n} fake")
    x, y = real.to(torch.float64), fake.to(torch.float64)
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    k_xx = _polynomial_kernel(x, x, degree, gamma, coef0)  # (M, M)
    k_yy = _polynomial_kernel(y, y, degree, gamma, coef0)  # (N, N)
    k_xy = _polynomial_kernel(x, y, degree, gamma, coef0)  # (M, N)
    term_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    term_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return term_xx + term_yy - 2.0 * k_xy.mean()


def kernel_distance(
    real_features: Tensor,
    fake_features: Tensor,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
) -> Tensor:
    """Unbiased squared MMD with the polynomial kernel on the whole sets.

    Args:
        real_features: (M, D) features of the reference set, M >= 2.
        fake_features: (N, D) features of the evaluated set, N >= 2.
        degree: kernel degree (3 for KID/KVD).
        gamma: kernel scale; ``None`` means 1/D.
        coef0: kernel offset (1 for KID/KVD).

    Returns:
        float64 scalar tensor (can be slightly negative: the estimator is unbiased).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(50, 8, generator=g), torch.randn(50, 8, generator=g) + 1
        >>> float(kernel_distance(x, y)) > float(kernel_distance(x, torch.randn(50, 8, generator=g)))
        True
    """
    return _kernel_distance_compute(real_features, fake_features, degree, gamma, coef0)
