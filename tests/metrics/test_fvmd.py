"""FVMD: histogram and distance stages against a separately written computation on given tracks,
the full pipeline with an injected tracker, and the real PIPs++ when its code and weights exist."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from metrics.errors import MetricInputError
from metrics.features.pips import PipsTracker, grid_points
from metrics.functional.fvmd import (
    _acceleration,
    _fvmd_features,
    _velocity,
    frechet_video_motion_distance,
)
from metrics.fvmd import FrechetVideoMotionDistance
from metrics.registry import available, expected_path
from tests.metrics.tester import (
    TrainModeHead,
    assert_frozen,
    assert_trainable,
    check_metric_contract,
)

# --------------------------------------------------------------------------------------------
# Reference: the official algorithm written out with plain loops (numpy), independent of ours.
# --------------------------------------------------------------------------------------------


def _ref_fields(tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Velocity p[t]-p[t-1] (0 at t=0); "acceleration" from positions (0 at t<2), as the official code."""
    velocity, acceleration = np.zeros_like(tracks), np.zeros_like(tracks)
    for t in range(1, tracks.shape[1]):
        velocity[:, t] = tracks[:, t] - tracks[:, t - 1]
        if t >= 2:
            acceleration[:, t] = tracks[:, t] - tracks[:, t - 1]
    return velocity, acceleration


def _ref_histograms(field: np.ndarray) -> np.ndarray:
    """(W, 16, 400, 2) -> (W, 512): 4-frame x 5x5-point cubes, 8 orientation bins, log2 weights."""
    w_count, s, n, _ = field.shape
    side = round(math.sqrt(n))
    grid = field.reshape(w_count, s, side, side, 2)
    out = np.zeros((w_count, s // 4, side // 5, side // 5, 8))
    for w in range(w_count):
        for t in range(s // 4 * 4):
            for i in range(side // 5 * 5):
                for j in range(side // 5 * 5):
                    x, y = grid[w, t, i, j]
                    angle_bin = min(max(int((math.atan2(x, y) + math.pi) // (math.pi / 4)), 0), 7)
                    magnitude = min(math.hypot(x, y), 255.0)
                    weight = math.ceil(min(math.log2(magnitude + 1), 8)) / 8
                    out[w, t // 4, i // 5, j // 5, angle_bin] += weight
    return out.reshape(w_count, -1)


def _ref_features(tracks: np.ndarray) -> np.ndarray:
    velocity, acceleration = _ref_fields(tracks)
    return np.concatenate([_ref_histograms(velocity), _ref_histograms(acceleration)], axis=1)


def _ref_distance(a: np.ndarray, b: np.ndarray) -> float:
    """numpy.cov (N-1), 1e-5 on both diagonals, scipy sqrtm."""
    s1 = np.cov(a, rowvar=False) + 1e-5 * np.eye(a.shape[1])
    s2 = np.cov(b, rowvar=False) + 1e-5 * np.eye(b.shape[1])
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _tracks(seed: int, windows: int, scale: float = 3.0) -> torch.Tensor:
    """Random walks from the FVMD grid with steps from sub-pixel to > 255 px, some points still."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(windows, 16, 400, 2, generator=g, dtype=torch.float64) * scale
    steps *= torch.rand(windows, 16, 400, 1, generator=g, dtype=torch.float64) ** 4 * 100
    steps[:, :, ::7] = 0.0  # still points: zero vectors must weigh nothing
    return grid_points(400, 256, 256).double() + steps.cumsum(dim=1)


# --------------------------------------------------------------------------------------------


def test_velocity_and_position_based_acceleration() -> None:
    tracks = _tracks(0, 2)
    velocity, acceleration = _ref_fields(tracks.numpy())
    np.testing.assert_allclose(_velocity(tracks).numpy(), velocity)
    np.testing.assert_allclose(_acceleration(tracks).numpy(), acceleration)
    second_difference = _acceleration(tracks, "velocity")
    torch.testing.assert_close(second_difference[:, 2:], _velocity(tracks)[:, 2:] - _velocity(tracks)[:, 1:-1])


def test_histogram_stage_matches_reference() -> None:
    tracks = _tracks(1, 3)
    ours = _fvmd_features(tracks)
    assert ours.shape == (3, 1024)
    np.testing.assert_allclose(ours.numpy(), _ref_features(tracks.numpy()), atol=1e-12)
    assert ours.max() > 4  # the log-magnitude weights really spread over bins


def test_distance_stage_matches_reference() -> None:
    real, fake = _tracks(2, 12), _tracks(3, 10, scale=5.0)
    expected = _ref_distance(_ref_features(real.numpy()), _ref_features(fake.numpy()))
    assert frechet_video_motion_distance(real, fake).item() == pytest.approx(expected, rel=1e-6)


def test_bad_track_shapes_raise() -> None:
    with pytest.raises(MetricInputError, match="square grid"):
        _fvmd_features(torch.zeros(1, 16, 399, 2))


# --------------------------------------------------------------------------------------------
# Full pipeline with an injected tracker.
# --------------------------------------------------------------------------------------------


class _RandomTracker(nn.Module):
    """Stand-in for PIPs++: (W, S, 3, 256, 256) 0-255 -> (W, S, 400, 2) grid + learned offsets."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.head = nn.Linear(3 * 4 * 4, 800)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        w, s = windows.shape[:2]
        pooled = F.adaptive_avg_pool2d(windows.flatten(0, 1) / 255.0, 4).flatten(1)  # (W*S, 48)
        offsets = self.head(pooled).reshape(w, s, 400, 2) * 40.0
        return grid_points(400, windows.shape[-2], windows.shape[-1]) + offsets


def _videos(seed: int, b: int, t: int = 18) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, t, 3, 24, 24, generator=g) * 255).to(torch.uint8)


def _ref_pipeline_features(tracker: nn.Module, videos: torch.Tensor) -> np.ndarray:
    """Windows built one by one (stride 1), each frame resized to 256x256 and scaled to 0-255."""
    feats = []
    for clip in videos.float() / 255.0:
        for start in range(clip.shape[0] - 15):
            frames = torch.stack([F.interpolate(f[None], size=(256, 256), mode="bilinear", antialias=True)[0] for f in clip[start : start + 16]])
            with torch.no_grad():
                tracks = tracker((frames * 255).clamp(0, 255)[None])  # (1, 16, 400, 2)
            feats.append(_ref_features(tracks.double().numpy()))
    return np.concatenate(feats)


def test_pipeline_matches_direct_computation() -> None:
    tracker = _RandomTracker().eval()
    real, fake = _videos(0, b=2, t=19), _videos(1, b=2, t=18)
    metric = FrechetVideoMotionDistance(tracker=tracker, track_batch_size=3)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    assert metric.real_features_num_samples.item() == 8 and metric.fake_features_num_samples.item() == 6
    expected = _ref_distance(_ref_pipeline_features(tracker, real), _ref_pipeline_features(tracker, fake))
    assert metric.compute().item() == pytest.approx(expected, rel=1e-5)


class _DropoutTracker(_RandomTracker):
    """:class:`_RandomTracker` with BatchNorm and dropout on its offsets, as built: train mode."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(self.head, TrainModeHead(800))


def test_injected_tracker_is_frozen_in_eval_mode_even_after_train() -> None:
    tracker = _DropoutTracker()
    assert_trainable(tracker)
    metric = FrechetVideoMotionDistance(tracker=tracker).train()
    assert_frozen(metric.tracker)
    clips = _videos(0, b=1, t=17)  # two windows: one tracker call of two
    metric.update(clips, real=True)
    metric.update(clips, real=False)
    torch.testing.assert_close(metric.real_features_sum, metric.fake_features_sum, rtol=0, atol=0)


def test_torchmetrics_contract() -> None:
    tracker = _RandomTracker().eval()
    batches = [[(_videos(s, b=1, t=17), True), (_videos(10 + s, b=1, t=17), False)] for s in range(4)]
    check_metric_contract(lambda: FrechetVideoMotionDistance(tracker=tracker), batches, atol=1e-6, rtol=1e-6)


def test_short_clip_is_excluded_with_warning() -> None:
    metric = FrechetVideoMotionDistance(tracker=_RandomTracker())
    with pytest.warns(UserWarning, match="clip 0 of the batch excluded: has 12 frames, needs at least 16"):
        metric.update(_videos(0, b=1, t=12), real=True)
    assert metric.num_excluded.item() == 1


def test_missing_pips_code_error_is_explicit() -> None:
    with pytest.raises(ModuleNotFoundError, match=r"no_such_pips_module.*aharley/pips2.*tracker="):
        PipsTracker(module="no_such_pips_module")


def _pips_importable() -> bool:
    try:
        import fvmd.nets.pips2  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(
    not (available("pips2") and _pips_importable()),
    reason=f"weights not found: {expected_path('pips2')} (or the PIPs++ code module fvmd.nets.pips2 is missing)",
)
@pytest.mark.slow
def test_real_pips_tracker_on_cpu() -> None:
    tracker = PipsTracker()
    clip = _videos(0, b=1, t=16)
    metric = FrechetVideoMotionDistance(tracker=tracker)
    metric.update(torch.cat([clip, clip.flip(1)]), real=True)
    assert metric.real_features_num_samples.item() == 2


_FAKE_PIPS = '''
import torch
from torch import nn


class Pips(nn.Module):
    """Mimics the official interface: hard-coded .cuda() and a list of refined trajectories."""

    def __init__(self, stride=8):
        super().__init__()
        self.stride = stride
        self.gain = nn.Parameter(torch.zeros(()))

    def forward(self, trajs_e0, rgbs, iters=3, feat_init=None, beautify=False):
        total_loss = torch.tensor(0.0).cuda()
        shift = self.gain * rgbs.mean(dim=(2, 3, 4))[..., None, None]  # (1, S, 1, 1)
        return [trajs_e0 + shift * (i + 1) / iters for i in range(iters)], None, None, total_loss
'''


def test_pips_tracker_calling_convention_on_cpu(tmp_path, monkeypatch) -> None:
    (tmp_path / "fake_pips_net.py").write_text(_FAKE_PIPS)
    monkeypatch.syspath_prepend(str(tmp_path))
    state = {"model_state_dict": {"gain": torch.tensor(0.01)}}
    torch.save(state, tmp_path / "weights.pth")
    tracker = PipsTracker(weights=tmp_path / "weights.pth", module="fake_pips_net")
    windows = torch.full((2, 16, 3, 256, 256), 100.0)
    tracks = tracker(windows)  # .cuda() inside the network must not fail on CPU
    assert tracks.shape == (2, 16, 400, 2)
    expected = grid_points(400, 256, 256) + 1.0  # last refinement: gain * mean * iters / iters
    torch.testing.assert_close(tracks[0, 0], expected)
    torch.testing.assert_close(tracks[0, 0, :2], torch.tensor([[9.0, 9.0], [9.0 + 240 / 19, 9.0]]))
    tracker.train()
    assert not tracker.training


class _CountingTracker(_RandomTracker):
    """:class:`_RandomTracker` that counts the windows it tracks."""

    def __init__(self) -> None:
        super().__init__()
        self.windows = 0

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        self.windows += windows.shape[0]
        return super().forward(windows)


@pytest.mark.parametrize(("stride", "windows"), [(1, 17), (16, 2)])
def test_window_stride_tracks_every_stride_th_window(stride: int, windows: int) -> None:
    tracker = _CountingTracker().eval()
    metric = FrechetVideoMotionDistance(tracker=tracker, window_stride=stride, track_batch_size=1)
    metric.update(_videos(0, b=1, t=32), real=True)
    assert tracker.windows == windows and metric.real_features_num_samples.item() == windows
    if stride == 16:  # the windows are frames 0-15 and 16-31, each as the stride-1 run tracks it
        every = FrechetVideoMotionDistance(tracker=_CountingTracker().eval(), track_batch_size=1)
        every.update(_videos(0, b=1, t=32)[:, 16:], real=True)
        every.update(_videos(0, b=1, t=32)[:, :16], real=True)
        torch.testing.assert_close(metric.real_features_sum, every.real_features_sum)
