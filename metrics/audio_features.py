"""Shared pieces of the audio metrics: input checks, the per-clip scoring loop, VGGish features.

Every audio metric takes mono float32 audio in [-1, 1] at 16 kHz (DESIGN.md section 2), either
as a ``(B, S)`` tensor or as a list of ``(S_i,)`` tensors when clips differ in length. A clip
that cannot be scored (empty, silent, non-finite, out of range, lengths that differ where the
metric needs them equal, the wrong sample rate) is never scored 0: the functional interface
raises :class:`metrics.errors.MetricInputError` naming the clip, and the metric classes record
it as excluded (state ``num_excluded``) with a warning that names the clip and the reason.

The VGGish part (FAD) uses the ``torchvggish`` package for both the network (the PyTorch port of
the TensorFlow AudioSet model) and its input features (log mel patches of 0.96 s).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from common.frozen import FrozenModule, freeze
from metrics.errors import MetricInputError

log = logging.getLogger(__name__)

AudioInput = Tensor | Sequence[Tensor] | np.ndarray
"""``(B, S)`` tensor, ``(S,)`` tensor (one clip), or a list of ``(S_i,)`` tensors/arrays."""

SILENCE_PEAK = 1e-4
"""Clips whose absolute peak is below this (-80 dBFS) count as silent and are not scored."""

Excluded = list[tuple[int, str]]
"""``(clip index, reason)`` for every clip that was not scored."""


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _to_float64(clip: Tensor) -> np.ndarray:
    """CPU tensor -> float64 array; numpy converts in one pass without waking torch's threads."""
    if clip.dtype == torch.bfloat16:  # no numpy equivalent
        clip = clip.float()
    return clip.numpy().astype(np.float64)


def as_clip_list(audio: AudioInput, metric: str, name: str) -> list[np.ndarray]:
    """Split ``audio`` into one float64 numpy array per clip.

    Args:
        audio: ``(B, S)`` or ``(S,)`` tensor/array, or a sequence of ``(S_i,)`` tensors/arrays.
        metric: metric name for error messages.
        name: argument name for error messages (``"preds"``, ``"target"``).

    Returns:
        ``B`` arrays of shape ``(S_i,)``, float64.

    Raises:
        MetricInputError: ``audio`` is not 1-D, 2-D or a sequence of 1-D signals.
    """
    if isinstance(audio, (Tensor, np.ndarray)):
        if audio.ndim == 1:
            audio = audio[None]
        if audio.ndim != 2:
            raise MetricInputError(
                metric, f"{name} must be (B, S) or (S,) audio, got shape {tuple(audio.shape)}"
            )
        clips = list(audio)
    elif isinstance(audio, Sequence) and not isinstance(audio, str):
        clips = list(audio)
    else:
        raise MetricInputError(metric, f"{name} must be a tensor or a list of tensors, got {type(audio).__name__}")
    out = []
    for i, clip in enumerate(clips):
        arr = _to_float64(clip.detach().cpu()) if isinstance(clip, Tensor) else np.asarray(clip, np.float64)
        if arr.ndim != 1:
            raise MetricInputError(metric, f"{name}[{i}] must be 1-D (S,) audio, got shape {arr.shape}")
        out.append(arr)
    return out


def signal_problem(wav: np.ndarray, name: str, min_samples: int = 1) -> str | None:
    """Why ``wav`` cannot be scored, or ``None`` when it can.

    Args:
        wav: ``(S,)`` float samples, expected in [-1, 1].
        name: ``"preds"`` or ``"target"``, used in the message.
        min_samples: shortest length the metric can score.
    """
    if wav.size < min_samples:
        return f"{name} has {wav.size} samples, need at least {min_samples}"
    if not np.isfinite(wav).all():
        return f"{name} contains {int((~np.isfinite(wav)).sum())} non-finite samples (NaN/inf)"
    peak = float(np.abs(wav).max())
    if peak > 1.0 + 1e-6:
        return f"{name} peaks at {peak:.3g}, expected samples in [-1, 1]"
    if peak < SILENCE_PEAK:
        return f"{name} is silent (peak {peak:.2g} < {SILENCE_PEAK:g})"
    return None


def pair_problem(
    pred: np.ndarray, target: np.ndarray, equal_length: bool, min_samples: int = 1
) -> str | None:
    """Why the pair ``(pred, target)`` cannot be scored, or ``None`` when it can."""
    if equal_length and pred.size != target.size:
        return f"preds has {pred.size} samples but target has {target.size}; the metric needs equal lengths"
    return signal_problem(pred, "preds", min_samples) or signal_problem(target, "target", min_samples)


def check_sample_rate(metric: str, sample_rate: int, allowed: Sequence[int], target_sample_rate: int | None = None) -> None:
    """Raise when ``sample_rate`` is not one the metric supports or preds/target rates differ.

    Raises:
        MetricInputError: with the received and the expected rates.
    """
    if target_sample_rate is not None and target_sample_rate != sample_rate:
        raise MetricInputError(
            metric,
            f"preds are at {sample_rate} Hz but target at {target_sample_rate} Hz; resample both to one rate",
        )
    if allowed and sample_rate not in allowed:
        raise MetricInputError(metric, f"sample_rate={sample_rate} Hz is not supported, expected one of {list(allowed)}")


def paired_clips(metric: str, preds: AudioInput, target: AudioInput) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``preds`` and ``target`` as lists of clips, checking that both hold the same number."""
    pred_clips = as_clip_list(preds, metric, "preds")
    target_clips = as_clip_list(target, metric, "target")
    if len(pred_clips) != len(target_clips):
        raise MetricInputError(metric, f"got {len(pred_clips)} preds clips but {len(target_clips)} target clips")
    return pred_clips, target_clips


def raise_first(metric: str, excluded: Excluded) -> None:
    """Functional interface: raise for the first clip that could not be scored."""
    if excluded:
        index, reason = excluded[0]
        raise MetricInputError(metric, f"clip {index}: {reason}")


def split_valid(
    problems: Sequence[str | None],
) -> tuple[list[int], Excluded]:
    """Indices of the clips without a problem, and ``(index, reason)`` of the others."""
    valid = [i for i, problem in enumerate(problems) if problem is None]
    excluded = [(i, problem) for i, problem in enumerate(problems) if problem is not None]
    return valid, excluded


def score_each(
    indices: Sequence[int], score: Callable[[int], float], metric: str
) -> tuple[list[int], list[float], Excluded]:
    """Call ``score(i)`` for every index; a clip the scorer refuses is excluded, not fatal.

    ``MetricInputError`` and the errors libraries raise on input they cannot handle
    (``ValueError``, ``RuntimeError``, ``ArithmeticError``, ``IndexError``) exclude that clip
    with the error as the reason, so one bad clip does not stop a batch job. Other errors
    (``TypeError``, ``AttributeError``...) are bugs and propagate.

    Returns:
        The indices that were scored, their scores and ``(index, reason)`` of the others.
    """
    kept, values, excluded = [], [], []
    for i in indices:
        try:
            value = float(score(i))
        except MetricInputError as err:
            excluded.append((i, err.reason))
            continue
        except (ValueError, RuntimeError, ArithmeticError, IndexError) as err:
            excluded.append((i, f"{metric} failed: {type(err).__name__}: {err}"))
            continue
        if not math.isfinite(value):
            excluded.append((i, f"{metric} returned {value}"))
            continue
        kept.append(i)
        values.append(value)
    return kept, values, excluded


# --------------------------------------------------------------------------------------------
# Metric base: per-clip scores in a "cat" state, exclusions in a "sum" state
# --------------------------------------------------------------------------------------------


class PerClipAudioMetric(Metric):
    """Base of the per-clip audio metrics: keeps every clip's score and the excluded count.

    States (DDP-safe): ``scores`` (list, ``cat``): per-clip scores, float64 ``(N,)`` or
    ``(N, K)``; ``num_excluded`` (``sum``): clips that could not be scored.
    ``compute()`` is the mean over scored clips; :meth:`per_clip` gives every score.
    """

    is_differentiable = False
    full_state_update = False
    metric_name = "audio metric"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("num_excluded", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _record(self, scores: Tensor, excluded: Excluded, offset: int = 0) -> None:
        """Append ``scores`` and count ``excluded``, warning once per excluded clip."""
        self.scores.append(scores.to(torch.float64))
        self.num_excluded += len(excluded)
        for index, reason in excluded:
            warnings.warn(f"{self.metric_name}: clip {index + offset} excluded: {reason}", stacklevel=3)

    def per_clip(self) -> Tensor:
        """Scores of every scored clip so far, float64 ``(N,)`` (or ``(N, K)``), in update order."""
        if isinstance(self.scores, Tensor):
            return self.scores
        if not self.scores:
            return torch.zeros(0, dtype=torch.float64)
        return dim_zero_cat(self.scores)

    def _mean(self) -> Tensor:
        values = self.per_clip()
        if values.shape[0] == 0:
            warnings.warn(f"{self.metric_name}: no clip was scored ({int(self.num_excluded)} excluded); returning NaN")
            return torch.tensor(float("nan"), dtype=torch.float64)
        return values.mean(0)


# --------------------------------------------------------------------------------------------
# VGGish (FAD)
# --------------------------------------------------------------------------------------------

VGGISH_SAMPLE_RATE = 16_000
VGGISH_PATCH_SECONDS = 0.96
VGGISH_PATCH_SAMPLES = int(VGGISH_PATCH_SECONDS * VGGISH_SAMPLE_RATE)  # 15360
VGGISH_DIM = 128


def vggish_patches(wav: np.ndarray, sample_rate: int = VGGISH_SAMPLE_RATE) -> Tensor:
    """Log-mel patches of VGGish's input for one clip (``torchvggish.waveform_to_examples``).

    25 ms Hann windows every 10 ms, 64 mel bands from 125 to 7500 Hz, ``log(mel + 0.01)``,
    framed into non-overlapping 96-frame (0.96 s) patches; a clip shorter than one patch
    gives none.

    Args:
        wav: ``(S,)`` float samples in [-1, 1] at ``sample_rate``.
        sample_rate: Hz; other rates than 16 kHz are resampled (resampy) as VGGish does.

    Returns:
        float32 ``(P, 1, 96, 64)``, ``P = floor((S / sr - 0.015) / 0.96)`` patches.
    """
    from torchvggish import vggish_input

    examples = vggish_input.waveform_to_examples(np.asarray(wav, np.float64), sample_rate, return_tensor=False)
    return torch.from_numpy(np.asarray(examples, np.float32))[:, None]  # (P, 1, 96, 64)


class VGGishEmbedder(FrozenModule):
    """VGGish without its final ReLU and without PCA/quantisation: 128-d per 0.96 s patch.

    This is what the usual PyTorch FAD tools compute (the final ReLU is dropped so embeddings
    keep their sign, and the AudioSet PCA + 8-bit quantisation is not applied). The network is
    ``torchvggish``'s; weights come from the registry entry ``vggish`` (torchvggish's
    ``vggish-10086976.pth``) or are left random for tests.

    Args:
        weights: path to a torchvggish state dict, ``"registry"`` for ``weights_path("vggish")``,
            or ``None`` for random init (tests only).
    """

    def __init__(self, weights: str | None = "registry") -> None:
        super().__init__()
        from torchvggish import torchvggish

        net = torchvggish.VGG(torchvggish.make_layers(), postprocess=False)
        if weights is not None:
            net.load_state_dict(torch.load(_vggish_file(weights), map_location="cpu", weights_only=True))
        # drop the last ReLU: the FAD tools take the 128-d pre-activation embedding
        net.embeddings = nn.Sequential(*list(net.embeddings.children())[:-1])
        self.net = net
        freeze(self)

    @torch.no_grad()
    def forward(self, patches: Tensor) -> Tensor:
        """Embed log-mel patches: ``(P, 1, 96, 64)`` float32 -> ``(P, 128)`` float32."""
        return self.net(patches)


def _vggish_file(weights: str) -> str:
    if weights != "registry":
        return weights
    from metrics.registry import weights_path

    return str(weights_path("vggish"))
