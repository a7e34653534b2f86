"""LSE-C / LSE-D metric class (SyncNet lip-sync confidence and distance); per-clip values kept."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from common.frozen import KeepsChildrenFrozen, freeze
from metrics.errors import MetricInputError
from metrics.functional.lse import CROP_SIZE, MIN_FRAMES, VSHIFT, _lse_update

VideoInput = Tensor | Sequence[Tensor]
"""``(B, T, 3, H, W)`` RGB uint8 0-255 or float [0, 1], or a list of ``(T_i, 3, H, W)``."""


class LipSyncError(KeepsChildrenFrozen, Metric):
    """LSE-D (lower is better) and LSE-C (higher is better) of talking-face videos.

    ``update(video, wav)``: ``video`` ``(B, T, 3, H, W)`` RGB at 25 fps, uint8 0-255 or float
    in [0, 1] (or a list of ``(T_i, 3, H, W)``); ``wav`` ``(B, S)`` float in [-1, 1] at
    16 kHz (or a list of ``(S_i,)``). Videos that are not already 224x224 face crops go
    through :func:`metrics.facecrop.crop_faces` first (``face_crop="auto"``).
    ``compute()`` returns ``{"lse_d": mean, "lse_c": mean}`` over scored clips;
    :meth:`per_clip` returns every clip's LSE-D, LSE-C and AV offset. A clip that cannot be
    scored (too short, silent, no face) is counted in ``num_excluded`` and named in a warning.

    Args:
        net: SyncNet; ``None`` loads ``syncnet_v2.model`` from the registry on first update.
        face_crop: ``"auto"`` crops videos whose frames are not 224x224, ``True`` always,
            ``False`` never (inputs must then be 224x224 crops).
        detector: injected face detector for :func:`~metrics.facecrop.crop_faces`; ``None`` uses
            :func:`~metrics.facecrop.default_detector` on the metric's device (``.to(device)``).
        detect_every: detector stride in frames (1 as the reference); the boxes between
            detections are interpolated linearly (a documented deviation when above 1).
        vshift: largest AV offset searched, in frames.
        min_frames: shortest clip scored (the original pipeline drops face tracks under 100).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> import torch
        >>> from metrics.syncnet import SyncNet
        >>> metric = LipSyncError(net=SyncNet())  # random weights: the numbers mean nothing
        >>> metric.update(torch.zeros(1, 8, 3, 224, 224, dtype=torch.uint8), torch.rand(1, 8 * 640) - 0.5)
        >>> sorted(metric.compute())
        ['lse_c', 'lse_d']
    """

    is_differentiable = False
    higher_is_better = False  # for LSE-D; LSE-C is higher-is-better
    full_state_update = False
    plot_lower_bound = 0.0
    frozen_children = ("net",)  # SyncNet, loaded on first use when not given
    plot_upper_bound = 15.0

    def __init__(
        self,
        net: nn.Module | None = None,
        face_crop: bool | Literal["auto"] = "auto",
        detector: Any = None,
        detect_every: int = 1,
        vshift: int = VSHIFT,
        min_frames: int = MIN_FRAMES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if face_crop not in (True, False, "auto"):
            raise ValueError(f"face_crop must be True, False or 'auto', got {face_crop!r}")
        if isinstance(detect_every, bool) or not isinstance(detect_every, int) or detect_every < 1:
            raise ValueError(f"detect_every must be an integer >= 1 (frames between detections), got {detect_every!r}")
        if vshift < 1 or min_frames < MIN_FRAMES:
            raise ValueError(f"need vshift >= 1 and min_frames >= {MIN_FRAMES}, got {vshift}, {min_frames}")
        # a feature network: frozen (BatchNorm on its running statistics), and kept so by train()
        self.net = freeze(net) if net is not None else None
        self.face_crop = face_crop
        self.detector = detector
        self.detect_every = detect_every
        self.vshift = vshift
        self.min_frames = min_frames
        self.detectors_used: set[str] = set()
        for name in ("lse_d", "lse_c", "offset"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.add_state("num_excluded", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _syncnet(self) -> nn.Module:
        if self.net is None:
            from metrics.syncnet import load_syncnet

            self.net = load_syncnet().to(self.device)
        return self.net

    def _crops(self, video: Tensor) -> Tensor:
        """``(T, 3, H, W)`` -> ``(T, 3, 224, 224)`` face crops (cropping when needed), on the metric's device."""
        square = tuple(video.shape[-2:]) == (CROP_SIZE, CROP_SIZE)
        if self.face_crop is False or (self.face_crop == "auto" and square):
            return video
        from metrics.facecrop import (
            crop_video,
            crop_windows,
            default_detector,
            detect_boxes,
        )

        # the default detector runs where the metric was moved (MTCNN and S3FD take a device)
        detector = self.detector if self.detector is not None else default_detector(self.device)
        frames = video if video.dtype == torch.uint8 else (video.clamp(0, 1) * 255).round().to(torch.uint8)
        if frames.ndim != 4 or frames.shape[1] != 3 or len(frames) == 0:
            raise MetricInputError("LSE", f"video must be (T, 3, H, W) with T >= 1, got {tuple(frames.shape)}")
        boxes, _ = detect_boxes(frames.permute(0, 2, 3, 1).cpu().numpy(), detector, self.detect_every)
        self.detectors_used.add(getattr(detector, "name", "custom"))
        # every frame's crop cut and resized in one batch where the metric runs, not frame by frame
        return crop_video(frames.to(self.device), crop_windows(boxes))  # (T, 3, 224, 224)

    def update(self, video: VideoInput, wav: Tensor | Sequence[Tensor]) -> None:
        """Score each clip; see the class docstring for shapes."""
        if len(video) != len(wav):
            raise MetricInputError("LSE", f"got {len(video)} videos but {len(wav)} audio clips")
        for i, (clip, audio) in enumerate(zip(video, wav)):
            try:
                score = _lse_update(self._syncnet(), self._crops(clip), audio, self.vshift, self.min_frames)
            except MetricInputError as err:
                self.num_excluded += 1
                warnings.warn(f"LSE: clip {i} excluded: {err.reason}", stacklevel=2)
                continue
            self.lse_d.append(torch.tensor([score.lse_d], dtype=torch.float64, device=self.device))
            self.lse_c.append(torch.tensor([score.lse_c], dtype=torch.float64, device=self.device))
            self.offset.append(torch.tensor([score.offset], dtype=torch.long, device=self.device))

    def per_clip(self) -> dict[str, Tensor]:
        """``{"lse_d", "lse_c", "offset"}``: ``(N,)`` values of every scored clip, in update order."""
        out = {}
        for name in ("lse_d", "lse_c", "offset"):
            value = getattr(self, name)
            if isinstance(value, list):
                value = dim_zero_cat(value) if value else torch.zeros(0, dtype=torch.float64)
            out[name] = value
        return out

    def compute(self) -> dict[str, Tensor]:
        """Mean LSE-D and LSE-C over scored clips (NaN with a warning when none was scored)."""
        values = self.per_clip()
        if values["lse_d"].numel() == 0:
            warnings.warn(f"LSE: no clip was scored ({int(self.num_excluded)} excluded); returning NaN")
            nan = torch.tensor(float("nan"), dtype=torch.float64)
            return {"lse_d": nan, "lse_c": nan.clone()}
        return {"lse_d": values["lse_d"].mean(), "lse_c": values["lse_c"].mean()}

