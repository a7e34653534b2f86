"""FAD: Frechet stage equal to scipy; feature pipeline equal to torchvggish's input code + the
same random VGGish (final ReLU dropped) as the PyTorch FAD tools use; real weights when cached."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

pytest.importorskip("torchvggish", reason="FAD needs torchvggish (pip install torchvggish==0.2)")
from torchvggish import torchvggish, vggish_input, vggish_params

from metrics.audio_features import VGGishEmbedder, vggish_patches
from metrics.errors import MetricInputError
from metrics.fad import FrechetAudioDistance
from metrics.functional.fad import _fad_compute, frechet_audio_distance
from metrics.functional.frechet import _frechet_update
from metrics.registry import available, expected_path
from tests.metrics.tester import (
    TrainModeHead,
    assert_frozen,
    assert_trainable,
    check_metric_contract,
)


def _scipy_frechet(x: np.ndarray, y: np.ndarray) -> float:
    """The FAD reference formula (Kilgour et al.; google-research and gudgud96 code): scipy sqrtm."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.fixture(scope="module")
def random_vggish() -> VGGishEmbedder:
    torch.manual_seed(0)
    return VGGishEmbedder(weights=None)


def _audio(batch: int, seconds: float, seed: int, level: float = 0.2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16_000)) / 16_000
    tone = torch.sin(2 * torch.pi * (200 + 400 * torch.rand(batch, 1, generator=gen)) * t)  # (B, S)
    return (level * tone + 0.05 * torch.randn(batch, t.numel(), generator=gen)).clamp(-1, 1)


def test_frechet_stage_equals_scipy() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(300, 16, generator=gen, dtype=torch.float64)
    y = 0.8 * torch.randn(250, 16, generator=gen, dtype=torch.float64) + 0.3
    ours = _fad_compute(_frechet_update(x), _frechet_update(y))
    assert float(ours) == pytest.approx(_scipy_frechet(x.numpy(), y.numpy()), rel=1e-8)


def test_vggish_input_settings() -> None:
    # the settings the FAD definition fixes, as torchvggish's input code applies them
    assert (vggish_params.SAMPLE_RATE, vggish_params.NUM_MEL_BINS) == (16_000, 64)
    assert (vggish_params.MEL_MIN_HZ, vggish_params.MEL_MAX_HZ, vggish_params.LOG_OFFSET) == (125, 7500, 0.01)
    assert vggish_params.EXAMPLE_WINDOW_SECONDS == vggish_params.EXAMPLE_HOP_SECONDS == 0.96
    assert vggish_patches(np.zeros(3 * 16_000)).shape == (3, 1, 96, 64)  # 3 s -> 3 patches


def test_pipeline_equals_reference_with_injected_random_vggish(random_vggish: VGGishEmbedder) -> None:
    fake, real = _audio(2, 2.5, seed=2), _audio(3, 2.0, seed=3, level=0.5)
    ours = frechet_audio_distance(fake, real, feature_extractor=random_vggish)

    # reference: torchvggish VGG with the same weights, final ReLU dropped (as the PyTorch FAD
    # tools do), fed torchvggish's own examples per clip, all patches pooled per set
    reference_net = torchvggish.VGG(torchvggish.make_layers(), postprocess=False)
    reference_net.embeddings = torch.nn.Sequential(*list(reference_net.embeddings.children())[:-1])
    reference_net.load_state_dict(random_vggish.net.state_dict())
    reference_net.eval()

    def embed(clips: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([reference_net(vggish_input.waveform_to_examples(c.double().numpy(), 16_000)).numpy() for c in clips])

    x, y = embed(real), embed(fake)
    assert x.shape == (6, 128) and y.shape == (4, 128)  # 2 patches per 2-2.5 s clip
    assert (x < 0).any()  # no final ReLU
    assert float(ours) == pytest.approx(_scipy_frechet(x.astype(np.float64), y.astype(np.float64)), rel=1e-4, abs=1e-9)
    assert float(ours) > 0


def test_metric_contract(random_vggish: VGGishEmbedder) -> None:
    batches = [[(_audio(2, 2.0, seed=10 + s), True), (_audio(2, 2.0, seed=20 + s, level=0.6), False)] for s in range(2)]
    check_metric_contract(lambda: FrechetAudioDistance(feature_extractor=random_vggish), batches, atol=1e-9, rtol=1e-5)


def test_reset_real_features_and_frozen_extractor(random_vggish: VGGishEmbedder) -> None:
    metric = FrechetAudioDistance(feature_extractor=random_vggish, reset_real_features=False).train()
    assert not metric.feature_extractor.training
    metric.update(_audio(2, 2.0, seed=30), real=True)
    metric.reset()
    assert int(metric.real_features_num_samples) == 4


def test_bad_clips_are_excluded(random_vggish: VGGishEmbedder) -> None:
    metric = FrechetAudioDistance(feature_extractor=random_vggish)
    clips = [_audio(1, 2.0, seed=40)[0], torch.zeros(32_000), _audio(1, 0.5, seed=41)[0]]
    with pytest.warns(UserWarning) as record:
        metric.update(clips, real=True)
    messages = " ".join(str(w.message) for w in record)
    assert "clip 1 excluded: audio is silent" in messages
    assert "clip 2 excluded: audio has 8000 samples, need at least 15760" in messages
    assert int(metric.num_excluded) == 2 and int(metric.real_features_num_samples) == 2
    with pytest.raises(MetricInputError, match="generated set has 0 VGGish patches"):
        metric.compute()


@pytest.mark.skipif(not available("vggish"), reason=f"VGGish weights not cached: {expected_path('vggish')}")
def test_real_vggish_weights() -> None:
    net = VGGishEmbedder()
    same = frechet_audio_distance(_audio(3, 3.0, seed=50), _audio(3, 3.0, seed=50), feature_extractor=net)
    other = frechet_audio_distance(_audio(3, 3.0, seed=51, level=0.9), _audio(3, 3.0, seed=50), feature_extractor=net)
    assert abs(float(same)) < 1e-6 and float(other) > float(same)


def _trainable_patch_embedder() -> torch.nn.Module:
    """(P, 1, 96, 64) log-mel patches -> (P, 8), built as a user would: train mode, gradients on."""
    torch.manual_seed(5)
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(16, 8), TrainModeHead(8))


def test_injected_extractor_is_frozen_in_eval_mode_even_after_train() -> None:
    net = _trainable_patch_embedder()
    assert_trainable(net)
    metric = FrechetAudioDistance(feature_extractor=net, feature_dim=8)
    torch.nn.Sequential(metric).train()  # as a LightningModule holding the metric does in training
    assert_frozen(metric.feature_extractor)
    clips = _audio(2, 3.0, seed=60)
    metric.update(clips, real=True)
    metric.update(clips, real=False)
    torch.testing.assert_close(metric.real_features_sum, metric.fake_features_sum, rtol=0, atol=0)


def test_functional_freezes_the_injected_extractor() -> None:
    net = _trainable_patch_embedder()
    clips = _audio(2, 3.0, seed=61)
    # the same clips on both sides: 0 only if dropout is off and BatchNorm uses its running statistics
    assert frechet_audio_distance(clips, clips, feature_extractor=net).item() == pytest.approx(0.0, abs=1e-6)
    assert_frozen(net)
