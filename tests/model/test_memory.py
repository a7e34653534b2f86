"""Memory switches of the network at tiny scale on CPU: each cuts the bytes it claims to cut.

Saved-activation bytes are counted with :class:`lightning_modules.memory.SavedTensorMeter`
(``saved_tensors_hooks``), 8-bit AdamW's state from the optimiser's own tensors after real steps
(bitsandbytes runs its 8-bit optimisers on the CPU since 0.50); no timing is asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

from datamodules.demo_corpus import build_demo_corpus
from lightning_modules.memory import LiveTensorMeter, SavedTensorMeter, parameter_bytes
from lightning_modules.networks import AppearanceEncoder, AudioDecoder, AudioProfileEncoder, VideoDenoiser
from lightning_modules.networks.video_denoiser import CheckpointedMotionModule
from tests.model.test_networks import batch, losses, tiny_net, total_loss


REPO = Path(__file__).resolve().parents[2]


def saved_bytes(module: torch.nn.Module, run) -> int:
    """Bytes ``run()`` saves for backward with ``module`` in training mode."""
    module.train()
    with SavedTensorMeter(module) as meter:
        run()
    return meter.saved_bytes


def _denoiser(**kwargs) -> VideoDenoiser:
    torch.manual_seed(0)
    return VideoDenoiser(cond_channels=6, cross_dim=16, width=16, levels=2, heads=2, **kwargs)


def _denoiser_call(net: VideoDenoiser):
    sample = torch.randn(2, 10, 4, 16, 16, requires_grad=True)
    tokens = torch.randn(8, 3, 16)
    return lambda: net(sample, torch.tensor([10, 500]), tokens, 0, torch.ones(8, 1, 16, 16)).sum()


def test_unet_checkpointing_covers_the_motion_modules_and_keeps_the_gradients() -> None:
    plain, full = _denoiser(), _denoiser(gradient_checkpointing=True)
    diffusers_only = _denoiser()
    diffusers_only.unet.enable_gradient_checkpointing()  # ResNets and spatial blocks, not motion modules
    sizes = {name: saved_bytes(net, _denoiser_call(net))
             for name, net in (("plain", plain), ("diffusers", diffusers_only), ("full", full))}
    assert sizes["full"] < sizes["diffusers"] < sizes["plain"]
    assert sizes["full"] < 0.5 * sizes["plain"], sizes
    assert any(type(m) is CheckpointedMotionModule for m in full.unet.modules())
    assert not any(type(m) is AnimateDiffTransformer3D for m in full.unet.modules())
    assert full.state_dict().keys() == plain.state_dict().keys()  # same checkpoints load either way
    grads = []
    for net in (plain, full):
        torch.manual_seed(1)
        _denoiser_call(net)().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_vae_decoder_checkpointing_cuts_the_pixel_loss_activations() -> None:
    sizes = []
    for flag in (False, True):
        torch.manual_seed(0)
        vae = AppearanceEncoder(None, width=16, levels=3, gradient_checkpointing=flag)  # frozen, as in ete.yaml
        latents = torch.randn(4, 4, 8, 8, requires_grad=True)
        sizes.append(saved_bytes(vae, lambda: vae.decode(latents)))
    assert sizes[1] < 0.5 * sizes[0], sizes


@pytest.mark.parametrize("part", ["gpt2", "wav2vec"])
def test_transformer_checkpointing_cuts_saved_activations(part: str) -> None:
    sizes = []
    for flag in (False, True):
        torch.manual_seed(0)
        if part == "gpt2":
            net = AudioDecoder(16, width=32, layers=4, heads=2, gradient_checkpointing=flag, prenet_dropout=0.0)
            prefix, mel, video = torch.randn(2, 5, 16), torch.randn(2, 80, 40), torch.randn(2, 6, 16)
            run = lambda: net(prefix, torch.ones(2, 5, dtype=torch.bool), mel, video)["mel"].sum()  # noqa: E731
        else:
            net = AudioProfileEncoder(16, hidden=32, layers=4, heads=2, gradient_checkpointing=flag)
            wav = torch.randn(2, 32000)
            run = lambda: net(wav).sum()  # noqa: E731
        sizes.append(saved_bytes(net, run))
    assert sizes[1] < 0.8 * sizes[0], sizes


def test_network_passes_every_switch_down_and_saves_less() -> None:
    b = batch(2)
    plain = tiny_net()
    switched = tiny_net(checkpoint_unet=True, checkpoint_vae=True, checkpoint_gpt2=True, checkpoint_wav2vec=True)
    assert switched.audio_decoder.gpt.gradient_checkpointing
    assert switched.audio_profile_encoder.wav2vec.encoder.gradient_checkpointing
    assert switched.appearance_encoder.vae.decoder.gradient_checkpointing
    assert any(type(m) is CheckpointedMotionModule for m in switched.video_denoiser.unet.modules())
    sizes = [saved_bytes(net, lambda net=net: losses(net, b)) for net in (plain, switched)]
    assert sizes[1] < 0.5 * sizes[0], sizes


def test_freezing_switches_leave_only_the_new_parts_trainable() -> None:
    plain = tiny_net()
    frozen = tiny_net(freeze_unet=True, freeze_gpt2=True, freeze_wav2vec=True)
    unet = {n for n, p in frozen.video_denoiser.unet.named_parameters() if p.requires_grad}
    assert unet and all("motion_modules" in n or n.startswith("conv_in.") for n in unet)
    gpt = {n for n, p in frozen.audio_decoder.gpt.named_parameters() if p.requires_grad}
    assert gpt and all("crossattention" in n or "ln_cross_attn" in n for n in gpt)
    assert not any(p.requires_grad for p in frozen.audio_profile_encoder.wav2vec.parameters())
    assert frozen.audio_decoder.prenet[0].weight.requires_grad  # the parts around them still train
    before, after = parameter_bytes(plain), parameter_bytes(frozen)
    assert after["weights"] == before["weights"]
    assert after["gradients"] < before["gradients"] and after["optimizer"] < before["optimizer"]
    losses(frozen, batch(2))["denoise"].backward()  # the frozen parts still pass gradients through


def test_bf16_autocast_and_micro_batches_cut_saved_activations() -> None:
    net = tiny_net()
    full = saved_bytes(net, lambda: losses(net, batch(2)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = saved_bytes(net, lambda: losses(net, batch(2)))
    micro = saved_bytes(net, lambda: losses(net, batch(1)))
    assert half < 0.75 * full, (half, full)
    assert micro < 0.65 * full, (micro, full)


def test_meter_counts_attention_as_a_fused_kernel_on_the_meta_device() -> None:
    lengths = 256
    for device in ("cpu", "meta"):
        q = torch.randn(1, 2, lengths, 8, device=device, requires_grad=True)
        with SavedTensorMeter(torch.nn.Identity()) as meter:
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
        # q (shared by q, k, v), the output and a float32 log-sum-exp: never the 256 x 256 matrix
        assert meter.saved_bytes <= 2 * q.numel() * 4 + 2 * lengths * 4, (device, meter.saved_bytes)


def test_live_meter_peak_is_the_largest_set_of_tensors_alive_at_once() -> None:
    for device in ("cpu", "meta"):
        with torch.device(device):
            net = torch.nn.Sequential(torch.nn.Conv2d(4, 64, 3, padding=1), torch.nn.SiLU(),
                                      torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.Conv2d(64, 3, 3, padding=1))
            x = torch.randn(2, 4, 64, 64)
        with torch.no_grad(), LiveTensorMeter() as meter:
            out = net(x)
        # two 64-channel maps alive at once (a convolution's input and output), never all three
        assert meter.peak_bytes == 2 * 2 * 64 * 64 * 64 * 4, (device, meter.peak_bytes)
        assert meter.current == out.numel() * 4  # only the output is left


# ---------------------------------------------------------------------------------------- run configs
def test_ete_keeps_the_paper_batch_as_micro_batches_in_bf16_and_tiny_overrides_it_on_cpu() -> None:
    from benchmarks.memory import run_config

    ete, tiny = run_config(["ete.yaml"]), run_config(["ete.yaml", "tiny.yaml"])
    assert ete["precision"] == "bf16-mixed" and ete["checkpointing"]
    assert ete["micro_batch"] * ete["accumulate"] == 8 and ete["micro_batch"] == 1
    assert tiny["precision"] == "32-true" and not tiny["checkpointing"]
    assert tiny["micro_batch"] * tiny["accumulate"] == 8


def test_ete_48gb_selects_8bit_adamw_and_the_accounting_counts_its_state() -> None:
    from benchmarks.memory import fits, run_config

    run = run_config(["ete.yaml", "ete_48gb.yaml"])
    assert run["optimizer"] == "AdamW8bit" and run["optimizer_bytes"] == 2.0
    assert run_config(["ete.yaml"])["optimizer_bytes"] == 8.0
    assert fits(40.0) == {48: True, 80: True, 141: True} and fits(60.0) == {48: False, 80: True, 141: True}


@pytest.fixture(scope="module")
def ete_meta_net() -> torch.nn.Module:
    """ete.yaml's network at 512 px on the meta device, with the real checkpoints' architectures."""
    from experiments.fit import build_network
    from lightning_modules.networks.presets import hub_architectures

    with hub_architectures(), torch.device("meta"):
        return build_network("ete.yaml", image_size=512, num_frames=16, motion_frames=2, vocab_size=512, vocoder=None)


# ---------------------------------------------------------------------- 8-bit AdamW (ete_48gb.yaml)
def config_optimizer(*configs: str) -> Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]:
    """``model.init_args.optimizer`` of the merged ``configs``, built as the CLI builds it (a callable of
    the parameters)."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch.cli import OptimizerCallable

    from experiments.fit import merged_config

    optimizer = merged_config(*configs)["model"]["init_args"]["optimizer"]
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--optimizer", type=OptimizerCallable)
    return parser.instantiate_classes(parser.parse_object({"optimizer": optimizer})).optimizer


def state_bytes(optimizer: torch.optim.Optimizer) -> tuple[dict[int, int], int]:
    """Bytes of each parameter's optimiser state (keyed by ``id`` of the parameter), and bytes of the
    tensors several parameters share (bitsandbytes' quantisation maps), each tensor counted once."""
    owners: dict[int, set[int]] = {}
    for p, state in optimizer.state.items():
        for value in state.values():
            if torch.is_tensor(value):
                owners.setdefault(value.data_ptr(), set()).add(id(p))
    own, shared = {}, {}
    for p, state in optimizer.state.items():
        tensors = {v.data_ptr(): v.nbytes for v in state.values() if torch.is_tensor(v)}
        own[id(p)] = sum(n for ptr, n in tensors.items() if len(owners[ptr]) == 1)
        shared.update({ptr: n for ptr, n in tensors.items() if len(owners[ptr]) > 1})
    return own, sum(shared.values())


def _two_steps(*configs: str) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter], list[torch.Tensor], list[float]]:
    """Two optimiser steps of the configs' optimiser on the tiny network's summed losses; the optimiser,
    the trained parameters, their total updates and the loss before, between and after the steps."""
    net, b = tiny_net(), batch(2)
    params = [p for p in net.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    optimizer, trajectory = config_optimizer(*configs)(params), []
    for step in range(3):
        optimizer.zero_grad()
        torch.manual_seed(1)  # the same noise, timesteps and dropout at every evaluation
        loss = total_loss(losses(net, b))
        trajectory.append(loss.item())
        if step < 2:
            loss.backward()
            optimizer.step()
    return optimizer, params, [p.detach() - s for p, s in zip(params, start)], trajectory


def test_ete_48gb_8bit_adamw_keeps_a_quarter_of_adamw_state_and_steps_like_it() -> None:
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is the nfy[adam8bit] extra")
    adamw, params, adamw_moves, adamw_losses = _two_steps("ete.yaml")
    eight, params8, moves, losses8 = _two_steps("ete.yaml", "ete_48gb.yaml")
    assert type(adamw).__name__ == "AdamW" and type(eight).__name__ == "AdamW8bit"
    # bitsandbytes quantises the moments of tensors of min_8bit_size elements or more; smaller ones keep fp32
    quantised = [i for i, p in enumerate(params8) if p.numel() >= eight.args.min_8bit_size]
    for i, p in enumerate(params8):
        dtype = torch.uint8 if i in quantised else torch.float32
        assert eight.state[p]["state1"].dtype == eight.state[p]["state2"].dtype == dtype, (i, p.shape)
    numel = sum(params8[i].numel() for i in quantised)
    assert 0 < len(quantised) < len(params8) and numel > 0.5 * sum(p.numel() for p in params8)
    per_param = {
        name: sum(state_bytes(opt)[0][id(ps[i])] for i in quantised) / numel
        for name, opt, ps in (("AdamW", adamw, params), ("AdamW8bit", eight, params8))
    }
    from benchmarks.memory import OPTIMIZER_STATE_BYTES

    assert per_param["AdamW"] == pytest.approx(OPTIMIZER_STATE_BYTES["AdamW"], rel=1e-3), per_param
    assert per_param["AdamW8bit"] == pytest.approx(OPTIMIZER_STATE_BYTES["AdamW8bit"], rel=0.03), per_param
    assert per_param["AdamW"] / per_param["AdamW8bit"] > 3.9, per_param
    # it learns: the loss falls as much as with AdamW, each quantised weight moves as AdamW moves it
    assert losses8[0] > losses8[1] > losses8[2], losses8
    assert losses8[0] - losses8[2] > 0.95 * (adamw_losses[0] - adamw_losses[2]), (losses8, adamw_losses)
    ours, theirs = (torch.cat([m[i].flatten() for i in quantised]) for m in (moves, adamw_moves))
    assert bool((theirs != 0).all()) and (ours.sign() == theirs.sign()).float().mean() > 0.999
    assert (ours - theirs).norm() < 0.05 * theirs.norm()


def test_8bit_adamw_accounting_holds_on_the_paper_network(ete_meta_net: torch.nn.Module) -> None:
    """benchmarks/memory.py counts 2 bytes of 8-bit AdamW state per trained parameter: measured on the
    quantised tensors of the tiny network and applied to ete.yaml's trained tensors (fp32 moments for
    the small ones), the state comes within 3 % of that."""
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is the nfy[adam8bit] extra")
    from benchmarks.memory import run_config

    params = [p for p in tiny_net().parameters() if p.requires_grad]
    optimizer = config_optimizer("ete.yaml", "ete_48gb.yaml")(params)
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer.step()
    threshold, own = optimizer.args.min_8bit_size, state_bytes(optimizer)[0]
    quantised = [p for p in params if p.numel() >= threshold]
    rate = sum(own[id(p)] for p in quantised) / sum(p.numel() for p in quantised)
    trained = [p.numel() for p in ete_meta_net.parameters() if p.requires_grad]
    paper = sum(rate * n if n >= threshold else 8.0 * n for n in trained) / sum(trained)
    assert run_config(["ete.yaml", "ete_48gb.yaml"])["optimizer_bytes"] == pytest.approx(paper, rel=0.03), paper


MIN_8BIT_SIZE = 4096
"""bitsandbytes' default ``min_8bit_size`` (ete_48gb.yaml keeps it): smaller tensors keep fp32 moments."""


def _flat(state: dict) -> dict:
    """One parameter's optimiser state with nested dicts flattened (bitsandbytes nests its tensors in
    one for FSDP)."""
    flat = {}
    for key, value in state.items():
        flat.update(_flat(value) if isinstance(value, dict) else {key: value})
    return flat


@pytest.mark.slow
def test_fit_with_ete_48gb_on_the_cpu_checkpoints_uint8_moments(tmp_path: Path) -> None:
    """``experiments.fit --config ete.yaml --config tiny.yaml --config ete_48gb.yaml`` for 2 steps on a
    demo corpus: last.ckpt holds 8-bit AdamW's state, uint8 moments for every tensor of at least
    min_8bit_size elements and fp32 ones for the rest."""
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is the nfy[adam8bit] extra")
    corpus = build_demo_corpus(tmp_path / "corpus", num_clips=4, size=64, min_seconds=2.0, max_seconds=2.4,
                               num_workers=0, progress=False)
    args = [
        sys.executable, "-m", "experiments.fit", "--config", "ete.yaml", "--config", "tiny.yaml",
        "--config", "ete_48gb.yaml", f"--data.root={corpus}", "--data.batch_size=2", "--data.vocab_size=300",
        f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.max_steps=2", "--trainer.max_epochs=2", "--trainer.max_time=null",
        "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    (last,) = tmp_path.rglob("last.ckpt")
    (optimizer,) = torch.load(last, map_location="cpu", weights_only=True)["optimizer_states"]
    states = [_flat(state) for state in optimizer["state"].values()]
    assert states and all(state["step"] == 2 for state in states)
    for state in states:  # a moment has its parameter's shape, quantised or not
        dtype = torch.uint8 if state["state1"].numel() >= MIN_8BIT_SIZE else torch.float32
        assert state["state1"].dtype == state["state2"].dtype == dtype, (state["state1"].shape, state["state1"].dtype)
    assert any(state["state1"].dtype == torch.uint8 for state in states)


def test_fsdp_wrap_policy_names_blocks_of_the_paper_network(ete_meta_net: torch.nn.Module) -> None:
    import importlib

    from experiments.fit import merged_config

    strategy = merged_config("ete.yaml", "fsdp.yaml")["trainer"]["strategy"]
    assert strategy["class_path"] == "lightning.pytorch.strategies.FSDPStrategy"
    names = strategy["init_args"]["auto_wrap_policy"]
    classes = [getattr(importlib.import_module(n.rsplit(".", 1)[0]), n.rsplit(".", 1)[1]) for n in names]
    net = ete_meta_net
    present = {type(m) for m in net.modules()}
    assert all(cls in present for cls in classes), [c.__name__ for c in classes if c not in present]
    wrapped = {part for part in ("video_denoiser", "audio_decoder", "audio_profile_encoder")
               if any(isinstance(m, tuple(classes)) for m in getattr(net, part).modules())}
    assert wrapped == {"video_denoiser", "audio_decoder", "audio_profile_encoder"}
