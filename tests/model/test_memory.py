"""Memory switches of the network at tiny scale on CPU: each cuts the bytes it claims to cut.

Saved-activation bytes are counted with :class:`lightning_modules.memory.SavedTensorMeter`
(``saved_tensors_hooks``); no timing is asserted.
"""

from __future__ import annotations

import pytest
import torch
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

from lightning_modules.memory import LiveTensorMeter, SavedTensorMeter, parameter_bytes
from lightning_modules.networks import AppearanceEncoder, AudioDecoder, AudioProfileEncoder, VideoDenoiser
from lightning_modules.networks.video_denoiser import CheckpointedMotionModule
from tests.model.test_networks import batch, losses, tiny_net


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


def test_ete_48gb_builds_the_8bit_optimizer_when_bitsandbytes_is_installed() -> None:
    pytest.importorskip("bitsandbytes")
    from jsonargparse import ArgumentParser
    from lightning.pytorch.cli import OptimizerCallable

    from experiments.fit import merged_config

    optimizer = merged_config("ete.yaml", "ete_48gb.yaml")["model"]["init_args"]["optimizer"]
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--optimizer", type=OptimizerCallable)
    build = parser.instantiate_classes(parser.parse_object({"optimizer": optimizer})).optimizer
    assert type(build([torch.nn.Parameter(torch.zeros(4))])).__name__ == "AdamW8bit"


def test_fsdp_wrap_policy_names_blocks_of_the_paper_network() -> None:
    import importlib

    from experiments.fit import build_network, merged_config
    from lightning_modules.networks.presets import hub_architectures

    strategy = merged_config("ete.yaml", "fsdp.yaml")["trainer"]["strategy"]
    assert strategy["class_path"] == "lightning.pytorch.strategies.FSDPStrategy"
    names = strategy["init_args"]["auto_wrap_policy"]
    classes = [getattr(importlib.import_module(n.rsplit(".", 1)[0]), n.rsplit(".", 1)[1]) for n in names]
    with hub_architectures(), torch.device("meta"):
        net = build_network("ete.yaml", image_size=512, num_frames=16, motion_frames=2, vocab_size=512, vocoder=None)
    present = {type(m) for m in net.modules()}
    assert all(cls in present for cls in classes), [c.__name__ for c in classes if c not in present]
    wrapped = {part for part in ("video_denoiser", "audio_decoder", "audio_profile_encoder")
               if any(isinstance(m, tuple(classes)) for m in getattr(net, part).modules())}
    assert wrapped == {"video_denoiser", "audio_decoder", "audio_profile_encoder"}
