"""SyncNet v2 (Chung & Zisserman, "Out of time", ACCV 2016 workshops), the network behind LSE.

Layer names and shapes follow ``SyncNetModel.S`` of joonson/syncnet_python, so the published
``syncnet_v2.model`` (a plain state dict; the reference loads it with ``weights_only=True``)
loads straight into :class:`SyncNet` with ``load_state_dict``.

* audio stream ``netcnnaud`` + ``netfcaud``: ``(N, 1, 13, 20)`` MFCCs (0.2 s) -> ``(N, 1024)``;
* lip stream ``netcnnlip`` + ``netfclip``: ``(N, 3, 5, 224, 224)`` BGR 0-255 crops (5 frames,
  0.2 s) -> ``(N, 1024)``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from common.frozen import FrozenModule, freeze

EMBED_DIM = 1024


def _conv2d_block(c_in: int, c_out: int, **conv) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, **conv), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _conv3d_block(c_in: int, c_out: int, **conv) -> list[nn.Module]:
    return [nn.Conv3d(c_in, c_out, **conv), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)]


def _head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))


def _audio_cnn() -> nn.Sequential:
    # indices match the reference Sequential (pooling layers keep their slots)
    return nn.Sequential(
        *_conv2d_block(1, 64, kernel_size=3, stride=1, padding=1),
        nn.MaxPool2d(kernel_size=1, stride=1),
        *_conv2d_block(64, 192, kernel_size=3, stride=1, padding=1),
        nn.MaxPool2d(kernel_size=3, stride=(1, 2)),
        *_conv2d_block(192, 384, kernel_size=3, padding=1),
        *_conv2d_block(384, 256, kernel_size=3, padding=1),
        *_conv2d_block(256, 256, kernel_size=3, padding=1),
        nn.MaxPool2d(kernel_size=3, stride=2),
        *_conv2d_block(256, 512, kernel_size=(5, 4), padding=0),
    )


def _lip_cnn() -> nn.Sequential:
    return nn.Sequential(
        *_conv3d_block(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
        *_conv3d_block(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        *_conv3d_block(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        *_conv3d_block(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        *_conv3d_block(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
        *_conv3d_block(256, 512, kernel_size=(1, 6, 6), padding=0),
    )


class SyncNet(FrozenModule):
    """SyncNet v2 with the reference's module names; frozen in eval mode.

    Args:
        embed_dim: output size of both streams (1024 in ``syncnet_v2.model``).
    """

    def __init__(self, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        self.netcnnaud = _audio_cnn()
        self.netfcaud = _head(embed_dim)
        self.netcnnlip = _lip_cnn()
        self.netfclip = _head(embed_dim)
        freeze(self)  # BatchNorm on its running statistics, as the reference runs it

    @torch.no_grad()
    def forward_aud(self, mfcc: Tensor) -> Tensor:
        """Audio embeddings: ``(N, 1, 13, 20)`` float32 MFCC windows -> ``(N, D)``."""
        mid = self.netcnnaud(mfcc)  # (N, 512, 1, 1)
        return self.netfcaud(mid.flatten(1))  # (N, D)

    @torch.no_grad()
    def forward_lip(self, frames: Tensor) -> Tensor:
        """Lip embeddings: ``(N, 3, 5, 224, 224)`` float32 BGR 0-255 windows -> ``(N, D)``."""
        mid = self.netcnnlip(frames)  # (N, 512, 1, 1, 1)
        return self.netfclip(mid.flatten(1))  # (N, D)


def load_syncnet(path: str | Path | None = None) -> SyncNet:
    """SyncNet with the published weights.

    Args:
        path: a ``syncnet_v2.model`` state dict; ``None`` takes the registry entry ``syncnet``.

    Raises:
        metrics.registry.WeightsNotFoundError: ``path`` is ``None`` and the file is not cached.
        FileNotFoundError: ``path`` does not exist.
        RuntimeError: the file's tensors do not match the network (names or shapes).
    """
    if path is None:
        from metrics.registry import weights_path

        path = weights_path("syncnet")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SyncNet weights {path} not found (expected syncnet_v2.model)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = SyncNet()
    # the 2017 file predates BatchNorm's ``num_batches_tracked``: only those may be missing
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatch
        raise RuntimeError(f"{path} does not hold SyncNet v2 weights: {err}") from err
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"{path} does not hold SyncNet v2 weights: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return net
