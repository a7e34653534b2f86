"""Base class of the Frechet-distance metrics (FVD, FVMD, FAD), after torchmetrics' FID.

As ``torchmetrics.image.fid.FrechetInceptionDistance``, one class declares the states once:
for each of the real and the generated set a float64 feature sum, a sum of outer products and
a sample count (``dist_reduce_fx="sum"``, so memory is constant and DDP merges by addition),
plus ``num_excluded``. It keeps the injected feature network frozen, adds per-batch
statistics, and keeps the real set across :meth:`reset` when ``reset_real_features=False``.
A subclass turns its inputs into features (``update``) and says how the two Gaussians are
compared (:meth:`_distance`: the covariance divisor, a diagonal offset, checks).
"""

from __future__ import annotations

from copy import deepcopy

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from common.frozen import KeepsChildrenFrozen, freeze
from metrics.functional.frechet import _frechet_update

Stats = tuple[Tensor, Tensor, Tensor]
"""Running sums of one set: feature sum (D,), outer-product sum (D, D), sample count."""


class FrechetDistance(KeepsChildrenFrozen, Metric):
    """Frechet distance between Gaussians fitted to features of a real and a generated set.

    Args:
        feature_extractor: the feature network; frozen here (eval mode, no gradients) and kept
            so by ``train()``.
        feature_dim: ``D``, the size of one feature vector.
        reset_real_features: if False, ``reset()`` keeps the real-set statistics.
        kwargs: torchmetrics ``Metric`` options.
    """

    real_features_sum: Tensor
    real_features_cov_sum: Tensor
    real_features_num_samples: Tensor
    fake_features_sum: Tensor
    fake_features_cov_sum: Tensor
    fake_features_num_samples: Tensor
    num_excluded: Tensor

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0
    frozen_children = ("feature_extractor",)

    def __init__(self, feature_extractor: nn.Module, feature_dim: int, reset_real_features: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.feature_extractor = freeze(feature_extractor)
        self.reset_real_features = reset_real_features
        for side in ("real", "fake"):
            self.add_state(f"{side}_features_sum", torch.zeros(feature_dim, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(
                f"{side}_features_cov_sum", torch.zeros(feature_dim, feature_dim, dtype=torch.float64), dist_reduce_fx="sum"
            )
            self.add_state(f"{side}_features_num_samples", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_excluded", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add_features(self, features: Tensor, real: bool) -> None:
        """Add (N, D) features to the real or the generated set."""
        self._add_stats(_frechet_update(features), real)

    def _add_stats(self, stats: tuple[Tensor, Tensor, int | Tensor], real: bool) -> None:
        """Add running sums (feature sum, outer-product sum, count) to the real or the generated set."""
        total, outer, num = stats
        side = "real" if real else "fake"
        setattr(self, f"{side}_features_sum", getattr(self, f"{side}_features_sum") + total)
        setattr(self, f"{side}_features_cov_sum", getattr(self, f"{side}_features_cov_sum") + outer)
        setattr(self, f"{side}_features_num_samples", getattr(self, f"{side}_features_num_samples") + num)

    def _distance(self, real: Stats, fake: Stats) -> Tensor:
        """The distance from both sets' running sums (subclasses say how)."""
        raise NotImplementedError

    def compute(self) -> Tensor:
        """The distance as a float64 scalar."""
        real = (self.real_features_sum, self.real_features_cov_sum, self.real_features_num_samples)
        fake = (self.fake_features_sum, self.fake_features_cov_sum, self.fake_features_num_samples)
        return self._distance(real, fake)

    def reset(self) -> None:
        """Reset the states; the real-set statistics survive when ``reset_real_features=False``."""
        keep = {n: deepcopy(getattr(self, n)) for n in self._defaults if n.startswith("real_")}
        super().reset()
        if not self.reset_real_features:
            for name, value in keep.items():
                setattr(self, name, value)
