"""LSE-C/LSE-D against syncnet_python's computation (offset search, MFCCs, windows, network)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import python_speech_features
import torch
import torch.nn.functional as F
from scipy.io import wavfile

from metrics.errors import MetricInputError
from metrics.functional.lse import (
    _lse_compute,
    _lse_update,
    lip_sync_error,
    offset_distances,
    syncnet_embeddings,
    syncnet_mfcc,
    to_bgr255,
    usable_frames,
)
from metrics.lse import LipSyncError
from metrics.registry import available, expected_path
from metrics.syncnet import SyncNet, load_syncnet
from tests.metrics.tester import assert_frozen, assert_trainable, check_metric_contract


def _reference_calc_pdist(feat1: torch.Tensor, feat2: torch.Tensor, vshift: int) -> list[torch.Tensor]:
    """syncnet_python's ``calc_pdist``: a loop over video windows, one distance row each."""
    win_size = vshift * 2 + 1
    feat2p = F.pad(feat2, (0, 0, vshift, vshift))
    return [F.pairwise_distance(feat1[[i], :].repeat(win_size, 1), feat2p[i : i + win_size, :]) for i in range(len(feat1))]


def _reference_scores(im_feat: torch.Tensor, cc_feat: torch.Tensor, vshift: int) -> tuple[float, float, int]:
    """syncnet_python's ``evaluate`` tail: mean over frames, min, median - min, offset."""
    dists = _reference_calc_pdist(im_feat, cc_feat, vshift)
    mdist = torch.mean(torch.stack(dists, 1), 1)
    minval, minidx = torch.min(mdist, 0)
    return float(minval), float(torch.median(mdist) - minval), int(vshift - minidx)


def _reference_embeddings(net: SyncNet, bgr: np.ndarray, pcm: np.ndarray, batch_size: int = 20):
    """syncnet_python's window loop on (T, H, W, 3) BGR frames and int16 samples (from a wav file)."""
    buf = io.BytesIO()
    wavfile.write(buf, 16000, pcm)
    sample_rate, audio = wavfile.read(io.BytesIO(buf.getvalue()))
    mfcc = np.stack([np.array(i) for i in zip(*python_speech_features.mfcc(audio, sample_rate))])
    cct = torch.from_numpy(mfcc[None, None].astype(float)).float()
    imtv = torch.from_numpy(np.transpose(bgr[None], (0, 4, 1, 2, 3)).astype(float)).float()
    lastframe = min(len(bgr), len(audio) // 640) - 5
    im_feat, cc_feat = [], []
    for i in range(0, lastframe, batch_size):
        frames = range(i, min(lastframe, i + batch_size))
        im_feat.append(net.forward_lip(torch.cat([imtv[:, :, v : v + 5] for v in frames], 0)))
        cc_feat.append(net.forward_aud(torch.cat([cct[:, :, :, v * 4 : v * 4 + 20] for v in frames], 0)))
    return torch.cat(im_feat), torch.cat(cc_feat)


@pytest.mark.parametrize(("n", "vshift"), [(30, 15), (7, 15), (50, 5)])
def test_offset_search_equals_reference_loop(n: int, vshift: int) -> None:
    video, audio = torch.randn(n, 64), torch.randn(n, 64)
    audio[3:] = video[:-3] + 0.1 * torch.randn(n - 3, 64)  # audio lags video by 3 frames
    ours = offset_distances(video, audio, vshift)
    ref = torch.stack(_reference_calc_pdist(video, audio, vshift))
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)
    assert _lse_compute(ours, vshift) == pytest.approx(_reference_scores(video, audio, vshift), abs=1e-5)
    if n > 2 * 3 + 4:
        assert _lse_compute(ours, vshift).offset == -3 or vshift < 3


def test_mfcc_equals_reference_on_int16_wav() -> None:
    wav = (0.3 * torch.sin(torch.arange(16000) * 0.07) + 0.05 * torch.randn(16000)).clamp(-1, 1)
    pcm = np.clip(np.round(wav.double().numpy() * 32768), -32768, 32767).astype(np.int16)
    expected = python_speech_features.mfcc(pcm, 16000).T
    ours = syncnet_mfcc(wav)
    assert ours.shape == (13, 99)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-4)


def test_pipeline_equals_reference_with_random_network() -> None:
    torch.manual_seed(1)
    net = SyncNet()
    for module in net.modules():  # random BN statistics so that every layer matters
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    frames = torch.randint(0, 256, (12, 3, 224, 224), dtype=torch.uint8)
    wav = (torch.rand(12 * 640 + 100) - 0.5) * 0.8
    ours = _lse_update(net, frames, wav, vshift=15, batch_size=4)
    pcm = np.clip(np.round(wav.double().numpy() * 32768), -32768, 32767).astype(np.int16)
    bgr = frames.permute(0, 2, 3, 1).numpy()[..., ::-1]  # what cv2.imread of the frames gives
    im_feat, cc_feat = _reference_embeddings(net, bgr, pcm, batch_size=4)
    assert im_feat.shape == (7, 1024)
    assert (ours.lse_d, ours.lse_c, ours.offset) == pytest.approx(_reference_scores(im_feat, cc_feat, 15), abs=1e-4)


def test_embeddings_window_count_and_order() -> None:
    net = SyncNet()
    crops = to_bgr255(torch.randint(0, 256, (9, 3, 224, 224), dtype=torch.uint8))
    mfcc = torch.randn(13, 40)
    video, audio = syncnet_embeddings(net, crops, mfcc, length=9, batch_size=3)
    assert video.shape == audio.shape == (4, 1024)
    torch.testing.assert_close(video[2], net.forward_lip(crops[2:7].permute(1, 0, 2, 3)[None])[0])
    torch.testing.assert_close(audio[3], net.forward_aud(mfcc[None, None, :, 12:32])[0])


def test_bgr_conversion_and_float_input() -> None:
    rgb = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    rgb[:, 0] = 200  # red
    assert to_bgr255(rgb)[0, :, 0, 0].tolist() == [0.0, 0.0, 200.0]
    torch.testing.assert_close(to_bgr255(rgb.float() / 255), to_bgr255(rgb))
    with pytest.raises(MetricInputError, match=r"\[0, 1\]"):
        to_bgr255(rgb.float())


def test_short_silent_and_uncropped_clips_are_refused() -> None:
    net = SyncNet()
    crops = torch.zeros(5, 3, 224, 224, dtype=torch.uint8)
    with pytest.raises(MetricInputError, match="too short.*5 usable frames"):
        _lse_update(net, crops, torch.rand(5 * 640) - 0.5)
    with pytest.raises(MetricInputError, match="silent"):
        _lse_update(net, torch.zeros(8, 3, 224, 224, dtype=torch.uint8), torch.zeros(8 * 640))
    with pytest.raises(MetricInputError, match="224, 224"):
        _lse_update(net, torch.zeros(8, 3, 64, 64, dtype=torch.uint8), torch.rand(8 * 640) - 0.5)
    assert usable_frames(100, 20 * 640) == 20


def test_metric_excludes_short_clip_and_keeps_per_clip_values() -> None:
    net = SyncNet()
    videos = [torch.randint(0, 256, (8, 3, 224, 224), dtype=torch.uint8), torch.zeros(3, 3, 224, 224, dtype=torch.uint8)]
    wavs = [torch.rand(8 * 640) - 0.5, torch.rand(3 * 640) - 0.5]
    metric = LipSyncError(net=net)
    with pytest.warns(UserWarning, match="clip 1 excluded: clip too short"):
        metric.update(videos, wavs)
    assert int(metric.num_excluded) == 1
    per_clip = metric.per_clip()
    direct = lip_sync_error(videos[:1], wavs[:1], net)
    torch.testing.assert_close(per_clip["lse_d"], direct.lse_d)
    torch.testing.assert_close(metric.compute()["lse_c"], direct.lse_c[0])


def test_metric_contract() -> None:
    net = SyncNet()
    gen = torch.Generator().manual_seed(3)
    batches = [
        (torch.randint(0, 256, (2, 7, 3, 224, 224), dtype=torch.uint8, generator=gen), torch.rand(2, 7 * 640, generator=gen) - 0.5)
        for _ in range(2)
    ]
    check_metric_contract(lambda: LipSyncError(net=net), batches, atol=1e-5)


def test_random_network_end_to_end_on_real_clip(shared_data) -> None:
    from datamodules.media import read_audio, read_video
    from metrics.facecrop import mtcnn_detector

    path = shared_data / "clips" / "kid_1.mp4"
    frames = torch.from_numpy(read_video(path)[:30]).permute(0, 3, 1, 2)  # (30, 3, 512, 512) uint8
    wav = torch.from_numpy(read_audio(path)[: 30 * 640])
    metric = LipSyncError(net=SyncNet(), detector=mtcnn_detector(), detect_every=10)
    metric.update(frames[None], wav[None])
    scores = metric.per_clip()
    assert metric.detectors_used == {"mtcnn"}
    assert scores["lse_d"].shape == (1,) and torch.isfinite(scores["lse_d"]).all()
    assert -15 <= int(scores["offset"][0]) <= 15 and float(scores["lse_c"][0]) >= 0


@pytest.mark.slow
@pytest.mark.skipif(not available("syncnet"), reason=f"SyncNet weights {expected_path('syncnet')} (syncnet_v2.model) absent")
def test_real_weights_on_real_clip(shared_data) -> None:
    from datamodules.media import read_audio, read_video

    path = shared_data / "clips" / "man.mp4"
    frames = torch.from_numpy(read_video(path)).permute(0, 3, 1, 2)
    wav = torch.from_numpy(read_audio(path))
    metric = LipSyncError(net=load_syncnet())
    metric.update(frames[None], wav[None])
    scores = metric.compute()
    # plausibility on a lip-synced clip (the paper's Table 5 ranges 2.5-5.7 / 8.4-10.3): the
    # exact reference check is test_real_weights_reproduce_the_reference_demo
    assert abs(int(metric.per_clip()["offset"][0])) <= 3
    assert float(scores["lse_c"]) > 1.0 and float(scores["lse_d"]) < 12.0


def test_load_syncnet_reads_a_state_dict_without_batch_counters(tmp_path) -> None:
    torch.manual_seed(2)
    source = SyncNet()
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}  # as the 2017 file
    torch.save(state, tmp_path / "syncnet_v2.model")
    loaded = load_syncnet(tmp_path / "syncnet_v2.model")
    mfcc = torch.randn(2, 1, 13, 20)
    torch.testing.assert_close(loaded.forward_aud(mfcc), source.forward_aud(mfcc))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.model")
    with pytest.raises(RuntimeError, match="bad.model does not hold SyncNet v2 weights"):
        load_syncnet(tmp_path / "bad.model")
    with pytest.raises(FileNotFoundError, match="missing.model"):
        load_syncnet(tmp_path / "missing.model")


_DEMO = expected_path("syncnet").parent / "example.avi"


@pytest.mark.slow
@pytest.mark.skipif(not (available("syncnet") and _DEMO.is_file()),
                    reason=f"SyncNet weights {expected_path('syncnet')} or syncnet_python's demo video {_DEMO} absent")
def test_real_weights_reproduce_the_reference_demo() -> None:
    """syncnet_python's demo_syncnet.py on data/example.avi prints offset 3, distance 5.353, confidence 10.021."""
    from datamodules.media import read_audio, read_video

    frames = torch.from_numpy(read_video(_DEMO)).permute(0, 3, 1, 2)  # already 224x224 face crops
    score = _lse_update(load_syncnet(), frames, torch.from_numpy(read_audio(_DEMO)))
    assert score.offset == 3
    assert score.lse_d == pytest.approx(5.353, abs=0.05) and score.lse_c == pytest.approx(10.021, abs=0.1)


def test_injected_network_is_frozen_in_eval_mode_even_after_train() -> None:
    net = SyncNet().requires_grad_(True)
    torch.nn.Module.train(net, True)  # past SyncNet's own eval lock, as any other network would be
    assert_trainable(net)
    metric = LipSyncError(net=net)
    torch.nn.Sequential(metric).train()  # as a LightningModule holding the metric does in training
    assert_frozen(metric.net)


@pytest.mark.parametrize("detect_every", [0, -5, 2.5, True])
def test_bad_detect_every_is_refused_when_built(detect_every) -> None:
    with pytest.raises(ValueError, match=f"detect_every must be an integer >= 1.*got {detect_every!r}"):
        LipSyncError(net=SyncNet(), detect_every=detect_every)
