"""Latent video denoiser (paper Sec. 3.3): diffusers ``UNetMotionModel`` with EC and DC cross-attention.

The UNet sees, per frame, the noisy latent concatenated with its conditions (channel order)::

    [ noisy latent (4) | reference latent (4) | motion latents (4 M) | face, lip mask (2) | has-motion (1) ]

and cross-attends (``encoder_hidden_states``, one sequence per frame) to

* EC, embedding cross-attention: the video-side entangled tokens (the same for every frame);
* DC, diffusion cross-attention (audio -> video): the audio decoder's states of that frame's time
  window. Their attention output is multiplied by the lip mask on each feature map's grid
  (:class:`GatedCrossAttnProcessor`), so speech drives the mouth region.

With neither EC nor DC the cross-attention layers receive nothing and add nothing.
"""

from __future__ import annotations

import math

import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn
from torch.utils.checkpoint import checkpoint

from lightning_modules.networks.layers import load_pretrained


class GatedCrossAttnProcessor(AttnProcessor2_0):
    """Cross-attention split into EC tokens (ungated) and DC tokens (lip-mask gated); self-attention as usual.

    ``cross_attention_kwargs`` of the UNet call carry ``ec_tokens`` (how many leading tokens of
    ``encoder_hidden_states`` are EC tokens), ``lip_gate`` (N, 1, h, w) on the latent grid and
    ``ec_bias`` (N, 1, ec_tokens), an additive attention bias that hides padded EC tokens.
    """

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 ec_tokens: int | None = None, lip_gate: torch.Tensor | None = None,
                 ec_bias: torch.Tensor | None = None) -> torch.Tensor:
        if encoder_hidden_states is None or ec_tokens is None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        out = torch.zeros_like(hidden_states)  # (N, hw, C); nothing to attend to adds nothing
        if ec_tokens > 0:
            out = out + super().__call__(attn, hidden_states, encoder_hidden_states[:, :ec_tokens], ec_bias)
        if encoder_hidden_states.shape[1] > ec_tokens:
            audio = super().__call__(attn, hidden_states, encoder_hidden_states[:, ec_tokens:])  # (N, hw, C)
            out = out + audio * _gate_on_grid(lip_gate, hidden_states.shape[1])
        return out


def _gate_on_grid(gate: torch.Tensor | None, tokens: int) -> torch.Tensor | float:
    """Resize the (N, 1, h, w) gate to a feature map of ``tokens`` positions -> (N, tokens, 1)."""
    if gate is None:
        return 1.0
    h, w = gate.shape[-2:]
    scale = math.sqrt(h * w / tokens)
    size = (max(1, round(h / scale)), max(1, round(w / scale)))
    return nn.functional.interpolate(gate, size=size, mode="area").flatten(2).transpose(1, 2)  # (N, tokens, 1)


class VideoDenoiser(nn.Module):
    """Wraps a ``UNetMotionModel`` whose input carries the conditions and whose attention is gated.

    Args:
        cond_channels: channels appended to the 4-channel noisy latent.
        cross_dim: width of the cross-attention tokens.
        pretrained_unet: hub id/folder of an SD-1.5-style ``UNet2DConditionModel`` (``subfolder`` "unet"
            is tried first); with ``pretrained_motion_adapter`` (AnimateDiff ``MotionAdapter``) it becomes a
            ``UNetMotionModel``. ``None`` builds a random UNet of ``width``/``levels``/``heads``.
        width, levels, heads, layers_per_block: size of the random-init UNet (width doubles per level).
        max_frames: longest temporal sequence of the motion modules.
        cross_attention: False when neither EC nor DC feeds the UNet: its cross-attention layers then
            add nothing, and are frozen so that they are no trainable parameters either.
        zero_output: start the random UNet's output convolution at zero (the prediction is 0 until trained).
        gradient_checkpointing: recompute activations in the backward pass instead of keeping them: diffusers'
            checkpointing of the ResNet and transformer blocks, plus every motion module (which diffusers'
            switch leaves out, :class:`CheckpointedMotionModule`).
        freeze_spatial: freeze the pretrained (SD-1.5) spatial layers; the motion modules and the widened input
            convolution, which carry what is new (time and conditions), stay trainable.
    """

    def __init__(self, cond_channels: int, cross_dim: int, pretrained_unet: str | None = None,
                 pretrained_motion_adapter: str | None = None, width: int = 32, levels: int = 2, heads: int = 2,
                 layers_per_block: int = 1, max_frames: int = 32, cross_attention: bool = True,
                 zero_output: bool = False, gradient_checkpointing: bool = False,
                 freeze_spatial: bool = False) -> None:
        super().__init__()
        if (pretrained_unet is None) != (pretrained_motion_adapter is None):
            raise ValueError("pretrained_unet and pretrained_motion_adapter are given together or not at all, got "
                             f"{pretrained_unet!r} and {pretrained_motion_adapter!r}")
        if pretrained_unet is not None:
            self.unet = _load_motion_unet(pretrained_unet, pretrained_motion_adapter, cond_channels, cross_dim)
        else:
            channels = tuple(width * 2 ** i for i in range(levels))
            self.unet = UNetMotionModel(
                in_channels=4 + cond_channels, out_channels=4,
                down_block_types=("CrossAttnDownBlockMotion",) * (levels - 1) + ("DownBlockMotion",),
                up_block_types=("UpBlockMotion",) + ("CrossAttnUpBlockMotion",) * (levels - 1),
                block_out_channels=channels, layers_per_block=layers_per_block, norm_num_groups=min(32, width),
                cross_attention_dim=cross_dim, num_attention_heads=heads, motion_num_attention_heads=heads,
                motion_max_seq_length=max_frames,
            )
            if zero_output:  # as DiT's final layer: start by predicting 0 rather than a random field
                nn.init.zeros_(self.unet.conv_out.weight)
                nn.init.zeros_(self.unet.conv_out.bias)
        self.unet.set_attn_processor(GatedCrossAttnProcessor())
        if not cross_attention:
            for block in self.unet.modules():
                if isinstance(block, BasicTransformerBlock) and getattr(block.attn2, "is_cross_attention", False):
                    block.attn2.requires_grad_(False)
                    block.norm2.requires_grad_(False)
        self.cross_dim = int(self.unet.config.cross_attention_dim)
        if freeze_spatial:
            _freeze_spatial_layers(self.unet)
        if gradient_checkpointing:
            enable_unet_checkpointing(self.unet)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, tokens: torch.Tensor, ec_tokens: int,
                lip_gate: torch.Tensor | None, ec_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise (or v) of the noisy latent channels.

        Args:
            sample: (B, 4 + cond_channels, F, h, w) noisy latents with their conditions.
            timestep: (B,) or scalar diffusion step.
            tokens: (B F, N, cross_dim) per-frame cross-attention tokens, EC first (``ec_tokens`` of them)
                then DC; N may be 0.
            lip_gate: (B F, 1, h, w) lip mask on the latent grid for the DC tokens.
            ec_mask: (B F, ec_tokens) bool, True on real EC tokens (``None``: all real).

        Returns:
            (B, 4, F, h, w).
        """
        ec_bias = None
        if ec_mask is not None and ec_tokens > 0:
            ec_bias = torch.zeros(ec_mask.shape, dtype=tokens.dtype, device=tokens.device)
            ec_bias = ec_bias.masked_fill(~ec_mask, torch.finfo(tokens.dtype).min)[:, None]  # (B F, 1, ec_tokens)
        kwargs = {"ec_tokens": ec_tokens, "lip_gate": lip_gate, "ec_bias": ec_bias}
        return self.unet(sample, timestep, encoder_hidden_states=tokens, cross_attention_kwargs=kwargs).sample


class CheckpointedMotionModule(AnimateDiffTransformer3D):
    """An AnimateDiff motion module whose forward is recomputed in the backward pass (non-reentrant).

    diffusers' ``enable_gradient_checkpointing`` covers the ResNets and the spatial transformer blocks
    of a ``UNetMotionModel`` but calls the motion modules plainly, so their attention over frames keeps
    every activation. Instances are switched to this class in place (:func:`enable_unet_checkpointing`):
    same parameters, same state-dict keys.
    """

    def forward(self, *args, **kwargs):  # noqa: D102 - AnimateDiffTransformer3D.forward
        if not torch.is_grad_enabled():
            return super().forward(*args, **kwargs)
        return checkpoint(super().forward, *args, use_reentrant=False, **kwargs)


def enable_unet_checkpointing(unet: UNetMotionModel) -> UNetMotionModel:
    """Activation checkpointing of a whole ``UNetMotionModel``: diffusers' switch plus the motion modules."""
    unet.enable_gradient_checkpointing()
    for module in unet.modules():
        if type(module) is AnimateDiffTransformer3D:
            module.__class__ = CheckpointedMotionModule
    return unet


def _freeze_spatial_layers(unet: UNetMotionModel) -> None:
    """Freeze every UNet parameter outside the motion modules and the input convolution."""
    unet.requires_grad_(False)
    unet.conv_in.requires_grad_(True)
    for module in unet.modules():
        if isinstance(module, AnimateDiffTransformer3D):
            module.requires_grad_(True)


def _load_motion_unet(unet_source: str, adapter_source: str, cond_channels: int, cross_dim: int) -> UNetMotionModel:
    """SD-1.5 UNet + AnimateDiff motion adapter, its input conv widened (zero weights) for the conditions."""
    # a Stable Diffusion folder holds the UNet in unet/; a bare UNet folder at its top
    unet = load_pretrained("UNet2DConditionModel video denoiser", unet_source, UNet2DConditionModel.from_pretrained,
                           subfolders=("unet", None))
    adapter = load_pretrained("AnimateDiff motion adapter", adapter_source, MotionAdapter.from_pretrained)
    if int(unet.config.cross_attention_dim) != cross_dim:
        raise ValueError(f"pretrained UNet {unet_source!r} has cross_attention_dim={unet.config.cross_attention_dim}, "
                         f"the network was configured with {cross_dim}")
    return widen_conv_in(UNetMotionModel.from_unet2d(unet, adapter), cond_channels)


def widen_conv_in(motion: UNetMotionModel, cond_channels: int) -> UNetMotionModel:
    """Append ``cond_channels`` zero-initialised input channels to a pretrained UNet's first conv."""
    old = motion.conv_in
    new = nn.Conv2d(old.in_channels + cond_channels, old.out_channels, old.kernel_size, padding=old.padding)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight  # conditions start with no effect
        new.bias.copy_(old.bias)
    motion.conv_in = new
    motion.register_to_config(in_channels=old.in_channels + cond_channels)
    return motion
