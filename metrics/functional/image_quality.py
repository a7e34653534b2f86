"""Per-clip PSNR, SSIM and LPIPS of videos against their ground truth.

As talking-face papers report them: the metric is computed **per frame**, averaged over the
frames of a clip, then (in the metric classes) averaged over clips. torchmetrics' own PSNR
with ``dim=None`` would pool the MSE over everything instead.

Conventions: the data range is 255 for ``uint8`` frames and 1.0 for float frames in [0, 1]
(always fixed, never inferred per call). PSNR's per-frame squared error is summed in float64,
exactly for ``uint8`` (equal to skimage's ``peak_signal_noise_ratio`` per frame). SSIM uses an
11x11 gaussian window, sigma 1.5, k1 0.01, k2 0.03, averaged over the frame minus a 5-pixel
border, i.e. over the positions where the window fits without padding: equal to skimage with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False`` and to torchmetrics' SSIM
map cropped by 5 pixels. LPIPS is v0.1 with inputs mapped to [-1, 1].
A frame identical to its target has PSNR ``inf``; its clip's mean is then ``inf`` too, unless
``max_db`` caps each frame first (:data:`PSNR_CAP_DB`, 100 dB, as libvpx's ``MAX_PSNR`` and x264
do; :class:`~metrics.image_quality.VideoPSNR` averages the capped values).

Speed: the gaussian window is separable, so SSIM filters the five local moments with an
11-tap row then an 11-tap column (depthwise convolutions, valid region only) instead of
torchmetrics' reflect-padded 11x11 window (22 instead of 121 multiply-adds per pixel and
moment). PSNR reads each frame once in cache-sized chunks; on CPU the arithmetic runs in
numpy, whose single-threaded loops beat torch's intra-op threads on such small
memory-bound reductions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.frozen import freeze
from metrics.errors import MetricInputError
from metrics.functional.video import check_video, chunks, clip_problem, to_unit_float

_SSIM_BORDER = 5  # (11 - 1) // 2
PSNR_CAP_DB = 100.0
"""Per-frame PSNR cap of the aggregate (libvpx ``MAX_PSNR``, x264): an identical frame counts 100 dB."""


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


_SSIM_SIGMA, _SSIM_K1, _SSIM_K2 = 1.5, 0.01, 0.03
_CHUNK_ELEMENTS = 1 << 18
"""Values per PSNR chunk: two uint8 frame blocks and their float64 difference stay in cache."""
_SSIM_CHUNK_PIXELS = 1 << 20
"""Frame pixels (frames x H x W) per SSIM batch."""


def _flat_frames(video: Tensor) -> Tensor:
    """(B, T, C, H, W) -> (B*T, C*H*W), a view whenever each frame is one dense block.

    The order of a frame's values does not matter for a sum over the frame, so the frame
    dimensions are first put in memory order (channels-last arrays decoded as (T, H, W, 3)
    and permuted to (T, 3, H, W) are then read without a copy).
    """
    frames = video.reshape(-1, *video.shape[2:])  # (B*T, C, H, W)
    order = sorted(range(1, 4), key=lambda d: -frames.stride(d))
    return frames.permute(0, *order).reshape(frames.shape[0], -1)


def _frame_mse(preds: Tensor, target: Tensor) -> Tensor:
    """Mean squared difference per frame of (B, T, C, H, W) pairs, float64 (B*T,), input units."""
    p, g = _flat_frames(preds.detach()), _flat_frames(target.detach())
    n, size = p.shape
    step = max(1, _CHUNK_ELEMENTS // size)
    if p.device.type == "cpu" and p.dtype in (torch.uint8, torch.float32, torch.float64):
        a, b = p.numpy(), g.numpy()
        sse = np.empty(n, dtype=np.float64)
        for s in chunks(n, step):
            diff = np.subtract(a[s], b[s], dtype=np.float64)  # exact for uint8
            sse[s] = np.einsum("ij,ij->i", diff, diff)
        return torch.from_numpy(sse) / size
    sse = [(p[s].double() - g[s].double()).square().sum(dim=1) for s in chunks(n, step)]
    return torch.cat(sse).cpu() / size


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> Tensor:
    """(11,) gaussian taps, sigma 1.5, summing to 1 (as skimage's and torchmetrics' windows)."""
    x = torch.arange(-_SSIM_BORDER, _SSIM_BORDER + 1, dtype=torch.float64)
    window = torch.exp(-0.5 * (x / _SSIM_SIGMA) ** 2)
    return (window / window.sum()).to(dtype=dtype, device=device)


def _ssim_frames(p: Tensor, g: Tensor) -> Tensor:
    """Mean SSIM of each (N, C, H, W) frame pair in [0, 1] over the unpadded region: (N,)."""
    c = p.shape[1]
    moments = torch.cat((p, g, p * p, g * g, p * g), dim=1).contiguous(memory_format=torch.channels_last)
    window = _gaussian_window(p.dtype, p.device)
    groups = 5 * c
    blurred = F.conv2d(moments, window.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
    blurred = F.conv2d(blurred, window.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
    mu_p, mu_g, pp, gg, pg = blurred.unflatten(1, (5, c)).unbind(dim=1)  # (N, C, H-10, W-10)
    mu_pp, mu_gg, mu_pg = mu_p * mu_p, mu_g * mu_g, mu_p * mu_g
    # No clamp at zero (skimage has none): in flat regions E[x^2] - E[x]^2 rounds to about
    # -3e-7 in float32, and clamping the variances but not the covariance made a frame
    # compared with itself score 0.99999 instead of 1. Unclamped, the numerator and the
    # denominator of an identical pair are the same floats; the rounding error stays far
    # below c2 = 9e-4, so the denominator cannot reach zero.
    var_p, var_g = pp - mu_pp, gg - mu_gg
    c1, c2 = _SSIM_K1**2, _SSIM_K2**2  # data range 1
    ssim_map = ((2 * mu_pg + c1) * (2 * (pg - mu_pg) + c2)) / ((mu_pp + mu_gg + c1) * (var_p + var_g + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def frame_psnr(preds: Tensor, target: Tensor) -> Tensor:
    """Per-frame PSNR in dB of (B, T, 3, H, W) pairs: (B, T) float64, ``inf`` for identical frames."""
    _check_pair(preds, target, "VideoPSNR")
    data_range = 255.0 if preds.dtype == torch.uint8 else 1.0
    psnr = 10.0 * torch.log10(data_range**2 / _frame_mse(preds, target))  # (B*T,)
    return psnr.reshape(preds.shape[:2])


def video_psnr(preds: Tensor, target: Tensor, max_db: float | None = None) -> Tensor:
    """Per-clip PSNR in dB: mean over frames of per-frame PSNR.

    Args:
        preds: (B, T, 3, H, W) uint8 0-255 or float in [0, 1].
        target: same shape and convention as ``preds``.
        max_db: cap on each frame's PSNR before the mean (e.g. :data:`PSNR_CAP_DB`);
            ``None``: no cap, as skimage.

    Returns:
        (B,) float64 (without a cap, ``inf`` where any frame equals its target).

    Example:
        >>> import torch
        >>> x = torch.full((1, 2, 3, 8, 8), 0.5)
        >>> video_psnr(x + 0.1, x).round(decimals=2)
        tensor([20.], dtype=torch.float64)
    """
    psnr = frame_psnr(preds, target)  # (B, T)
    if max_db is not None:
        psnr = psnr.clamp(max=max_db)
    return psnr.mean(dim=1)


def video_ssim(preds: Tensor, target: Tensor, batch_size: int | None = None) -> Tensor:
    """Per-clip SSIM: mean over frames of per-frame SSIM (gaussian 11x11, sigma 1.5).

    Args:
        preds: (B, T, 3, H, W) uint8 0-255 or float in [0, 1]; H, W >= 11.
        target: same shape and convention as ``preds``.
        batch_size: frames filtered together; ``None``: about 2**20 pixels per batch (64
            frames of 128x128). Fewer, larger batches mean fewer waits for torch's threads on
            a busy machine, at a small cost in cache use.

    Returns:
        (B,) float64 in [-1, 1].
    """
    _check_pair(preds, target, "VideoSSIM")
    if min(preds.shape[-2:]) < 11:
        raise MetricInputError("VideoSSIM", f"frames must be at least 11x11 for the SSIM window, got {tuple(preds.shape[-2:])}")
    if batch_size is None:
        batch_size = max(1, _SSIM_CHUNK_PIXELS // (preds.shape[-2] * preds.shape[-1]))
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
    return freeze(net)
