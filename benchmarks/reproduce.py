"""Throughput of ``python -m experiments.reproduce``: measured here on the tiny config, estimated for the paper's.

1. Measured: a demo corpus at 64 px, a tiny checkpoint (``ete.yaml`` + ``tiny.yaml``, two
   training steps, speech capped at ``--max-mel-frames``: an untrained stop head never fires,
   so every sentence would run to tiny.yaml's 6 s), then the command on ``--clips`` test clips
   (every metric of the suite whose weights are here, or ``--metrics``) with ``--batch-size`` 4;
   clips per minute of generation for each of ``--batch-sizes`` (the same clips, generated again
   into an empty folder per batch size) and of scoring, printed as a table. Timings mean
   something only on a quiet machine (load average below 1, see ``uptime``); the load is printed.
   ``--skip-measure`` leaves this part out (no training).
2. Estimated: the paper's protocol, 800 clips x 20 s at 512 px, on one H100 (989 TFLOP/s dense
   BF16) at 40 % utilisation. FLOPs are counted with ``torch.utils.flop_counter`` on the meta
   device (nothing is computed or allocated).

   * Generation: the video denoiser's step on one window (ete.yaml's network with random
     stand-ins shaped like its pretrained parts, :data:`benchmarks.model.PAPER_SHAPED`), 25 DDIM
     steps per 16-frame window, and the VAE decoding of a window. Not counted: the speech decoder
     (GPT-2 small over 1,250 mel frames per clip, about 1e-4 of the video part) and the encoders
     (once per clip).
   * Evaluation, the whole metric suite (:mod:`benchmarks.evaluation_cost`), as
     ``experiments.evaluate --device cuda --workers 16`` runs it, in two settings: ``reference``
     (FVMD at stride 1, PocketSphinx: the published protocol) and ``fast`` (FVMD at stride 16,
     Whisper base.en on the GPU). A table with every network of every metric (Inception, I3D for
     FVD and again for KVD, PIPs++ over the 16-frame windows of FVMD, LPIPS' AlexNet, VGGish,
     SyncNet, the speaker encoder, Whisper) and the other GPU work (PSNR/SSIM by the bytes they
     move, MTCNN from its published throughput, the frames' copy), its FLOPs per unit and H100
     seconds per setting, or why it is not counted; then every CPU part (decoding, STOI, ESTOI,
     PESQ, MCD, DNSMOS, PocketSphinx, the LSE face detection and crops...) timed on one core on the
     example clips (about a minute), and where each runs: in the ``--workers`` processes or in the
     main process; then each setting's total (the main process and the workers overlap) against
     the goal of 15 minutes, met or not.

Usage: ``python benchmarks/reproduce.py [--clips 4] [--batch-sizes 1,4] [--max-mel-frames 125] [--metrics psnr,...]
[--skip-measure] [--workers 16]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.evaluation_cost import (
    MTCNN_PUBLISHED_SOURCE,
    SETTINGS,
    EvaluationEstimate,
    Gpu,
    Media,
    Protocol,
    count_flops,
    count_network_flops,
    estimate_setting,
    format_estimates,
    gpu_unit_seconds,
    load_media,
    time_cpu_work,
)
from benchmarks.model import PAPER, PAPER_DATA, PAPER_SHAPED

H100_BF16_FLOPS = 989e12
"""Dense BF16 tensor-core peak of one H100 SXM (NVIDIA's datasheet; 1,979 TFLOP/s with sparsity)."""
H100_TF32_FLOPS = 494.7e12
"""Dense TF32 tensor-core peak of one H100 SXM (989 TFLOP/s with sparsity): the metric networks run
in fp32, whose convolutions PyTorch puts on TF32 tensor cores by default (cudnn.allow_tf32)."""
UTILISATION = 0.40
PROTOCOL_CLIPS, PROTOCOL_SECONDS, FPS = 800, 20.0, 25
STEPS, WINDOW = 25, 16  # ete.yaml's num_inference_steps and num_frames
EVALUATION_GOAL_S = 15 * 60.0


def count_generation_flops() -> dict[str, float]:
    """FLOPs of one denoising step on one window and of decoding one window, paper-size, on meta."""
    from experiments.fit import build_network

    with torch.device("meta"):
        net = build_network(*PAPER, **PAPER_DATA, **PAPER_SHAPED)
        latent = PAPER_DATA["image_size"] // net.appearance_encoder.downsample
        sample = torch.randn(1, net.video_denoiser.unet.conv_in.in_channels, WINDOW, latent, latent)
        tokens = torch.randn(WINDOW, 20, net.video_denoiser.cross_dim)
        latents = torch.randn(WINDOW, 4, latent, latent)
        step = torch.tensor([500])
    return {
        "denoiser_step_window": count_flops(lambda: net.video_denoiser(sample, step, tokens, 10, None)),
        "vae_decode_window": count_flops(lambda: net.appearance_encoder.decode(latents)),
    }


def estimate_generation(flops: dict[str, float]) -> dict[str, float]:
    """Seconds and FLOPs of generating the protocol on one H100 at :data:`UTILISATION`."""
    rate = H100_BF16_FLOPS * UTILISATION
    windows = -(-int(PROTOCOL_SECONDS * FPS) // WINDOW)  # 32 windows of 16 frames per 20 s clip
    per_clip = windows * (STEPS * flops["denoiser_step_window"] + flops["vae_decode_window"])
    return {"generation_s": PROTOCOL_CLIPS * per_clip / rate, "generation_flops": PROTOCOL_CLIPS * per_clip}


def estimate_evaluation(workers: int, media: Media | None = None) -> tuple[list[EvaluationEstimate], list]:
    """The whole metric suite over the protocol under each setting of :data:`SETTINGS` with ``workers``.

    Networks counted, the other GPU work from its rate, CPU parts timed on ``media`` (default: the
    example clips); returns the estimates and every timed CPU part.
    """
    protocol = Protocol(PROTOCOL_CLIPS, PROTOCOL_SECONDS, FPS)
    gpu = Gpu(H100_TF32_FLOPS, utilisation=UTILISATION)
    flops, unit_seconds = count_network_flops(), gpu_unit_seconds(gpu)
    cpu = time_cpu_work(media if media is not None else load_media())
    settings = [replace(setting, workers=workers) for setting in SETTINGS]
    return [estimate_setting(flops, unit_seconds, cpu, protocol, gpu, setting) for setting in settings], cpu


def measure_tiny(clips: int, work: Path, max_mel_frames: int, metrics: list[str] | None,
                 batch_sizes: list[int]) -> dict[str, Any]:
    """Clips per minute of generation (per batch size) and of scoring for the tiny config on this machine."""
    from datamodules.demo_corpus import build_demo_corpus
    from experiments import fit
    from experiments import generate as gen
    from experiments import reproduce as rep

    load_before = os.getloadavg()[0]

    root = build_demo_corpus(work / "corpus", num_clips=7 + 10 * max(0, clips - 1), size=64, min_seconds=2.8,
                             max_seconds=3.2, num_workers=0, progress=False)
    cli = fit.main(["--config", "ete.yaml", "--config", "tiny.yaml", f"--data.root={root}",
                    "--data.build_if_missing=false", "--trainer.max_steps=2", "--trainer.logger=false",
                    f"--model.init_args.max_mel_frames={max_mel_frames}",
                    "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false",
                    f"--trainer.default_root_dir={work}"])
    ckpt = work / "tiny.ckpt"
    cli.trainer.save_checkpoint(ckpt)
    start = time.perf_counter()
    report = rep.reproduce({"ete": ckpt}, work / "results", datasets=["demo"], limit=clips, metrics=metrics,
                           batch_size=rep.DEFAULT_BATCH_SIZE)
    done = report["generation"]["ete"]["demo"]
    measured = {"load_before": load_before, "clips": done["clips"], "generated": done["generated"], "failed": done["failed"],
                "seconds": report["seconds"], "total_s": time.perf_counter() - start,
                "skipped": json.loads((work / "results" / "scores" / "ete" / "demo" / "summary.json").read_text())
                ["metrics_skipped"], "batches": {}}
    module, _ = gen.load_checkpoint(ckpt)
    test_clips = rep.plan_run({"ete": ckpt}, ["demo"], clips, {}).test_sets["demo"].clips
    for size in batch_sizes:  # generation alone, into an empty folder: every clip is made again
        begin = time.perf_counter()
        counts, _ = rep.generate_clips(module, test_clips, work / f"batch_{size}", rep.GenerationOptions(
            batch_size=size), f"batch size {size}")
        measured["batches"][size] = {"seconds": time.perf_counter() - begin, "generated": counts["generated"]}
    return measured


def _per_min(clips: int, seconds: float) -> float:
    return 60.0 * clips / seconds if seconds > 0 else float("inf")


def _print_measured(m: dict[str, Any]) -> None:
    load = m["load_before"]  # the load this benchmark found: its own threads raise it while it runs
    print(f"\ntiny config on this machine ({torch.get_num_threads()} threads, load average before it {load:.2f}"
          f"{'' if load < 1 else ': busy, the timings below are not comparable; rerun when uptime shows < 1'}), "
          f"{m['clips']} demo test clips ({m['failed']} failed):")
    print("\n  | batch size | clips generated | generation s | clips/min |\n  |---:|---:|---:|---:|")
    for size, run in m["batches"].items():
        print(f"  | {size} | {run['generated']} | {run['seconds']:.1f} | "
              f"{_per_min(run['generated'], run['seconds']):.2f} |")
    print(f"\n  scoring:    {m['seconds']['scoring']:.1f} s -> {_per_min(m['clips'], m['seconds']['scoring']):.1f} "
          f"clips/min (metrics skipped for missing weights/packages: {', '.join(m['skipped']) or 'none'})")
    print(f"  whole command (batch size 4): {m['total_s']:.1f} s")
    print("  timings need a quiet machine: run when `uptime` shows a load average below 1")


def _print_generation(flops: dict[str, float], est: dict[str, float]) -> None:
    print(f"\npaper protocol ({PROTOCOL_CLIPS} clips x {PROTOCOL_SECONDS:g} s, {STEPS} steps per {WINDOW}-frame "
          f"window) on one H100 at {UTILISATION:.0%} of {H100_BF16_FLOPS / 1e12:g} TFLOP/s:")
    print(f"  denoiser step on one window: {flops['denoiser_step_window'] / 1e12:.2f} TFLOP; VAE decode of a window: "
          f"{flops['vae_decode_window'] / 1e12:.2f} TFLOP")
    print(f"  generation: {est['generation_flops'] / 1e18:.2f} EFLOP -> {est['generation_s'] / 3600:.1f} h "
          f"({est['generation_s'] / PROTOCOL_CLIPS:.0f} s per clip)")


def _print_evaluation(ests: list[EvaluationEstimate], timed: list, media_source: str) -> None:
    load = os.getloadavg()[0]
    print(f"\nevaluation of the same protocol with the whole metric suite, python -m experiments.evaluate on one H100 "
          f"(networks at {UTILISATION:.0%} of {H100_TF32_FLOPS / 1e12:g} TFLOP/s TF32, what fp32 convolutions get; fp32 "
          f"matmuls run on CUDA cores at up to 67 TFLOP/s), CPU parts timed on one core of this machine (load average "
          f"{load:.2f}{'' if load < 1 else ', busy: the CPU timings are high'}) on {media_source}:")
    for est in ests:
        print(f"  {est.setting.name}: {est.setting.flags}")
    print()
    print(format_estimates(ests, EVALUATION_GOAL_S, timed))
    fast = ests[-1]
    on_cpu = sum(row.core_seconds(fast.protocol) for row in timed if "MTCNN" in row.work) / fast.workers
    mtcnn = next(row for row in fast.networks if "MTCNN" in row.network)
    print(f"  overlapped, not added: the {fast.workers} worker processes decode and score the CPU-bound metrics of the "
          "next clips while the main process runs the GPU work of the current one (a core each assumed)")
    print(f"  MTCNN on the GPU ({mtcnn.seconds(fast.flops_per_second):,.0f} s) is not measured: {MTCNN_PUBLISHED_SOURCE}, "
          f"scaled by pixels; on {fast.workers} CPU workers it would take {on_cpu:,.0f} s (timed here), but "
          "experiments.evaluate runs it where LSE's SyncNet runs, on the device")
    print("  not yet done: experiments.reproduce passes its --device to generation only; its scoring runs "
          "experiments.evaluate with the defaults (cpu, min(4, cores) workers)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=4, help="demo test clips to generate and score")
    parser.add_argument("--batch-sizes", default="1,4", help="comma-separated batch sizes to time generation with")
    parser.add_argument("--max-mel-frames", type=int, default=125, help="speech cap per sentence (62.5 per second)")
    parser.add_argument("--metrics", help="comma-separated subset of the suite (default: all available)")
    parser.add_argument("--skip-measure", action="store_true", help="only the FLOP estimate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=16, help="CPU processes the estimate spreads the CPU parts over")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.skip_measure:
        with tempfile.TemporaryDirectory() as work:
            metrics = args.metrics.split(",") if args.metrics else None
            sizes = [int(size) for size in args.batch_sizes.split(",")]
            _print_measured(measure_tiny(args.clips, Path(work), args.max_mel_frames, metrics, sizes))
    flops = count_generation_flops()
    _print_generation(flops, estimate_generation(flops))
    media = load_media()
    ests, timed = estimate_evaluation(args.workers, media)
    _print_evaluation(ests, timed, media.source)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
