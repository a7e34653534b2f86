"""Speed of every metric of the suite against its reference package on the same inputs.

For each metric: seconds of compute per second of media, ours and the reference's, and the ratio
ours / reference (goal: no metric above 1.0, i.e. slower than its reference). Calls of ours and
of the reference alternate and the median of ``--repeat`` wall times is kept, so that load drifts
of a shared machine hit both. Inputs are the real example clips of ``../shared/data/clips`` when
present (speech as decoded at 16 kHz, frames at 25 fps), else synthetic speech-like signals and
random frames; predictions are the inputs with noise added. References:

* STOI/ESTOI: ``pystoi.stoi`` per clip; PESQ: ``pesq.pesq`` per clip. Ours scores the clips in a
  process pool (one worker per core) started on the warm-up call and kept, like a loaded model;
* PSNR/SSIM: ``skimage.metrics`` per frame; MCD: ``mel_cepstral_distance`` (same DTW idea);
* DNSMOS: ``speechmos.dnsmos.run``; speaker similarity: ``resemblyzer`` directly;
* WER: ``jiwer.wer`` after the same Whisper ``EnglishTextNormalizer`` (like for like); the
  raw-string ``jiwer.wer`` time is printed below the table: normalising is most of our time;
* FID: torchmetrics ``FrechetInceptionDistance`` with the same injected feature network;
* LSE: syncnet_python's per-window loops (``calc_pdist``) on the same random SyncNet.

Reading the ratios: the references are single-threaded (numpy/C), ours uses ``--threads``
torch threads and the pool. On a machine whose cores are busy with other work (the load
average is printed first), a torch op split over 2 threads waits for the slower thread to be
scheduled, and pooled workers compete for the same cores: parallel speed-ups vanish and
threaded torch ops (SSIM's convolutions, FID's network) can even lose to single-threaded
references. ``--threads 1`` then shows the per-core cost of each implementation.

Usage: ``python benchmarks/metrics.py [--threads 2] [--only stoi,pesq] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root

CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "clips"


def load_inputs(max_seconds: float = 4.0) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Clean speech clips (float32, 16 kHz), their transcripts, and 25 fps RGB frames."""
    if (CLIPS / "transcripts.json").is_file():
        import json

        from datamodules.media import read_audio, read_video

        texts = json.loads((CLIPS / "transcripts.json").read_text())
        names = sorted(texts)
        wavs = [read_audio(CLIPS / n)[: int(max_seconds * 16000)] for n in names]
        videos = [read_video(CLIPS / n, end=max_seconds)[:, ::4, ::4] for n in names]  # (T, 128, 128, 3)
        return wavs, videos, [texts[n]["text"] for n in names]
    rng = np.random.default_rng(0)
    t = np.arange(int(max_seconds * 16000)) / 16000
    wavs = [(0.3 * np.sin(2 * np.pi * (120 + 30 * i) * t) * (0.6 + 0.4 * np.sin(6 * np.pi * t))).astype(np.float32) for i in range(5)]
    videos = [rng.integers(0, 256, (int(max_seconds * 25), 128, 128, 3), dtype=np.uint8) for _ in range(5)]
    return wavs, videos, ["hello world this is a test"] * 5


def _noisy(wavs: list[np.ndarray]) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [np.clip(w + 0.01 * rng.standard_normal(w.size), -1, 1).astype(np.float32) for w in wavs]


def timed_pair(ours: Callable[[], object], reference: Callable[[], object], repeat: int = 5) -> tuple[float, float]:
    """Median wall times of ``ours`` and ``reference``, calls alternated so that load drifts hit both."""
    times: list[list[float]] = [[], []]
    for _ in range(repeat):
        for k, fn in enumerate((ours, reference)):
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


# --------------------------------------------------------------------------------------------
# Cases: name -> (seconds of media, ours, reference)
# --------------------------------------------------------------------------------------------

Case = tuple[float, Callable[[], object], Callable[[], object]]

NOTES = {"WER vs raw-string jiwer": "reference does less: no text normalisation"}
"""Why a ratio above 1.0 is expected, for cases whose reference skips part of the work."""


def audio_cases(wavs: list[np.ndarray], texts: list[str]) -> dict[str, Case]:
    """STOI, ESTOI, PESQ, MCD, DNSMOS, speaker similarity and WER on the same clips."""
    from jiwer import wer as jiwer_raw
    from pesq import pesq
    from pystoi import stoi

    from metrics.dnsmos import DNSMOS
    from metrics.intelligibility import ESTOI, STOI
    from metrics.mcd import MelCepstralDistortion
    from metrics.pesq import WidebandPESQ
    from metrics.speaker import SpeakerSimilarity
    from metrics.wer import NormalizedWER

    preds = _noisy(wavs)
    seconds = sum(w.size for w in wavs) / 16000
    as_list = [torch.from_numpy(w) for w in wavs], [torch.from_numpy(p) for p in preds]

    def run(metric_cls, **kwargs):
        def go():
            metric = metric_cls(**kwargs)
            metric.update(as_list[1], as_list[0])
            return metric.compute()
        return go

    def ref_stoi(extended: bool):
        return lambda: [stoi(w.astype(np.float64), p.astype(np.float64), 16000, extended=extended) for w, p in zip(wavs, preds)]

    def ref_dnsmos():
        from speechmos import dnsmos

        return [dnsmos.run(p, 16000) for p in preds]

    def ref_speaker():
        from resemblyzer import VoiceEncoder, preprocess_wav

        encoder = VoiceEncoder("cpu", verbose=False)
        return [float(np.dot(encoder.embed_utterance(preprocess_wav(p, 16000)), encoder.embed_utterance(preprocess_wav(w, 16000))))
                for w, p in zip(wavs, preds)]

    def ours_dnsmos():
        metric = DNSMOS()
        metric.update(as_list[1])
        return metric.compute()

    def ours_wer():
        metric = NormalizedWER()
        metric.update([t.lower() for t in texts], texts)
        return metric.compute()

    def ref_wer():
        import jiwer
        from whisper_normalizer.english import EnglishTextNormalizer

        normalizer = EnglishTextNormalizer()
        return jiwer.wer([normalizer(t) for t in texts], [normalizer(t.lower()) for t in texts])

    return {
        "STOI": (seconds, run(STOI), ref_stoi(False)),
        "ESTOI": (seconds, run(ESTOI), ref_stoi(True)),
        "PESQ (wb)": (seconds, run(WidebandPESQ, num_workers=2), lambda: [pesq(16000, w, p, "wb") for w, p in zip(wavs, preds)]),
        "MCD (dB)": (seconds, run(MelCepstralDistortion), _mcd_reference(wavs, preds)),
        "DNSMOS": (seconds, ours_dnsmos, ref_dnsmos),
        "Speaker sim.": (seconds, run(SpeakerSimilarity), ref_speaker),
        "WER (text only)": (seconds, ours_wer, ref_wer),
        "WER vs raw-string jiwer": (seconds, ours_wer, lambda: jiwer_raw(texts, [t.lower() for t in texts])),
    }


def _mcd_reference(wavs: list[np.ndarray], preds: list[np.ndarray]) -> Callable[[], object]:
    import tempfile

    from mel_cepstral_distance import compare_audio_files
    from scipy.io import wavfile

    folder = Path(tempfile.mkdtemp(prefix="nfy-bench-"))
    paths = []
    for i, (w, p) in enumerate(zip(wavs, preds)):
        a, b = folder / f"{i}a.wav", folder / f"{i}b.wav"
        wavfile.write(a, 16000, w)
        wavfile.write(b, 16000, p)
        paths.append((a, b))
    return lambda: [compare_audio_files(a, b) for a, b in paths]


def video_cases(videos: list[np.ndarray]) -> dict[str, Case]:
    """PSNR, SSIM (per frame, skimage as reference) and FID with one injected feature network."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    from torchmetrics.image.fid import FrechetInceptionDistance

    from metrics.fid import VideoFID
    from metrics.image_quality import VideoPSNR, VideoSSIM

    rng = np.random.default_rng(2)
    preds = [np.clip(v.astype(int) + rng.integers(-8, 9, v.shape), 0, 255).astype(np.uint8) for v in videos]
    seconds = sum(len(v) for v in videos) / 25
    to_t = lambda clips: [torch.from_numpy(c).permute(0, 3, 1, 2)[None] for c in clips]
    gt_t, pred_t = to_t(videos), to_t(preds)

    def ours(metric_cls):
        def go():
            metric = metric_cls()
            for p, g in zip(pred_t, gt_t):
                metric.update(p, g)
            return metric.compute()
        return go

    def ref_psnr():
        return [np.mean([peak_signal_noise_ratio(g, p, data_range=255) for g, p in zip(gv, pv)]) for gv, pv in zip(videos, preds)]

    def ref_ssim():
        return [np.mean([structural_similarity(g, p, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                               use_sample_covariance=False) for g, p in zip(gv, pv)])
                for gv, pv in zip(videos, preds)]

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    def ours_fid():
        metric = VideoFID(feature_extractor=net)
        for p, g in zip(pred_t, gt_t):
            metric.update(g, real=True)
            metric.update(p, real=False)
        return metric.compute()

    def ref_fid():
        metric = FrechetInceptionDistance(feature=net, normalize=True)
        for p, g in zip(pred_t, gt_t):
            metric.update(g[0].float() / 255, real=True)
            metric.update(p[0].float() / 255, real=False)
        return metric.compute()

    return {
        "PSNR": (seconds, ours(VideoPSNR), ref_psnr),
        "SSIM": (seconds, ours(VideoSSIM), ref_ssim),
        "FID (random features)": (seconds, ours_fid, ref_fid),
    }


def lse_case(seconds: float = 3.0) -> dict[str, Case]:
    """LSE on 224x224 crops: ours (batched windows, vectorised offsets) vs the reference loops."""
    import torch.nn.functional as F

    from metrics.functional.lse import _lse_update, syncnet_mfcc
    from metrics.syncnet import SyncNet

    net = SyncNet()
    frames = int(seconds * 25)
    crops = torch.randint(0, 256, (frames, 3, 224, 224), dtype=torch.uint8)
    wav = (torch.rand(frames * 640) - 0.5) * 0.5

    def reference():
        imtv = crops.flip(1).float().permute(1, 0, 2, 3)[None]  # (1, 3, T, 224, 224)
        cct = syncnet_mfcc(wav)[None, None]  # (1, 1, 13, F)
        last = frames - 5
        im, cc = [], []
        for i in range(0, last, 20):
            idx = range(i, min(last, i + 20))
            im.append(net.forward_lip(torch.cat([imtv[:, :, v : v + 5] for v in idx])))
            cc.append(net.forward_aud(torch.cat([cct[:, :, :, v * 4 : v * 4 + 20] for v in idx])))
        im_feat, cc_feat = torch.cat(im), torch.cat(cc)
        padded = F.pad(cc_feat, (0, 0, 15, 15))
        dists = [F.pairwise_distance(im_feat[[i]].repeat(31, 1), padded[i : i + 31]) for i in range(len(im_feat))]
        return torch.stack(dists, 1).mean(1).min()

    return {"LSE (random SyncNet)": (seconds, lambda: _lse_update(net, crops, wav), reference)}


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> list[tuple[str, float, float, float]]:
    """Time every case and print the table; returns ``(name, media s, ours s, reference s)`` rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (both cores by default)")
    parser.add_argument("--only", help="comma-separated case names (case-insensitive prefixes)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of media per clip")
    parser.add_argument("--repeat", type=int, default=5, help="alternated timings per case (median kept)")
    parser.add_argument("--copies", type=int, default=1, help="repeat the clip list (larger batches)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    wavs, videos, texts = (x * args.copies for x in load_inputs(args.seconds))
    builders = {"audio": lambda: audio_cases(wavs, texts), "video": lambda: video_cases(videos), "lse": lse_case}
    cases: dict[str, Case] = {}
    for group, build in builders.items():
        try:
            cases.update(build())
        except (ImportError, OSError) as err:
            print(f"{group} cases unavailable: {err}")
    wanted = [w.strip().lower() for w in args.only.split(",")] if args.only else None
    rows = []
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; torch threads {torch.get_num_threads()}")
    print(f"{'metric':24s} {'media s':>8s} {'ours s':>8s} {'ref s':>8s} {'ours s/s':>9s} {'ref s/s':>8s} {'ours/ref':>9s}")
    for name, (seconds, ours, reference) in cases.items():
        if wanted and not any(name.lower().startswith(w) for w in wanted):
            continue
        ours(), reference()  # warm-up: model loading and caches are not what is measured
        t_ours, t_ref = timed_pair(ours, reference, args.repeat)
        rows.append((name, seconds, t_ours, t_ref))
        flag = "" if t_ours <= t_ref * 1.05 else f"  <- {NOTES.get(name, 'slower than reference')}"
        print(f"{name:24s} {seconds:8.1f} {t_ours:8.3f} {t_ref:8.3f} {t_ours / seconds:9.4f} {t_ref / seconds:8.4f} "
              f"{t_ours / t_ref:9.2f}{flag}")
    return rows


if __name__ == "__main__":
    main()
