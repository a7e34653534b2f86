"""PIPs++ point tracker for FVMD, run as the official FVMD code runs it.

A 20x20 grid of points (8 pixels in from the borders) is tracked through each 16-frame window
of 256x256 frames with values 0-255, 16 refinement iterations, zero-velocity initialisation.

No PyPI package ships the PIPs++ network in an importable form for us: the ``fvmd`` wheel
contains it (``fvmd.nets.pips2``) but its package ``__init__`` imports the whole evaluation
tool chain (loguru, tensorboardX, fire, opencv, moviepy...) with pinned old versions. So the
network code is loaded **only from a module the user provides**:

- ``pip install --no-deps fvmd==1.0.0`` plus the packages its ``__init__`` imports, then the
  default ``module="fvmd.nets.pips2"`` works; or
- a checkout of https://github.com/aharley/pips2 on ``PYTHONPATH`` with ``module="nets.pips2"``.

Weights: registry entry ``pips2`` (``pips2_weights.pth`` of the FVMD release) or ``weights``.
The official network code hard-codes ``.cuda()`` in its forward; on CPU that call is made a
no-op for the duration of the forward, so tracking runs on CPU too.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import torch
from torch import Tensor

from common.frozen import FrozenModule, freeze
from metrics.registry import weights_path

PIPS_POINTS = 400
PIPS_ITERS = 16
PIPS_SIZE = 256


def grid_points(num_points: int, height: int, width: int, margin: float = 8.0) -> Tensor:
    """(N, 2) float32 (x, y) of a sqrt(N) x sqrt(N) grid, ``margin`` pixels in, row-major."""
    side = round(num_points**0.5)
    if side * side != num_points or side < 2:
        raise ValueError(f"num_points must be a square >= 4, got {num_points}")
    steps = torch.arange(side, dtype=torch.float32) / (side - 1)
    ys = margin + steps * (height - 2 * margin)
    xs = margin + steps * (width - 2 * margin)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # (side, side)
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)  # (N, 2)


@contextlib.contextmanager
def _cuda_calls_stay_put(device: torch.device) -> Iterator[None]:
    """Make ``Tensor.cuda()`` a no-op while the official code runs on a non-CUDA device."""
    if device.type == "cuda":
        yield
        return
    with mock.patch.object(torch.Tensor, "cuda", lambda self, *args, **kwargs: self):
        yield


def _import_pips(module: str) -> type:
    try:
        return importlib.import_module(module).Pips
    except (ImportError, AttributeError) as error:
        raise ModuleNotFoundError(
            f"FVMD needs the PIPs++ network code, which no installable package provides cleanly; "
            f"could not import class Pips from module {module!r} ({error}). Either "
            f"`pip install --no-deps fvmd==1.0.0` plus the packages its __init__ imports "
            f"(loguru, tensorboardX, fire, opencv-python, moviepy, prettytable, einops) and keep "
            f"module='fvmd.nets.pips2', or put a checkout of https://github.com/aharley/pips2 on "
            f"PYTHONPATH and pass module='nets.pips2'. Or pass your own tracker to "
            f"FrechetVideoMotionDistance(tracker=...)."
        ) from error


class PipsTracker(FrozenModule):
    """Frozen PIPs++ tracking a grid of points through windows of frames.

    Args:
        weights: path to ``pips2_weights.pth``; ``None`` uses the registry entry ``pips2``.
        module: importable module defining ``Pips`` (see the module docstring).
        num_points: grid points per window (400 = 20x20 as FVMD).
        iters: refinement iterations (16 as FVMD).

    Shapes:
        forward: (W, S, 3, H, W_) float 0-255 -> (W, S, num_points, 2) float32 (x, y) pixels.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        module: str = "fvmd.nets.pips2",
        num_points: int = PIPS_POINTS,
        iters: int = PIPS_ITERS,
    ) -> None:
        super().__init__()
        pips_class = _import_pips(module)
        path = Path(weights) if weights is not None else weights_path("pips2")
        self.net = pips_class(stride=8)
        state = torch.load(path, map_location="cpu", weights_only=False)  # pickled by the FVMD release
        self.net.load_state_dict(state.get("model_state_dict", state))
        self.num_points, self.iters = num_points, iters
        freeze(self)

    @torch.no_grad()
    def forward(self, windows: Tensor) -> Tensor:
        """(W, S, 3, H, W_) float 0-255 -> (W, S, N, 2) tracks, one window at a time as FVMD does."""
        w, s, _, height, width = windows.shape
        start = grid_points(self.num_points, height, width).to(windows.device)  # (N, 2)
        tracks = []
        with _cuda_calls_stay_put(windows.device):
            for index in range(w):
                trajs0 = start[None, None].repeat(1, s, 1, 1)  # (1, S, N, 2) zero-velocity init
                preds = self.net(trajs0, windows[index : index + 1].float(), iters=self.iters, feat_init=None, beautify=True)[0]
                tracks.append(preds[-1])  # (1, S, N, 2)
        return torch.cat(tracks)
