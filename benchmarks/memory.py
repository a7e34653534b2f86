"""GPU memory of one training step of a config, counted on the meta device with the real architectures.

``python benchmarks/memory.py [ete.yaml ete_48gb.yaml ...] [--pixel-loss-frames K] [--skip-calibration]``

Each argument is a config or ``+``-joined configs merged left to right (``ete.yaml+dc_off.yaml``); a
delta of ete.yaml (``ete_48gb.yaml``, an ablation) is merged onto ete.yaml. The network is built on
the meta device (nothing allocated) with the architectures of the checkpoints ete.yaml names
(:func:`lightning_modules.networks.presets.hub_architectures`), and one forward pass of a batch of
the real shapes (micro-batch x (2 + 16) frames of 512 x 512, 10 s of speech, 128 text tokens) is
counted with :class:`lightning_modules.memory.SavedTensorMeter`. Per component and in total:

* weights (fp32, frozen parts included; the HiFi-GAN vocoder too), gradients (fp32, trainable),
  optimiser state (AdamW: 8 bytes per trainable parameter; 8-bit AdamW: 2);
* activations of one micro-batch in the run's precision (bf16-mixed: autocast's casts emulated on
  the meta device, the bf16 weight copies it keeps included), with the run's checkpointing switches; the VAE
  decode of the pixel L1 scaled to ``pixel_loss_frames`` of the window's frames;
* the backward pass's recomputation of the largest checkpointed region (or nothing without
  checkpointing).

Gradient accumulation keeps gradients across micro-batches, so they coexist with a micro-batch's
activations: the step's peak is the sum. A card "fits" when that sum plus 10 % (allocator
fragmentation) and 1 GiB (CUDA context, kernels' workspace) is at most what the card reports:
47.5 GiB for a 48 GB A6000, 79.1 GiB for an 80 GB H100, 139.8 GiB for a 141 GB H200.

Calibration (on by default): ete.yaml + tiny.yaml is counted the same way and then run on the
CPU, where torch's profiler records every allocation and free (``profile_memory``): the measured
peak of live bytes over a second micro-batch's forward and backward (gradients and AdamW state
already allocated) against the estimate, in fp32 and in bf16 autocast with every checkpointing
switch (emulating CPU autocast, which keeps norms and softmax in bf16 where CUDA's runs them in
float32: the GPU estimates use CUDA's lists, the larger count). The profiler counts torch's own allocations exactly, which RSS (allocator caching,
fragmentation, library memory) would not.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root

from benchmarks.model import make_batch  # noqa: E402
from diffusers.models.attention import BasicTransformerBlock  # noqa: E402
from diffusers.models.resnet import ResnetBlock2D  # noqa: E402
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, UpDecoderBlock2D  # noqa: E402
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D  # noqa: E402
from transformers.models.gpt2.modeling_gpt2 import GPT2Block  # noqa: E402
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2EncoderLayer  # noqa: E402

from experiments.fit import build_network, merged_config  # noqa: E402
from lightning_modules.memory import FP32_LOSSES, FP32_OPS, GIB, SavedTensorMeter, parameter_bytes  # noqa: E402
from lightning_modules.networks.presets import hub_architectures  # noqa: E402
from lightning_modules.networks.vocoder import hifigan_generator  # noqa: E402

CARDS_GIB: dict[int, float] = {48: 47.5, 80: 79.1, 141: 139.8}
"""Nominal GB of a card -> GiB the driver reports (A6000, H100 SXM 80 GB, H200)."""
OVERHEAD_GIB, FRAGMENTATION = 1.0, 0.10
OPTIMIZER_STATE_BYTES: dict[str, float] = {"AdamW8bit": 2.0, "PagedAdamW8bit": 2.0, "AdamW": 8.0, "Adam": 8.0}
"""Optimiser state per trainable parameter, by class name (two fp32 or uint8 moments)."""
CHECKPOINT_REGIONS: tuple[type, ...] = (ResnetBlock2D, BasicTransformerBlock, AnimateDiffTransformer3D,
                                        UpDecoderBlock2D, UNetMidBlock2D, GPT2Block, Wav2Vec2EncoderLayer)
"""What the checkpointing switches recompute as one (diffusers', transformers' and the motion modules)."""
SWITCHES: tuple[str, ...] = ("checkpoint_unet", "checkpoint_vae", "checkpoint_gpt2", "checkpoint_wav2vec")
COMPONENT_SWITCH: dict[str, str] = {
    "UNet + motion modules": "checkpoint_unet", "VAE decode (pixel L1)": "checkpoint_vae",
    "GPT-2 decoder": "checkpoint_gpt2", "Wav2Vec2": "checkpoint_wav2vec", "other": "checkpoint_vae",
}
"""Which switch checkpoints the regions of each component ("other": a trainable VAE's encoder)."""
SECONDS, TEXT_TOKENS = 10.0, 128
"""The longest training utterance (GPT-2's 1024 positions hold prefix + 625 mel frames) and its text."""


def run_config(configs: list[str]) -> dict[str, Any]:
    """What of the merged ``configs`` decides a step's memory (precision, batch, switches ...)."""
    merged = merged_config(*configs)
    trainer, model = merged.get("trainer", {}), merged["model"].get("init_args", {})
    data = merged["data"]["init_args"]
    optimizer = model.get("optimizer", {}).get("class_path", "torch.optim.AdamW").rsplit(".", 1)[-1]
    net = model["net"].get("init_args", {})
    return {
        "precision": str(trainer.get("precision", "32-true")),
        "micro_batch": int(data["batch_size"]),
        "accumulate": int(trainer.get("accumulate_grad_batches", 1)),
        "optimizer": optimizer,
        "optimizer_bytes": OPTIMIZER_STATE_BYTES.get(optimizer, 8.0),
        "pixel_loss_frames": model.get("pixel_loss_frames"),
        "linked": {k: data[k] for k in ("image_size", "num_frames", "motion_frames", "vocab_size")},
        "checkpointing": any(net.get(s, False) for s in SWITCHES),
    }


def _components(net: torch.nn.Module) -> dict[str, torch.nn.Module]:
    parts = {"UNet + motion modules": "video_denoiser", "VAE decode (pixel L1)": "appearance_encoder.vae.decoder",
             "GPT-2 decoder": "audio_decoder", "Wav2Vec2": "audio_profile_encoder"}
    found = {}
    for name, path in parts.items():
        try:
            found[name] = net.get_submodule(path)
        except AttributeError:  # an ablation without that part
            pass
    return found


def count_activations(net: torch.nn.Module, batch: dict, mixed: bool, autocast_like: str = "cuda") -> SavedTensorMeter:
    """Meter one training forward of ``net`` on ``batch`` (both on the same device); on the meta device
    bf16-mixed is emulated as ``autocast_like`` ("cuda" or "cpu") autocast casts."""
    net.train()
    meta = batch["video"].device.type == "meta"
    meter = SavedTensorMeter(net, autocast=torch.bfloat16 if mixed and meta else None,
                             fp32_ops=FP32_OPS if autocast_like == "cuda" else FP32_LOSSES,
                             components=_components(net), regions=CHECKPOINT_REGIONS)
    with meter, torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed and not meta):
        objective(net)(batch)
    return meter


def objective(net: torch.nn.Module):
    """The training objective around ``net`` (every frame decoded for the pixel L1: the accounting scales
    that part to ``pixel_loss_frames`` itself), in ``net``'s mode."""
    from lightning_modules.nfy_module import NFYLitModule

    return NFYLitModule(net).train(net.training)


def _to(batch: dict, device: str, dtype: torch.dtype | None = None) -> dict:
    def move(value):
        if not torch.is_tensor(value):
            return value
        return value.to(device, dtype=dtype if (dtype is not None and value.is_floating_point()) else None)
    return {k: move(v) for k, v in batch.items()}


def estimate(configs: list[str], pixel_loss_frames: int | None = None, device: str = "meta",
             seconds: float = SECONDS, text_tokens: int = TEXT_TOKENS, hub: bool = True,
             autocast_like: str = "cuda", **overrides: Any) -> dict[str, Any]:
    """GiB per component of one training step of ``configs`` (module docstring).

    ``overrides``: ``micro_batch``, ``precision``, ``optimizer_bytes`` of the run, or network arguments.
    """
    run = run_config(configs)
    for key in ("micro_batch", "precision", "optimizer_bytes"):
        if key in overrides:
            run[key] = overrides.pop(key)
    if any(s in overrides for s in SWITCHES):
        run["checkpointing"] = any(overrides.get(s, False) for s in SWITCHES)
    run["net"] = overrides
    k = pixel_loss_frames if pixel_loss_frames is not None else run["pixel_loss_frames"]
    frames = run["linked"]["num_frames"]
    mixed = run["precision"].endswith("mixed")
    with warnings.catch_warnings(), (hub_architectures() if hub else contextlib.nullcontext()), torch.device(device):
        warnings.simplefilter("ignore")
        net = build_network(*configs, **run["linked"], vocoder=None, **run["net"])
        sizes = parameter_bytes(net, run["optimizer_bytes"])
        vocoder = hifigan_generator(512) if hub else None
    batch = make_batch(run["micro_batch"], run["linked"]["image_size"], frames + run["linked"]["motion_frames"],
                       seconds, run["linked"]["vocab_size"], text_tokens)
    batch = _to(batch, device)
    meter = count_activations(net, batch, mixed, autocast_like)
    vae_share = 1.0 if k is None else min(k, frames) / frames

    def scaled(by_component: dict[str, int]) -> dict[str, float]:  # the pixel L1 decodes k of the F frames
        return {n: b * (vae_share if n.startswith("VAE") else 1.0) for n, b in by_component.items()}

    recompute = 0.0
    if run["checkpointing"]:  # what one region holds again while the backward pass recomputes it
        switched = {c for c, switch in COMPONENT_SWITCH.items() if _switch(configs, run, switch)}
        regions = scaled(_region_sizes(configs, run, batch, device, mixed, hub, autocast_like))
        recompute = max((size for c, size in regions.items() if c in switched), default=0.0)
    weights = sizes["weights"] + (sum(p.numel() * 4 for p in vocoder.parameters()) if vocoder is not None else 0)
    parts = {"weights": weights, "gradients": sizes["gradients"], "optimizer state": sizes["optimizer"],
             **{f"activations: {n}": b for n, b in scaled(meter.by_component).items()},
             "backward recompute (largest region)": recompute}
    gib = {name: value / GIB for name, value in parts.items()}
    gib["total"] = sum(gib.values())
    return {"run": run, "pixel_loss_frames": k, "gib": gib, "trainable": sizes["trainable"],
            "parameters": sizes["parameters"]}


def _switch(configs: list[str], run: dict[str, Any], switch: str) -> bool:
    if switch in run["net"]:
        return bool(run["net"][switch])
    net = merged_config(*configs)["model"]["init_args"]["net"].get("init_args", {})
    return bool(net.get(switch, False))


def _region_sizes(configs, run, batch, device, mixed, hub, autocast_like) -> dict[str, int]:
    """Per component, the largest checkpointed region's saved bytes, counted on the same network
    without checkpointing."""
    with warnings.catch_warnings(), (hub_architectures() if hub else contextlib.nullcontext()), torch.device(device):
        warnings.simplefilter("ignore")
        plain = build_network(*configs, **run["linked"], vocoder=None, **{**run["net"], **{s: False for s in SWITCHES}})
    return count_activations(plain, batch, mixed, autocast_like).largest_region_by_component


# ---------------------------------------------------------------------------------------- calibration
def measure_cpu(configs: list[str], micro_batch: int, seconds: float, precision: str,
                **overrides: Any) -> dict[str, float]:
    """Peak live bytes (GiB) of a second micro-batch's forward + backward on the CPU (module docstring).

    Returns ``total`` (weights + gradients + AdamW state + the profiled peak above them) and
    ``activations`` (the profiled peak alone).
    """
    from torch.profiler import ProfilerActivity, profile

    from lightning_modules.nfy_module import LOSS_TERMS

    run = run_config(configs)
    torch.manual_seed(0)
    net = build_network(*configs, **run["linked"], vocoder=None, **overrides).train()
    batch = make_batch(micro_batch, run["linked"]["image_size"],
                       run["linked"]["num_frames"] + run["linked"]["motion_frames"], seconds,
                       run["linked"]["vocab_size"], 24)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    mixed = precision.endswith("mixed")

    loss_fn = objective(net)

    def forward_backward() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
            out = loss_fn(batch)
            loss = sum(out[name] for name in LOSS_TERMS)
        loss.backward()

    forward_backward()
    optimizer.step()  # AdamW state exists; the gradients stay, as between accumulated micro-batches
    held = sum(t.numel() * t.element_size() for p in net.parameters()
               for t in (p, p.grad, *optimizer.state.get(p, {}).values()) if torch.is_tensor(t))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        forward_backward()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return {"total": (held + peak) / GIB, "activations": peak / GIB}


def calibrate() -> list[tuple[str, float, float]]:
    """Estimate and measurement of ete.yaml + tiny.yaml on this CPU, in fp32 and in bf16 + checkpointing."""
    configs = ["ete.yaml", "tiny.yaml"]
    settings = {
        "fp32, no checkpointing": {"precision": "32-true"},
        "bf16-mixed, all checkpointing": {"precision": "bf16-mixed", **{s: True for s in SWITCHES}},
    }
    rows = []
    print("\ncalibration: ete.yaml + tiny.yaml, micro-batch 2, 2 s of speech, on this CPU (GiB)")
    print(f"  {'setting':<32} {'estimate':>9} {'measured':>9} {'ratio':>6}   activations: est. / meas.")
    for name, setting in settings.items():
        net_args = {k: v for k, v in setting.items() if k != "precision"}
        est = estimate(configs, device="meta", hub=False, seconds=2.0, text_tokens=24, micro_batch=2, autocast_like="cpu",
                       precision=setting["precision"], optimizer_bytes=8.0, **net_args)
        measured = measure_cpu(configs, 2, 2.0, setting["precision"], **net_args)
        gib = est["gib"]
        activations = sum(v for k, v in gib.items() if k.startswith(("activations", "backward")))
        ratio = gib["total"] / measured["total"]
        print(f"  {name:<32} {gib['total']:9.3f} {measured['total']:9.3f} {ratio:6.3f}   "
              f"{activations:.3f} / {measured['activations']:.3f} ({activations / measured['activations']:.3f})")
        rows.append((name, gib["total"], measured["total"]))
    return rows


# ---------------------------------------------------------------------------------------- report
def fits(total_gib: float) -> dict[int, bool]:
    """Whether a step of ``total_gib`` fits each card (module docstring: +10 % and +1 GiB)."""
    need = total_gib * (1 + FRAGMENTATION) + OVERHEAD_GIB
    return {card: need <= usable for card, usable in CARDS_GIB.items()}


def _configs(argument: str) -> list[str]:
    configs = argument.split("+")
    return configs if configs[0] == "ete.yaml" else ["ete.yaml", *configs]


def print_table(name: str, result: dict[str, Any]) -> None:
    run = result["run"]
    k = result["pixel_loss_frames"]
    print(f"\n{name}: {run['precision']}, micro-batch {run['micro_batch']} x {run['accumulate']} accumulated, "
          f"{run['optimizer']}, checkpointing {'on' if run['checkpointing'] else 'off'}, pixel L1 on "
          f"{k if k is not None else 'all'} of {run['linked']['num_frames']} frames; "
          f"{result['trainable'] / 1e6:,.1f} M of {result['parameters'] / 1e6:,.1f} M parameters trained")
    print("| part | GiB |\n|---|---|")
    for part, value in result["gib"].items():
        print(f"| {'**total**' if part == 'total' else part} | {value:,.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GPU memory of one training step (meta-device accounting)")
    parser.add_argument("configs", nargs="*", default=["ete.yaml", "ete_48gb.yaml"],
                        help="configs, deltas of ete.yaml, or '+'-joined merges")
    parser.add_argument("--pixel-loss-frames", type=int, default=None,
                        help="frames per window the pixel L1 decodes (default: the config's pixel_loss_frames, "
                             "else all)")
    parser.add_argument("--skip-calibration", action="store_true")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if not args.skip_calibration:
        calibrate()
    lines = []
    for argument in args.configs:
        result = estimate(_configs(argument), args.pixel_loss_frames)
        print_table(argument, result)
        total = result["gib"]["total"]
        verdict = ", ".join(f"{card} GB: {'yes' if ok else 'no'}" for card, ok in fits(total).items())
        lines.append(f"{argument}: {total:.1f} GiB per step; fits {verdict}")
    print()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raise SystemExit(main())
