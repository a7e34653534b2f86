"""I3D (Kinetics-400) features for FVD/KVD, with the StyleGAN-V preprocessing.

Preprocessing (:func:`preprocess_i3d`): the first ``num_frames`` frames of each clip, every
frame resized straight to 224x224 (bilinear, no crop, no antialias; the same as the
TorchScript model's own trilinear ``resize`` when the frame count is kept), values scaled
from [0, 1] to [-1, 1], laid out as (B, 3, T, 224, 224). Common mistakes this avoids: feeding
0-255 or [0, 1] values, or skipping the resize.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from common.frozen import FrozenModule, freeze
from metrics.registry import weights_path

I3D_SIZE = 224
I3D_FRAMES = 16


def preprocess_i3d(videos: Tensor, num_frames: int = I3D_FRAMES, size: int = I3D_SIZE) -> Tensor:
    """(B, T, 3, H, W) float in [0, 1], T >= num_frames -> (B, 3, num_frames, size, size) in [-1, 1]."""
    clips = videos[:, :num_frames].float()  # (B, T', 3, H, W)
    b, t = clips.shape[:2]
    frames = clips.flatten(0, 1)  # (B*T', 3, H, W)
    frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    frames = frames * 2.0 - 1.0
    return frames.reshape(b, t, 3, size, size).permute(0, 2, 1, 3, 4).contiguous()  # (B, 3, T', S, S)


class I3DFeatureExtractor(FrozenModule):
    """Frozen I3D TorchScript model (StyleGAN-V ``i3d_torchscript.pt``) returning 400-d logits.

    Args:
        weights: path to ``i3d_torchscript.pt``; ``None`` uses the registry entry ``i3d_fvd``
            and raises ``WeightsNotFoundError`` when the file is absent.

    Shapes:
        forward: (B, 3, T, 224, 224) in [-1, 1] (see :func:`preprocess_i3d`) -> (B, 400).
    """

    num_features = 400

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        path = Path(weights) if weights is not None else weights_path("i3d_fvd")
        self.net = torch.jit.load(str(path), map_location="cpu")
        freeze(self)

    @torch.no_grad()
    def forward(self, clips: Tensor) -> Tensor:
        """(B, 3, T, 224, 224) in [-1, 1] -> (B, 400) logits before the softmax."""
        # Preprocessing is done by preprocess_i3d, so the model's own rescale/resize stay off.
        return self.net(clips, rescale=False, resize=False, return_features=True)
