"""Real peak memory and step time of ete.yaml on a GPU, and the generation real-time factor in bf16.

``python benchmarks/gpu.py [--caps 48 80] [--steps 3] [--seconds 2] [--skip-train] [--skip-generation]``

Needs CUDA (without it: one line on stderr, exit status 2). In under 8 minutes on one H100/H200:

* **training**: ete.yaml at random init with the real shapes: the pretrained parts built from the
  architectures of the checkpoints it names (:func:`~lightning_modules.networks.presets.hub_architectures`,
  nothing downloaded), its precision (bf16-mixed), checkpointing switches and micro-batch (1), a
  micro-batch of 2 + 16 frames of 512 x 512, 10 s of speech and 128 text tokens (what
  ``benchmarks/memory.py`` counts). For each cap in ``--caps`` (GB), in a fresh process whose
  allocator ``torch.cuda.set_per_process_memory_fraction`` limits to that many GB: one warm-up
  micro-batch (forward, backward, AdamW step), then ``--steps`` timed ones; the peak of allocated and
  reserved memory, or "out of memory" when the cap is too small. A cap above the card's memory is
  skipped.
* **generation**: one utterance of ``--seconds`` s (stop head muted, so exactly that long) with the
  pipeline's fastest setting: bf16 autocast, DPM-Solver++ 10 steps, batched guidance (ete.yaml's
  guidance_scale, 1), conditions encoded once, the VAE decoding 4 frames at a time; the vocoder is
  Griffin-Lim (HiFi-GAN costs about 1 % of the FLOPs); one warm-up run first. Real-time factor =
  seconds of compute per second of media.

The table's figures sit next to the estimates of ``benchmarks/memory.py`` and ``benchmarks/model.py``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root

GB = 1e9
GIB = 2.0**30
SECONDS, TEXT_TOKENS = 10.0, 128
"""The longest training utterance and its text (as ``benchmarks/memory.py``)."""
NO_CUDA = "benchmarks/gpu.py needs a CUDA GPU and none is available here; run benchmarks/memory.py and " \
          "benchmarks/model.py for the estimates"


def parse(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command line (module docstring)."""
    parser = argparse.ArgumentParser(description="ete.yaml on a GPU: peak memory, step time, generation RTF")
    parser.add_argument("--caps", type=float, nargs="+", default=[48.0, 80.0],
                        help="memory caps in GB, one run each (torch.cuda.set_per_process_memory_fraction)")
    parser.add_argument("--steps", type=int, default=3, help="timed training micro-batches after one warm-up")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the generated utterance")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--timeout", type=float, default=200.0, help="seconds allowed per measurement")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.seconds <= 0 or any(cap <= 0 for cap in args.caps):
        parser.error(f"--steps must be >= 1, --seconds and --caps > 0; got {args.steps}, {args.seconds}, {args.caps}")
    return args


def _build(configs: tuple[str, ...] = ("ete.yaml",)):
    """ete.yaml's LitModule on the GPU at random init, pretrained parts shaped like their checkpoints."""
    from benchmarks.model import PAPER_DATA, build_module
    from lightning_modules.networks.presets import hub_architectures

    with warnings.catch_warnings(), hub_architectures(), torch.device("cuda"):
        warnings.simplefilter("ignore")
        return build_module(configs, {**PAPER_DATA, "vocoder": None})


def _train_job(cap_gb: float, steps: int, queue) -> None:
    """Child process: capped allocator, one warm-up and ``steps`` timed micro-batches of ete.yaml."""
    from benchmarks.memory import run_config
    from benchmarks.model import PAPER_DATA, make_batch

    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb * GB / total))
    run = run_config(["ete.yaml"])
    try:
        module = _build().train()
        batch = make_batch(run["micro_batch"], PAPER_DATA["image_size"], PAPER_DATA["num_frames"] + PAPER_DATA["motion_frames"],
                           SECONDS, PAPER_DATA["vocab_size"], TEXT_TOKENS)
        batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}
        optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-2)
        times = []
        for _ in range(steps + 1):
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=run["precision"].startswith("bf16")):
                out = module(batch)
                loss = sum(module.loss_weights[k] * out[k] for k in module.loss_weights)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        queue.put({"ok": True, "step_s": sum(times[1:]) / steps, "accumulate": run["accumulate"],
                   "allocated_gib": torch.cuda.max_memory_allocated() / GIB,
                   "reserved_gib": torch.cuda.max_memory_reserved() / GIB})
    except torch.cuda.OutOfMemoryError:
        queue.put({"ok": False, "error": "out of memory", "allocated_gib": torch.cuda.max_memory_allocated() / GIB})


def _generation_job(seconds: float, queue) -> None:
    """Child process: the fastest pipeline setting on one utterance of ``seconds`` s, after a warm-up."""
    from benchmarks.model import make_batch, _mute_stop_head
    from datamodules.conventions import MEL_FRAMES_PER_SECOND
    from lightning_modules.pipeline import NFYPipeline

    module = _build().eval()
    net = module.net
    _mute_stop_head(net)  # a random stop head fires at random: every run makes exactly ``seconds``
    batch = make_batch(1, int(net.image_size), int(net.motion_frames) + int(net.num_frames), seconds,
                       int(net.text_encoder.tokens.num_embeddings))
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}
    pipe = NFYPipeline.from_training_scheduler(net, module.train_scheduler, sampler="dpm++", dtype=torch.bfloat16)
    args = [batch[k] for k in ("text_ids", "text_mask", "ref_image", "face_mask", "lip_mask", "profile_wav")]
    options = {"num_inference_steps": 10, "guidance_scale": module.hparams.guidance_scale,
               "max_mel_frames": int(seconds * MEL_FRAMES_PER_SECOND)}
    pipe(*args, **{**options, "max_mel_frames": 4})  # warm-up: kernels, allocator
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = pipe(*args, **options)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    media = float(out["num_frames"][0]) / 25.0
    queue.put({"ok": True, "rtf": elapsed / media, "seconds": elapsed, "media_s": media,
               "allocated_gib": torch.cuda.max_memory_allocated() / GIB})


def _isolated(target, args: tuple, timeout: float) -> dict[str, Any]:
    """``target(*args, queue)`` in a fresh process (its own CUDA context and memory cap)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, queue))
    process.start()
    process.join(timeout)
    if process.is_alive():
        process.terminate()
        return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
    return queue.get() if not queue.empty() else {"ok": False, "error": f"process died (exit {process.exitcode})"}


def main(argv: Optional[list[str]] = None) -> int:
    args = parse(argv)
    if not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    card = torch.cuda.get_device_properties(0)
    print(f"{card.name}: {card.total_memory / GIB:.1f} GiB")
    print("| measurement | result | peak allocated GiB | peak reserved GiB |\n|---|---|---|---|")
    if not args.skip_train:
        for cap in args.caps:
            if cap * GB > card.total_memory:
                print(f"| ete.yaml step, cap {cap:g} GB | skipped: the card has {card.total_memory / GB:.0f} GB | | |")
                continue
            res = _isolated(_train_job, (cap, args.steps), args.timeout)
            result = (f"{res['step_s']:.2f} s per micro-batch ({res['step_s'] * res['accumulate']:.1f} s per "
                      f"step of {res['accumulate']})" if res["ok"] else res["error"])
            print(f"| ete.yaml step, cap {cap:g} GB | {result} | {res.get('allocated_gib', float('nan')):.1f} | "
                  f"{res.get('reserved_gib', float('nan')):.1f} |")
    if not args.skip_generation:
        res = _isolated(_generation_job, (args.seconds,), args.timeout)
        result = (f"RTF {res['rtf']:.2f} ({res['seconds']:.1f} s for {res['media_s']:.2f} s)" if res["ok"]
                  else res["error"])
        print(f"| generation, bf16, DPM-Solver++ 10 | {result} | {res.get('allocated_gib', float('nan')):.1f} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
