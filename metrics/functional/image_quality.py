"""Per-clip PSNR, SSIM and LPIPS of videos against their ground truth.

As talking-face papers report them: the metric is computed **per frame**, averaged over the
frames of a clip, then (in the metric classes) averaged over clips. torchmetrics' own PSNR
with ``dim=None`` would pool the MSE over everything instead.

Conventions: frames are converted to float in [0, 1], so ``data_range`` is 1.0 for PSNR and
SSIM (it is always passed, never inferred per call). SSIM uses an 11x11 gaussian window,
sigma 1.5, k1 0.01, k2 0.03, averaged over the frame minus a 5-pixel border (torchmetrics'
SSIM map, cropped: equal to skimage with ``gaussian_weights=True, sigma=1.5,
use_sample_covariance=False``). LPIPS is v0.1 with inputs mapped to [-1, 1].
A frame identical to its target has PSNR ``inf``; its clip's mean is then ``inf`` too.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from metrics.errors import MetricInputError
from metrics.functional.video import check_video, chunks, clip_problem, to_unit_float

_SSIM_BORDER = 5  # (11 - 1) // 2


def _check_pair(preds: Tensor, target: Tensor, metric: str) -> None:
    """Both (B, T, 3, H, W) with equal shapes, else :class:`MetricInputError`."""
    check_video(preds, metric, "preds")
    check_video(target, metric, "target")
    if preds.shape != target.shape:
        raise MetricInputError(
            metric, f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must have the same shape"
        )


def _pair_problem(pred: Tensor, target: Tensor) -> str | None:
    """Why one (T, 3, H, W) pair cannot be scored, or ``None``."""
    for name, clip in (("preds", pred), ("target", target)):
        problem = clip_problem(clip)
        if problem is not None:
            return f"{name} {problem}"
    return None


def _per_frame(preds: Tensor, target: Tensor, frame_fn, batch_size: int) -> Tensor:
    """Apply ``frame_fn`` ((N, 3, H, W) x2 -> (N,)) to all frames; returns (B,) clip means."""
    b, t = preds.shape[:2]
    p, g = preds.flatten(0, 1), target.flatten(0, 1)  # (B*T, 3, H, W)
    scores = [frame_fn(to_unit_float(p[s]), to_unit_float(g[s])) for s in chunks(b * t, batch_size)]
    return torch.cat(scores).to(torch.float64).reshape(b, t).mean(dim=1)  # (B,)


def _psnr_frames(p: Tensor, g: Tensor) -> Tensor:
    return peak_signal_noise_ratio(p, g, data_range=1.0, reduction="none", dim=(1, 2, 3))


def _ssim_frames(p: Tensor, g: Tensor) -> Tensor:
    _, ssim_map = structural_similarity_index_measure(
        p, g, gaussian_kernel=True, sigma=1.5, kernel_size=11, k1=0.01, k2=0.03, data_range=1.0,
        reduction="none", return_full_image=True,
    )  # (N, 3, H, W)
    # Average over the region the 11x11 window covers without padding, as skimage and the
    # original MATLAB code do; torchmetrics' own mean includes reflect-padded borders (~1e-3 off).
    return ssim_map[..., _SSIM_BORDER:-_SSIM_BORDER, _SSIM_BORDER:-_SSIM_BORDER].mean(dim=(1, 2, 3))  # (N,)


def video_psnr(preds: Tensor, target: Tensor, batch_size: int = 256) -> Tensor:
    """Per-clip PSNR in dB: mean over frames of per-frame PSNR.

    Args:
        preds: (B, T, 3, H, W) uint8 0-255 or float in [0, 1].
        target: same shape and convention as ``preds``.
        batch_size: frames per call of the per-frame function.

    Returns:
        (B,) float64 (``inf`` where every frame equals its target).

    Example:
        >>> import torch
        >>> x = torch.full((1, 2, 3, 8, 8), 0.5)
        >>> video_psnr(x + 0.1, x).round(decimals=2)
        tensor([20.], dtype=torch.float64)
    """
    _check_pair(preds, target, "VideoPSNR")
    return _per_frame(preds, target, _psnr_frames, batch_size)


def video_ssim(preds: Tensor, target: Tensor, batch_size: int = 256) -> Tensor:
    """Per-clip SSIM: mean over frames of per-frame SSIM (gaussian 11x11, sigma 1.5).

    Args:
        preds: (B, T, 3, H, W) uint8 0-255 or float in [0, 1]; H, W >= 11.
        target: same shape and convention as ``preds``.
        batch_size: frames per call of the per-frame function.

    Returns:
        (B,) float64 in [-1, 1].
    """
    _check_pair(preds, target, "VideoSSIM")
    if min(preds.shape[-2:]) < 11:
        raise MetricInputError("VideoSSIM", f"frames must be at least 11x11 for the SSIM window, got {tuple(preds.shape[-2:])}")
    return _per_frame(preds, target, _ssim_frames, batch_size)


def video_lpips(preds: Tensor, target: Tensor, net: nn.Module, batch_size: int = 32) -> Tensor:
    """Per-clip LPIPS: mean over frames of per-frame LPIPS.

    Args:
        preds: (B, T, 3, H, W) uint8 0-255 or float in [0, 1].
        target: same shape and convention as ``preds``.
        net: LPIPS network taking two (N, 3, H, W) batches in [-1, 1] and returning (N, 1, 1, 1)
            (torchmetrics' ``_LPIPS`` or the ``lpips`` package's ``LPIPS``); see :func:`lpips_network`.
        batch_size: frames per forward pass.

    Returns:
        (B,) float64, >= 0 (lower is more similar).
    """
    _check_pair(preds, target, "VideoLPIPS")

    @torch.no_grad()
    def frame_fn(p: Tensor, g: Tensor) -> Tensor:
        return net(p * 2.0 - 1.0, g * 2.0 - 1.0).reshape(-1)  # (N,)

    return _per_frame(preds, target, frame_fn, batch_size)


def lpips_network(net_type: str = "alex", backbone_weights: str | Path | None = None) -> nn.Module:
    """LPIPS v0.1 with its shipped linear heads and a backbone from the weights registry.

    The linear heads come with torchmetrics; the ImageNet backbone comes from torchvision's
    file (registry entry ``alexnet_lpips``, or ``backbone_weights``), never downloaded here.

    Args:
        net_type: only ``"alex"`` (the LPIPS default) is wired to the registry.
        backbone_weights: path to torchvision's ``alexnet-owt-7be5be79.pth``; ``None`` uses
            the registry and raises ``WeightsNotFoundError`` when absent.

    Returns:
        frozen module mapping two (N, 3, H, W) batches in [-1, 1] to (N, 1, 1, 1).
    """
    from torchmetrics.functional.image.lpips import _LPIPS

    from metrics.registry import weights_path

    if net_type != "alex":
        raise ValueError(f"net_type must be 'alex' (the LPIPS default), got {net_type!r}")
    path = Path(backbone_weights) if backbone_weights is not None else weights_path("alexnet_lpips")
    net = _LPIPS(pretrained=True, net="alex", pnet_rand=True)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for name, param in net.net.named_parameters():  # "slice1.0.weight" <- "features.0.weight"
        param.data.copy_(state["features." + name.split(".", 1)[1]])
    return net.eval().requires_grad_(False)
