"""Inception-v3 for FID as pytorch-fid builds it (TF 2015-12-05 graph ported to PyTorch).

Inputs are frames in [0, 1]; pytorch-fid resizes them to 299x299 (bilinear, no antialias)
and maps them to [-1, 1] before the network. Weights come from the registry entry
``inception_fid`` (``pt_inception-2015-12-05-6726825d.pth``), never downloaded implicitly.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch
from torch import Tensor

from common.frozen import FrozenModule, freeze
from metrics.registry import weights_path


class FIDInceptionV3(FrozenModule):
    """Frozen FID Inception-v3 returning 2048-d pool3 features.

    Args:
        weights: path to ``pt_inception-2015-12-05-6726825d.pth``; ``None`` looks it up in the
            registry (``inception_fid``) and raises ``WeightsNotFoundError`` when absent.

    Shapes:
        forward: (N, 3, H, W) float in [0, 1] -> (N, 2048) float32.
    """

    num_features = 2048

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        try:
            from pytorch_fid import inception as pfid
        except ModuleNotFoundError as error:  # pragma: no cover - depends on the environment
            raise ModuleNotFoundError(
                "FIDInceptionV3 needs pytorch-fid: `pip install pytorch-fid==0.3.0`"
            ) from error
        path = Path(weights) if weights is not None else weights_path("inception_fid")
        state = torch.load(path, map_location="cpu", weights_only=True)
        # pytorch-fid fetches its weights by URL inside fid_inception_v3(); hand it our file.
        with mock.patch.object(pfid, "load_state_dict_from_url", lambda *args, **kwargs: state):
            self.net = pfid.InceptionV3(
                [pfid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True
            )
        freeze(self)

    @torch.no_grad()
    def forward(self, frames: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 2048)."""
        return self.net(frames.float())[0].flatten(1)  # (N, 2048)
