r"""Frechet distance between two Gaussians fitted to feature sets (FID, FVD, FVMD core).

.. math:: d^2 = \lVert\mu_1-\mu_2\rVert^2 + \operatorname{Tr}\big(\Sigma_1+\Sigma_2-2(\Sigma_1\Sigma_2)^{1/2}\big)

Features are reduced to float64 running sums (sum, sum of outer products, count), so batches
and processes merge by addition. The covariance divisor is ``N - ddof``: ``ddof=1`` is
``numpy.cov`` (pytorch-fid, torchmetrics FID, FVMD, TATS FVD), ``ddof=0`` is 1/N (StyleGAN-V
FVD). ``Tr((S1 S2)^{1/2})`` is the sum of square roots of the eigenvalues of ``S1 @ S2``
(as torch-fidelity/torchmetrics compute it), equal to scipy's ``sqrtm`` formula.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metrics.errors import MetricInputError


def _frechet_update(features: Tensor) -> tuple[Tensor, Tensor, int]:
    """Sufficient statistics of ``features`` (N, D): float64 sum (D,), outer sum (D, D), N."""
    if features.dim() != 2:
        raise MetricInputError("frechet_distance", f"features must be (N, D), got {tuple(features.shape)}")
    feats = features.detach().to(torch.float64)  # (N, D)
    return feats.sum(dim=0), feats.T @ feats, feats.shape[0]


def _mean_cov(feature_sum: Tensor, outer_sum: Tensor, num: Tensor | int, ddof: int = 1) -> tuple[Tensor, Tensor]:
    """Mean (D,) and covariance (D, D) with divisor ``num - ddof`` from running sums."""
    num = int(num)
    if num - ddof <= 0:
        raise MetricInputError(
            "frechet_distance", f"needs more than {ddof} samples per set for a covariance, got {num}"
        )
    mean = feature_sum / num  # (D,)
    cov = (outer_sum - num * torch.outer(mean, mean)) / (num - ddof)  # (D, D)
    return mean, cov


def _frechet_compute(
    mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor, diag_eps: float = 0.0
) -> Tensor:
    """Frechet distance of N(mu1, sigma1) and N(mu2, sigma2); ``diag_eps`` is added to both
    covariance diagonals first (FVMD always adds 1e-5). Returns a float64 scalar."""
    if diag_eps:
        eye = torch.eye(sigma1.shape[0], dtype=sigma1.dtype, device=sigma1.device)
        sigma1, sigma2 = sigma1 + diag_eps * eye, sigma2 + diag_eps * eye
    mean_term = (mu1 - mu2).square().sum()
    # Eigenvalues of S1 S2 are real and >= 0 in exact arithmetic; clip round-off before the root.
    eigenvalues = torch.linalg.eigvals(sigma1 @ sigma2).real.clamp_min(0.0)
    trace_sqrt = eigenvalues.sqrt().sum()
    return mean_term + sigma1.trace() + sigma2.trace() - 2.0 * trace_sqrt


def frechet_distance(
    real_features: Tensor, fake_features: Tensor, ddof: int = 1, diag_eps: float = 0.0
) -> Tensor:
    """Frechet distance between Gaussians fitted to two feature sets.

    Args:
        real_features: (N1, D) features of the reference set.
        fake_features: (N2, D) features of the evaluated set.
        ddof: covariance divisor is ``N - ddof`` (1: numpy.cov; 0: 1/N as StyleGAN-V FVD).
        diag_eps: added to both covariance diagonals (FVMD: 1e-5).

    Returns:
        float64 scalar tensor, >= 0 up to round-off.

    Example:
        >>> import torch
        >>> x = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))
        >>> float(frechet_distance(x, x)) < 1e-8
        True
    """
    mu1, s1 = _mean_cov(*_frechet_update(real_features), ddof=ddof)
    mu2, s2 = _mean_cov(*_frechet_update(fake_features), ddof=ddof)
    return _frechet_compute(mu1, s1, mu2, s2, diag_eps)
