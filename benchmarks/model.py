"""Size and speed of the NFY model: parameters, training step, generation real-time factor.

Prints, for the tiny configuration (``ete.yaml`` + ``tiny.yaml``) and the paper's (``ete.yaml``).
The paper configuration names pretrained parts by hub id; where they are not in the local cache
(no download here), its network is built at random init with every pretrained part replaced by a
random one of the same family shaped like it as far as the builders allow (:data:`PAPER_SHAPED`):

1. parameters per component (total and trainable) and in all, next to the paper's 1,575,936;
2. one training step (forward, backward, AdamW) on a synthetic batch of the batch contract:
   seconds and peak resident memory, each configuration in a fresh process;
3. generation real-time factor (seconds of compute per second of speech+video produced;
   below 1 is faster than real time) for one 2 s utterance;
4. the generation cost table (:func:`generation_table`, alone with ``--generation-only``): per
   setting of the pipeline (fp32 / bf16, guidance as two calls or one batched call, DDIM 25 or
   DPM-Solver++ 10 steps), FLOPs per second of 512 x 512 video at 25 fps counted with
   ``torch.utils.flop_counter`` on ete.yaml's network at its real size (meta device), the peak memory
   estimate (weights in the setting's dtype + the largest activation peak of one call), and the
   real-time factor those FLOPs imply on one H100 at 40 % utilisation. The last line gives the
   fastest setting's.

Each measurement runs in its own subprocess under a memory limit (``--memory-gib``, default 24;
``RLIMIT_DATA``), so a configuration that does not fit fails alone; paper-size steps are tried
from batch 1 x 4 frames upwards, and when even that does not fit, at smaller image sizes, and the
script says which one fitted.

Usage: ``python benchmarks/model.py [--skip-paper] [--memory-gib 24] [--threads 2] [--generation-only]``
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import multiprocessing as mp
import resource
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a pretrained part missing from the cache fails at once, no download

from datamodules.batch import collate  # noqa: E402
from datamodules.conventions import MEL_FRAMES_PER_SECOND, PROFILE_SAMPLES, SAMPLE_RATE  # noqa: E402

PAPER_PARAMETERS = 1_575_936
TINY = ("ete.yaml", "tiny.yaml")
PAPER = ("ete.yaml",)
PAPER_DATA: dict[str, int] = {"image_size": 512, "num_frames": 16, "motion_frames": 2, "vocab_size": 512}
"""The values the paper's DataModules link into the network."""
PAPER_SHAPED: dict[str, Any] = {
    "wav2vec": None, "wav2vec_width": 768, "wav2vec_layers": 12,          # wav2vec2-base: 768 x 12 layers
    "gpt2": None, "decoder_width": 768, "decoder_layers": 12, "decoder_heads": 12,  # GPT-2 small
    "vae": None, "vae_width": 128, "vae_levels": 4,                        # SD VAE: 4 levels from 128 channels
    "unet": None, "motion_adapter": None, "unet_width": 320, "unet_levels": 3,  # SD-1.5: 320/640/1280 channels
    "vocoder": None,                                                       # Griffin-Lim: no parameters
}
"""Random stand-ins for the pretrained parts of ete.yaml (offline, nothing to load)."""
PRETRAINED_PARTS: tuple[str, ...] = ("audio_profile_encoder", "appearance_encoder", "audio_decoder", "video_denoiser",
                                     "vocoder")
"""Components that start from pretrained weights in ete.yaml; the rest is new in NFY."""


def count_parameters(net: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """Per direct child of ``net`` and ``total``: (all parameters, trainable parameters)."""
    counts = {}
    for name, child in net.named_children():
        params = list(child.parameters())
        counts[name] = (sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad))
    params = list(net.parameters())
    counts["total"] = (sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad))
    return counts


def make_batch(batch_size: int, image_size: int, frames: int, seconds: float, vocab_size: int,
               text_tokens: int = 24) -> dict[str, Any]:
    """A seeded random batch of the contract: ``frames`` video frames (motion frames included)."""
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(1, image_size, image_size)
    masks[:, image_size // 4 : -image_size // 4, image_size // 4 : -image_size // 4] = 1
    samples = [{
        "text_ids": torch.randint(4, vocab_size, (text_tokens,), generator=g),
        "ref_image": torch.rand(3, image_size, image_size, generator=g) * 2 - 1,
        "face_mask": masks, "lip_mask": masks,
        "profile_wav": torch.rand(PROFILE_SAMPLES, generator=g) * 0.2 - 0.1,
        "video": torch.rand(frames, 3, image_size, image_size, generator=g) * 2 - 1,
        "frame_start": 0,
        "wav": torch.rand(int(seconds * SAMPLE_RATE), generator=g) * 0.2 - 0.1,
        "mel": torch.randn(80, int(seconds * MEL_FRAMES_PER_SECOND), generator=g) - 5,
        "key": f"b{i}", "speaker": "s", "dataset": "bench",
    } for i in range(batch_size)]
    return collate(samples)


def build_module(configs: tuple[str, ...], net_overrides: dict[str, Any]):
    """The LitModule of ``configs`` with its network (``net_overrides`` on its init args)."""
    from experiments.fit import build_network, build_part, merged_config
    from lightning_modules import NFYLitModule

    model = merged_config(*configs)["model"]["init_args"]
    objective = {k: v for k, v in model.items() if not isinstance(v, dict)}  # weights and options of the objective
    net = build_network(*configs, **net_overrides)
    return NFYLitModule(net, train_scheduler=build_part("train_scheduler", *configs), **objective)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _train_step_job(configs, overrides, batch_size, frames, seconds, threads, repeats, queue) -> None:
    """Child process: build, run 1 warm-up + ``repeats - 1`` timed training steps, report time and memory."""
    torch.set_num_threads(threads)
    try:
        module = build_module(configs, overrides)
        net = module.net
        batch = make_batch(batch_size, int(net.image_size), frames, seconds, _vocab(net))
        optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-2)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = module(batch)
            loss = sum(module.loss_weights[k] * out[k] for k in module.loss_weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        queue.put({"ok": True, "step_s": min(times[1:]), "first_step_s": times[0], "peak_rss_gib": _peak_rss_gib()})
    except (MemoryError, RuntimeError) as err:  # an allocation beyond the address-space limit
        queue.put({"ok": False, "error": f"{type(err).__name__}: {str(err)[:200]}", "peak_rss_gib": _peak_rss_gib()})


def _generation_job(configs, overrides, seconds, steps, threads, queue) -> None:
    """Child process: generate one utterance of ``seconds`` s; report compute seconds per media second."""
    torch.set_num_threads(threads)
    try:
        module = build_module(configs, overrides).eval()
        net = module.net
        batch = make_batch(1, int(net.image_size), int(net.motion_frames) + int(net.num_frames), seconds, _vocab(net))
        mel_frames = int(seconds * MEL_FRAMES_PER_SECOND)
        _mute_stop_head(net)  # a random-init stop head fires at random: every run makes exactly ``seconds``
        start = time.perf_counter()
        out = module.pipeline()(batch["text_ids"], batch["text_mask"], batch["ref_image"], batch["face_mask"],
                                batch["lip_mask"], batch["profile_wav"], num_inference_steps=steps,
                                max_mel_frames=mel_frames)
        elapsed = time.perf_counter() - start
        produced = float(out["num_frames"][0]) / 25.0
        queue.put({"ok": True, "seconds": elapsed, "media_s": produced, "rtf": elapsed / produced,
                   "frames": int(out["num_frames"][0]), "steps": steps, "peak_rss_gib": _peak_rss_gib()})
    except (MemoryError, RuntimeError) as err:
        queue.put({"ok": False, "error": f"{type(err).__name__}: {str(err)[:200]}", "peak_rss_gib": _peak_rss_gib()})


def _mute_stop_head(net: torch.nn.Module) -> None:
    head = getattr(getattr(net, "audio_decoder", None), "stop_head", None)
    if isinstance(head, torch.nn.Linear):
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_(-1e4)  # sigmoid -> 0: never stops before max_mel_frames


def _vocab(net: torch.nn.Module) -> int:
    return int(net.text_encoder.tokens.num_embeddings)


def run_isolated(target, args: tuple, memory_gib: float, timeout_s: float = 1800) -> dict[str, Any]:
    """Run ``target(*args, queue)`` in a fresh process with an address-space limit."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_limited, args=(target, args, memory_gib, queue))
    process.start()
    process.join(timeout_s)
    if process.is_alive():
        process.terminate()
        return {"ok": False, "error": f"timed out after {timeout_s:.0f} s"}
    if queue.empty():
        return {"ok": False, "error": f"process died (exit code {process.exitcode}; out of memory?)"}
    return queue.get()


def _limited(target, args, memory_gib, queue) -> None:
    # RLIMIT_DATA (heap and private anonymous mappings) rather than RLIMIT_AS: the address space
    # also counts the ~4 GiB of library mappings the CUDA build of torch reserves at import.
    limit = int(memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    target(*args, queue)


# ---------------------------------------------------------------------------------------- generation cost
H100_PEAK: dict[str, float] = {"fp32": 495e12, "bf16": 989e12}
"""Dense FLOP/s of one H100 SXM: bf16 tensor cores, and fp32 matmuls as TF32 (what torch runs with
``torch.backends.cuda.matmul.allow_tf32``)."""
UTILISATION = 0.40
"""Share of the peak a real generation sustains (an assumption; the FLOP counts are exact)."""
VIDEO_FPS, WINDOW = 25, 16


@dataclass(frozen=True)
class Setting:
    """One generation setting: what it computes per second of video follows from these."""

    name: str
    dtype: str = "fp32"              # "fp32" or "bf16" (autocast)
    steps: int = 25                  # sampler steps per window (DDIM 25, DPM-Solver++ 10)
    guided: bool = True              # classifier-free guidance: two denoiser branches per step
    batched: bool = False            # both branches in one call (batch 2) instead of two calls
    encode_per_window: bool = True   # the conditions re-encoded for every window (the old loop)
    decode_slice: Optional[int] = None  # frames the VAE decodes at a time (None: the whole window)


SETTINGS: tuple[Setting, ...] = (
    Setting("fp32, DDIM 25, guidance as 2 calls (before)"),
    Setting("bf16", dtype="bf16"),
    Setting("bf16 + batched guidance, encode once, decode by 4", dtype="bf16", batched=True,
            encode_per_window=False, decode_slice=4),
    Setting("fp32 + DPM-Solver++ 10 steps", steps=10),
    Setting("all of the above + DPM-Solver++ 10, guided", dtype="bf16", steps=10, batched=True,
            encode_per_window=False, decode_slice=4),
    Setting("the same without guidance (ete.yaml's guidance_scale 1)", dtype="bf16", steps=10, guided=False,
            batched=True, encode_per_window=False, decode_slice=4),
)
"""The settings ``benchmarks/model.py`` compares; the last two are the pipeline's fastest options."""


class GenerationCost:
    """FLOPs and peak activation bytes of ete.yaml's generation parts, counted on the meta device.

    The network is built with the architectures of the checkpoints ete.yaml names
    (:func:`~lightning_modules.networks.presets.hub_architectures`, nothing read or downloaded). FLOPs
    come from ``torch.utils.flop_counter.FlopCounterMode`` with torch's own attention; activation
    peaks from :class:`~lightning_modules.memory.LiveTensorMeter` (live tensors at the worst moment of
    one call) with attention counted as a fused kernel holds it and bf16 autocast's casts emulated.
    """

    def __init__(self) -> None:
        from experiments.fit import build_network
        from lightning_modules.networks.presets import LINKED_FROM_DATA, PAPER as PAPER_NETWORK, hub_architectures
        from lightning_modules.networks.vocoder import hifigan_generator

        linked = {k: PAPER_NETWORK[k] for k in LINKED_FROM_DATA}
        with warnings.catch_warnings(), hub_architectures(), torch.device("meta"):
            warnings.simplefilter("ignore")
            self.net = build_network(*PAPER, **linked, vocoder=None).eval()
            self.vocoder = hifigan_generator(512).eval()  # speechbrain's LibriTTS 16 kHz HiFi-GAN
        self.parameters = sum(p.numel() for m in (self.net, self.vocoder) for p in m.parameters())
        batch = make_batch(1, linked["image_size"], linked["num_frames"] + linked["motion_frames"], 2.0,
                           linked["vocab_size"], text_tokens=24)
        self.batch = {k: v.to("meta") if torch.is_tensor(v) else v for k, v in batch.items()}
        self.frames, self.latent = int(self.net.num_frames), int(self.net.latent_size)
        self._cache: dict[tuple, Any] = {}

    # the parts: each returns what it computes (inputs built on the meta device)
    def _encode(self) -> dict:
        b = self.batch
        return self.net.encode_conditions(b["text_ids"], b["text_mask"], b["ref_image"], b["face_mask"],
                                          b["lip_mask"], b["profile_wav"])

    def _window_inputs(self, cond: dict) -> tuple:
        width = int(self.net.audio_decoder.gpt.config.n_embd)
        hidden = torch.zeros(1, math.ceil(2.5 * self.frames), width, device="meta")  # (1, 40, W)
        windows = self.net.audio_windows(hidden, torch.zeros(1, dtype=torch.long, device="meta"), self.frames)
        motion = self.net.motion_latents(None, self.batch["ref_image"])
        return self.net.denoiser_inputs(cond, motion, windows, self.frames)

    def _denoise(self, inputs: tuple, batch: int) -> torch.Tensor:
        maps, cross = inputs
        if batch == 2:
            maps = torch.cat([maps, maps])
            cross = {k: torch.cat([v, v]) if torch.is_tensor(v) else v for k, v in cross.items()}
        latents = torch.zeros(batch, 4, self.frames, self.latent, self.latent, device="meta")
        return self.net.denoise(latents, torch.tensor(500, device="meta"), maps, cross)

    def _decode(self, cond: dict, frames: int) -> torch.Tensor:
        latents = torch.zeros(1, 4, frames, self.latent, self.latent, device="meta")
        return self.net.decode_diffused(latents, cond["ref_latent"], self.batch["ref_image"])

    def _speech(self, cond: dict, mel_frames: int) -> torch.Tensor:
        mel = torch.zeros(1, 80, mel_frames, device="meta")
        self.net.decode_speech(cond, mel)  # teacher-forced: the FLOPs of the cached loop, its causal half doubled
        return self.vocoder(mel)

    def flops(self) -> dict[str, float]:
        """FLOPs of: the encoders (per clip), a window's inputs, one denoiser call on one window
        (batch 1), the VAE decode of one frame, the speech decoder + vocoder per mel frame."""
        from lightning_modules.memory import meta_semantics

        if "flops" not in self._cache:
            with meta_semantics(), torch.no_grad():
                cond = self._encode()
                inputs = self._window_inputs(cond)
            mel_frames = 625
            parts = {"encoders": self._encode, "window inputs": lambda: self._window_inputs(cond),
                     "denoiser call": lambda: self._denoise(inputs, 1), "decode frame": lambda: self._decode(cond, 1),
                     "speech per mel frame": lambda: self._speech(cond, mel_frames)}
            counted = {}
            for name, part in parts.items():
                with meta_semantics(fused_attention=False), FlopCounterMode(display=False) as counter:
                    with torch.no_grad():
                        part()
                counted[name] = counter.get_total_flops() / (mel_frames if name.startswith("speech") else 1)
            self._cache["flops"] = counted
        return self._cache["flops"]

    def _count(self, fn, autocast: Optional[torch.dtype]) -> tuple[int, Any]:
        """Peak bytes of the tensors ``fn`` creates while it runs (weights and inputs excluded), and its output."""
        from lightning_modules.memory import LiveTensorMeter, meta_semantics

        with torch.no_grad(), meta_semantics(autocast=autocast), LiveTensorMeter() as meter:
            out = fn()
        return meter.peak_bytes, out

    def activation_peak(self, dtype: str, denoiser_batch: int, decode_frames: int) -> float:
        """The largest activation peak (bytes) of the generation parts in ``dtype``."""
        key = ("peak", dtype, denoiser_batch, decode_frames)
        if key not in self._cache:
            cast = torch.bfloat16 if dtype == "bf16" else None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                encoders, cond = self._count(self._encode, cast)
                window, inputs = self._count(lambda: self._window_inputs(cond), cast)
                peaks = [encoders, window, self._count(lambda: self._denoise(inputs, denoiser_batch), cast)[0],
                         self._count(lambda: self._decode(cond, decode_frames), cast)[0],
                         self._count(lambda: self._speech(cond, 625), cast)[0]]
            self._cache[key] = max(peaks)
        return self._cache[key]


def setting_cost(cost: GenerationCost, setting: Setting, clip_seconds: float = 5.0) -> dict[str, float]:
    """FLOPs per second of video, denoiser calls per second, implied H100 RTF and peak GiB of ``setting``.

    A clip of ``clip_seconds`` (one sentence) encodes its conditions once for the speech step, and
    again for every window when ``encode_per_window``.
    """
    flops = cost.flops()
    windows = VIDEO_FPS / cost.frames  # per second of video
    branches = 2 if setting.guided else 1
    calls = setting.steps * (1 if setting.batched or not setting.guided else 2) * windows
    encodes = 1 / clip_seconds + (windows if setting.encode_per_window else 0.0)
    total = (setting.steps * branches * windows * flops["denoiser call"] + VIDEO_FPS * flops["decode frame"]
             + windows * flops["window inputs"] + encodes * flops["encoders"]
             + MEL_FRAMES_PER_SECOND * flops["speech per mel frame"])
    rtf = total / (H100_PEAK[setting.dtype] * UTILISATION)
    batch = 2 if setting.guided and setting.batched else 1
    activations = cost.activation_peak(setting.dtype, batch, setting.decode_slice or cost.frames)
    weights = cost.parameters * (2 if setting.dtype == "bf16" else 4)
    return {"tflop_per_s": total / 1e12, "calls_per_s": calls, "rtf": rtf, "weights_gib": weights / 2**30,
            "activations_gib": activations / 2**30, "peak_gib": (weights + activations) / 2**30}


def generation_table(clip_seconds: float = 5.0) -> list[tuple[Setting, dict[str, float]]]:
    """Print the cost of every :data:`SETTINGS` entry and a last line with the fastest setting's."""
    cost = GenerationCost()
    flops = cost.flops()
    print(f"\ngeneration cost of ete.yaml at 512x512, {VIDEO_FPS} fps, {cost.frames}-frame windows, counted on the "
          f"meta device ({cost.parameters / 1e6:,.1f} M parameters with the vocoder):")
    print("  " + ", ".join(f"{name} {value / 1e12:.3f} TFLOP" if value > 1e11 else f"{name} {value / 1e9:.2f} GFLOP"
                           for name, value in flops.items()))
    print(f"  a {clip_seconds:g} s clip; implied real-time factor on one H100 at {UTILISATION:.0%} of "
          f"{H100_PEAK['bf16'] / 1e12:.0f} TFLOP/s (bf16) or {H100_PEAK['fp32'] / 1e12:.0f} (fp32 as TF32)")
    print(f"| setting | TFLOP per s of video | denoiser calls per s | implied H100 RTF | weights GiB "
          f"| activations GiB | peak GiB |\n|---|---|---|---|---|---|---|")
    rows = []
    for setting in SETTINGS:
        row = setting_cost(cost, setting, clip_seconds)
        rows.append((setting, row))
        print(f"| {setting.name} | {row['tflop_per_s']:,.1f} | {row['calls_per_s']:.1f} | {row['rtf']:.2f} | "
              f"{row['weights_gib']:.2f} | {row['activations_gib']:.2f} | {row['peak_gib']:.2f} |")
    fastest, best = min(rows, key=lambda r: r[1]["rtf"])
    guided = min((r for s, r in rows if s.guided), key=lambda r: r["rtf"])
    print(f"fastest setting ({fastest.name}): implied H100 RTF {best['rtf']:.2f}, peak {best['peak_gib']:.1f} GiB "
          f"(guided: RTF {guided['rtf']:.2f}, {guided['peak_gib']:.1f} GiB); target RTF <= 1.0, <= 12 GB")
    return rows


def parameter_table(name: str, configs: tuple[str, ...], overrides: dict[str, Any]) -> Optional[dict]:
    """Print and return the parameter counts of one configuration (built on the meta device)."""
    from experiments.fit import build_network

    with torch.device("meta"):  # sizes only: nothing is allocated
        net = build_network(*configs, **overrides)
    counts = count_parameters(net)
    print(f"\n{name}: parameters per component (all / trainable)")
    for component, (total, trainable) in counts.items():
        print(f"  {component:<28} {total:>14,} {trainable:>14,}")
    new = sum(t for c, (_, t) in counts.items() if c not in (*PRETRAINED_PARTS, "total"))
    print(f"  trainable in all vs the paper's {PAPER_PARAMETERS:,}: x{counts['total'][1] / PAPER_PARAMETERS:,.2f}")
    print(f"  trainable in the parts new in NFY (not {', '.join(PRETRAINED_PARTS)}): {new:,} "
          f"(x{new / PAPER_PARAMETERS:,.2f} the paper's figure)")
    return counts


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="NFY model size and speed")
    parser.add_argument("--skip-paper", action="store_true", help="only the tiny configuration")
    parser.add_argument("--memory-gib", type=float, default=24.0, help="address-space limit per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-tiny-speed", action="store_true", help="no tiny step/generation timing")
    parser.add_argument("--skip-paper-generation", action="store_true", help="no paper-size generation timing")
    parser.add_argument("--generation-only", action="store_true",
                        help="only the generation cost table (FLOPs, memory, implied H100 RTF; about a minute)")
    parser.add_argument("--clip-seconds", type=float, default=5.0, help="clip length the cost table assumes")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # diffusers' notes on casting the meta-device UNet
    if args.generation_only:
        generation_table(args.clip_seconds)
        return 0
    from experiments.fit import merged_config

    data = merged_config(*TINY)["data"]["init_args"]
    tiny = {k: data[k] for k in PAPER_DATA}
    parameter_table("tiny (ete.yaml + tiny.yaml)", TINY, tiny)
    if not args.skip_paper:
        paper = _paper_overrides()
        parameter_table("paper (ete.yaml" + (", pretrained parts as random stand-ins)" if paper.keys() - PAPER_DATA.keys()
                                             else ")"), PAPER, paper)
    if not args.skip_tiny_speed:
        _speed("tiny", TINY, tiny, args, batch_size=8, frames=None, seconds=2.0, steps=10)
    if not args.skip_paper:
        _paper_speed(args, paper)
    generation_table(args.clip_seconds)
    return 0


def _paper_overrides() -> dict[str, Any]:
    """ete.yaml as it is when its pretrained parts load, else with :data:`PAPER_SHAPED` stand-ins."""
    from experiments.fit import build_network

    try:
        build_network(*PAPER, **PAPER_DATA)
        return dict(PAPER_DATA)
    except Exception as err:  # noqa: BLE001 - any loader failure means: not available offline
        print(f"\nete.yaml's pretrained parts are not available here ({type(err).__name__}: {str(err)[:160]}...);"
              f" using random stand-ins shaped like them")
        return {**PAPER_DATA, **PAPER_SHAPED}


def _speed(name, configs, overrides, args, batch_size, frames, seconds, steps, generation=True, repeats=4,
           train=True) -> dict:
    """Print one training-step measurement and/or one generation measurement."""
    from experiments.fit import build_network

    with torch.device("meta"):
        net = build_network(*configs, **overrides)
    frames = frames or int(net.motion_frames) + int(net.num_frames)
    result: dict[str, Any] = {}
    if train:
        result["step"] = _train_speed(name, configs, overrides, args, batch_size, frames, seconds, repeats, net)
    if generation:
        gen = run_isolated(_generation_job, (configs, overrides, seconds, steps, args.threads), args.memory_gib)
        print(f"\n{name}: generation of {seconds} s, {steps} DDIM steps per window, {args.threads} threads")
        print("  " + (f"{gen['seconds']:.2f} s for {gen['media_s']:.2f} s -> real-time factor {gen['rtf']:.2f} "
                      f"(peak RSS {gen['peak_rss_gib']:.2f} GiB)" if gen["ok"] else f"failed: {gen['error']}"))
        result["generation"] = gen
    return result


def _train_speed(name, configs, overrides, args, batch_size, frames, seconds, repeats, net) -> dict:
    step = run_isolated(_train_step_job, (configs, overrides, batch_size, frames, seconds, args.threads, repeats),
                        args.memory_gib)
    print(f"\n{name}: training step, batch {batch_size}, {frames} frames of {net.image_size}px, {seconds} s audio, "
          f"{args.threads} threads")
    print("  " + (f"{step['step_s']:.3f} s/step (first {step['first_step_s']:.2f} s), peak RSS "
                  f"{step['peak_rss_gib']:.2f} GiB" if step["ok"] else f"did not fit: {step['error']}"))
    return step


def _paper_speed(args, overrides) -> None:
    """Paper-size training steps from the smallest upwards (batch 1 x 4 frames ... batch 8 x 18 frames)
    until one does not fit, then one generation window."""
    fitted = None
    for batch_size, frames in ((1, 4), (1, 10), (1, 18), (2, 18), (4, 18), (8, 18)):
        result = _speed(f"paper (batch {batch_size}, {frames} frames)", PAPER, overrides, args,
                        batch_size=batch_size, frames=frames, seconds=2.0, steps=1, generation=False, repeats=2)
        if not result["step"]["ok"]:
            break
        fitted = (batch_size, frames)
    if fitted is None:
        print(f"  no paper-size training step fits in {args.memory_gib:g} GiB on CPU; trying smaller frames")
        for size in (384, 256, 128):
            result = _speed(f"paper at {size}px (batch 1, 4 frames)", PAPER, {**overrides, "image_size": size}, args,
                            batch_size=1, frames=4, seconds=2.0, steps=1, generation=False, repeats=2)
            if result["step"]["ok"]:
                print(f"  the largest image size tried whose step fits in {args.memory_gib:g} GiB: {size}px "
                      "(batch 1, 4 frames)")
                break
    elif fitted != (8, 18):
        print(f"  the paper's step (batch 8, 18 frames) does not fit in {args.memory_gib:g} GiB on CPU; the largest "
              f"tried that fits: batch {fitted[0]}, {fitted[1]} frames")
    if args.skip_paper_generation:
        return
    _speed("paper", PAPER, overrides, args, batch_size=1, frames=None, seconds=2.0, steps=1, train=False)
    print("  (generation with 1 DDIM step per window: the video part costs about that many times more at 25-40 steps)")


if __name__ == "__main__":
    raise SystemExit(main())
