"""Frechet Audio Distance on VGGish embeddings (Kilgour et al., Interspeech 2019).

Every clip is cut into non-overlapping 0.96 s log-mel patches (16 kHz, 25 ms windows every
10 ms, 64 mels from 125 to 7500 Hz, ``log(mel + 0.01)``: ``torchvggish``'s input code), each
patch is embedded by VGGish into 128-d, and **all patches of a set are pooled into one
Gaussian** (so long clips weigh more, as in the reference tools). As the common PyTorch FAD
tools do, the embedding is taken **before the final ReLU** and **without the AudioSet PCA /
quantisation** (the registry's ``vggish_pca`` is not used). The Frechet distance of the two
Gaussians uses the ``numpy.cov`` covariance (divisor N - 1), see
:mod:`metrics.functional.frechet`. FAD depends on the number of patches: compare at equal N.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from common.frozen import freeze
from metrics.audio_features import (
    VGGISH_PATCH_SAMPLES,
    AudioInput,
    Excluded,
    VGGishEmbedder,
    as_clip_list,
    raise_first,
    signal_problem,
    split_valid,
    vggish_patches,
)
from metrics.errors import MetricInputError
from metrics.functional.frechet import _frechet_compute, _frechet_update, _mean_cov

METRIC = "FAD"


def _fad_features(
    audio: AudioInput,
    extractor: nn.Module,
    sample_rate: int = 16_000,
    batch_size: int = 64,
) -> tuple[Tensor, Excluded]:
    """VGGish embeddings of every 0.96 s patch of every usable clip.

    Args:
        audio: ``(B, S)`` float in [-1, 1] or a list of ``(S_i,)``.
        extractor: maps ``(P, 1, 96, 64)`` log-mel patches to ``(P, D)``.
        sample_rate: Hz of ``audio`` (resampled to 16 kHz by the VGGish input code).
        batch_size: patches per forward pass.

    Returns:
        float64 ``(sum P_i, D)`` embeddings, and ``(index, reason)`` of the excluded clips
        (shorter than one patch, silent, non-finite or out of range).
    """
    clips = as_clip_list(audio, METRIC, "audio")
    min_samples = int(np.ceil(VGGISH_PATCH_SAMPLES * sample_rate / 16_000)) + 400  # + one 25 ms window
    valid, excluded = split_valid([signal_problem(c, "audio", min_samples) for c in clips])
    per_clip = [vggish_patches(clips[i], sample_rate) for i in valid]  # each (P_i, 1, 96, 64)
    patches = torch.cat(per_clip) if per_clip else torch.zeros(0, 1, 96, 64)  # (P, 1, 96, 64)
    # the log-mel patches are made on the CPU; the network may have been moved elsewhere
    weight = next(extractor.parameters(), None)
    patches = patches.to(weight.device) if weight is not None else patches
    parts = [extractor(patches[start : start + batch_size]) for start in range(0, patches.shape[0], batch_size)]
    features = torch.cat(parts).to(torch.float64) if parts else torch.zeros(0, 0, dtype=torch.float64)
    return features, excluded


def _fad_update(
    audio: AudioInput, extractor: nn.Module, sample_rate: int = 16_000, batch_size: int = 64
) -> tuple[tuple[Tensor, Tensor, int], Excluded]:
    """Running sums ``(sum (D,), outer sum (D, D), N)`` of the patch embeddings of ``audio``."""
    features, excluded = _fad_features(audio, extractor, sample_rate, batch_size)
    return _frechet_update(features), excluded


def _fad_compute(real: tuple[Tensor, Tensor, Tensor | int], fake: tuple[Tensor, Tensor, Tensor | int]) -> Tensor:
    """Frechet distance of the Gaussians of two sets of running sums (covariance divisor N - 1).

    Raises:
        MetricInputError: a set has fewer than 2 patches (no covariance).
    """
    for name, (_, _, num) in (("real", real), ("generated", fake)):
        if int(num) < 2:
            raise MetricInputError(METRIC, f"the {name} set has {int(num)} VGGish patches, need at least 2 (clips >= 0.985 s)")
    mu_r, cov_r = _mean_cov(*real, ddof=1)
    mu_f, cov_f = _mean_cov(*fake, ddof=1)
    return _frechet_compute(mu_r, cov_r, mu_f, cov_f)


def frechet_audio_distance(
    preds: AudioInput,
    target: AudioInput,
    feature_extractor: nn.Module | None = None,
    sample_rate: int = 16_000,
) -> Tensor:
    """FAD between generated audio ``preds`` and real audio ``target``.

    Args:
        preds: ``(B, S)`` float in [-1, 1] or a list of ``(S_i,)``, each at least 0.985 s.
        target: the reference set, same format (its own number of clips).
        feature_extractor: ``(P, 1, 96, 64)`` -> ``(P, D)``; VGGish with the registry's
            ``vggish`` weights by default. It is frozen (eval mode, no gradients).
        sample_rate: Hz of both sets.

    Returns:
        float64 scalar >= 0; lower is better.

    Raises:
        MetricInputError: a clip shorter than one patch, silent or broken (names it), or a
            set with fewer than 2 patches.
        WeightsNotFoundError: the default VGGish weights are not in the cache.
    """
    extractor = feature_extractor if feature_extractor is not None else VGGishEmbedder()
    freeze(extractor)  # a feature network: no dropout, BatchNorm on running statistics
    fake, fake_excluded = _fad_update(preds, extractor, sample_rate)
    raise_first(METRIC, [(i, f"preds: {reason}") for i, reason in fake_excluded])
    real, real_excluded = _fad_update(target, extractor, sample_rate)
    raise_first(METRIC, [(i, f"target: {reason}") for i, reason in real_excluded])
    return _fad_compute(real, fake)
