"""VideoLPIPS against the ``lpips`` package with the same (random) AlexNet backbone.

The LPIPS linear heads ship in both wheels; the ImageNet AlexNet backbone cannot be downloaded
here, so both sides get the same random backbone. A test with the real backbone runs when its
file is in the weights cache.
"""

from __future__ import annotations

import warnings

import lpips
import numpy as np
import pytest
import torch
import torchvision

from metrics.functional.image_quality import lpips_network, video_lpips
from metrics.image_quality import VideoLPIPS
from metrics.registry import available, expected_path
from tests.metrics._video_pairs import video_pair
from tests.metrics.tester import assert_frozen, check_metric_contract


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory) -> tuple:
    """A random AlexNet in torchvision's file format, and the lpips reference built on it."""
    torch.manual_seed(11)
    alexnet = torchvision.models.alexnet(weights=None)
    path = tmp_path_factory.mktemp("weights") / "alexnet-random.pth"
    torch.save(alexnet.state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    features = alexnet.features
    for name, param in reference.net.named_parameters():  # slice<k>.<i>.weight <- features.<i>.weight
        index, kind = name.split(".")[1:]
        param.data.copy_(getattr(features[int(index)], kind))
    return path, reference.eval()


def _reference_lpips(reference: torch.nn.Module, preds: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """lpips per frame on [-1, 1] inputs, mean over frames per clip."""
    with torch.no_grad():
        d = reference(preds.flatten(0, 1) * 2 - 1, target.flatten(0, 1) * 2 - 1)  # (B*T, 1, 1, 1)
    return d.reshape(preds.shape[:2]).double().mean(1).numpy()


def test_per_clip_lpips_matches_lpips_package(backbone_file) -> None:
    path, reference = backbone_file
    net = lpips_network(backbone_weights=path)
    preds, target = video_pair(0, b=2, t=3, size=64)
    np.testing.assert_allclose(video_lpips(preds, target, net).numpy(), _reference_lpips(reference, preds, target), rtol=1e-5, atol=1e-6)


def test_linear_heads_are_the_shipped_ones(backbone_file) -> None:
    _, reference = backbone_file
    ours = lpips_network(backbone_weights=backbone_file[0])
    for k in range(5):
        torch.testing.assert_close(getattr(ours, f"lin{k}").model[1].weight, getattr(reference, f"lin{k}").model[1].weight)


def test_torchmetrics_contract_and_reference(backbone_file) -> None:
    path, reference = backbone_file
    net = lpips_network(backbone_weights=path)
    batches = [video_pair(s, b=1, t=2, size=48) for s in range(4)]
    expected = np.concatenate([_reference_lpips(reference, *b) for b in batches]).mean()
    check_metric_contract(lambda: VideoLPIPS(net=net), batches, atol=1e-6, rtol=1e-5, expected=expected)


def test_identical_clips_score_zero(backbone_file) -> None:
    net = lpips_network(backbone_weights=backbone_file[0])
    _, target = video_pair(1, b=1, t=2, size=48)
    assert video_lpips(target, target, net).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.skipif(not available("alexnet_lpips"), reason=f"weights not found: {expected_path('alexnet_lpips')}")
def test_real_backbone() -> None:
    metric = VideoLPIPS()
    preds, target = video_pair(2, b=1, t=2, size=64)
    metric.update(preds, target)
    assert 0.0 < metric.compute().item() < 1.0


def test_network_stays_in_eval_mode_when_the_metric_is_put_in_train_mode(backbone_file) -> None:
    net = lpips_network(backbone_weights=backbone_file[0])  # its linear heads hold dropout layers
    metric = VideoLPIPS(net=net)
    torch.nn.Sequential(metric).train()  # as a LightningModule holding the metric does in training
    assert_frozen(metric.net)
    preds, target = video_pair(3, b=1, t=2, size=48)
    metric.update(preds, target)
    expected = video_lpips(preds, target, lpips_network(backbone_weights=backbone_file[0]))
    assert metric.compute().item() == pytest.approx(expected.item(), rel=1e-6)
