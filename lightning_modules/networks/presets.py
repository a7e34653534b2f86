"""Named sizes of :class:`NFYNetwork`: ``tiny`` (CPU tests, random init) and ``paper`` (pretrained parts).

``paper`` is the network of ``experiments/configs/ete.yaml`` (read from that file, with the values
the DataModule links into the network), the configuration that is trained: 512 x 512 frames in
16-frame windows with 2 motion frames, 768-wide tokens, Wav2Vec2-base, the SD VAE (ft-MSE), GPT-2
small, SD-1.5 UNet + AnimateDiff motion adapter, speechbrain's LibriTTS 16 kHz HiFi-GAN.

:func:`parameter_counts` reports the size of each component without any download: the pretrained
parts are built from the library default configurations that equal those checkpoints' architectures,
on the meta device (no memory is allocated).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

import torch
import yaml
from diffusers import (
    AutoencoderKL,
    MotionAdapter,
    UNet2DConditionModel,
    UNetMotionModel,
)
from torch import nn
from transformers import GPT2Config, GPT2Model, Wav2Vec2Config, Wav2Vec2Model

from lightning_modules.networks.nfy import NFYNetwork
from lightning_modules.networks.video_denoiser import widen_conv_in
from lightning_modules.networks.vocoder import hifigan_generator

TINY: dict[str, Any] = {
    "vocab_size": 64, "image_size": 32, "num_frames": 4, "motion_frames": 2, "dim": 16, "heads": 2, "entangled_layers": 1,
    "max_text_len": 64, "audio_sequence_channels": 16, "audio_sequence_stages": 2, "wav2vec_width": 16, "wav2vec_layers": 1,
    "vae_width": 8, "vae_levels": 2, "patch_size": 4, "decoder_width": 16, "decoder_layers": 1, "decoder_heads": 2,
    "max_decoder_positions": 1024, "unet_width": 16, "unet_levels": 2, "unet_cross_dim": 16,
}
"""Random-init CPU configuration: 1-2 layers, 2 heads, widths 8-16, 4 frames of 32 x 32."""

PAPER_CONFIG: Path = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "ete.yaml"
"""The paper's run configuration, the one source of :data:`PAPER`."""
LINKED_FROM_DATA: tuple[str, ...] = ("vocab_size", "image_size", "num_frames", "motion_frames")
"""Network arguments that a run takes from its DataModule (``experiments.fit`` links them)."""


def _config_network(path: Path) -> dict[str, Any]:
    """The network's init args in the run config at ``path``, with the values linked from its ``data``."""
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    data = config["data"]["init_args"]
    return {**config["model"]["init_args"]["net"]["init_args"], **{k: data[k] for k in LINKED_FROM_DATA}}


PAPER: dict[str, Any] = _config_network(PAPER_CONFIG)
"""ete.yaml's network; the hub ids may be replaced by local folders holding the same files."""

PRESETS: dict[str, dict[str, Any]] = {"tiny": TINY, "paper": PAPER}

PRETRAINED_PARTS: dict[str, str] = {
    "wav2vec": "audio_profile_encoder.wav2vec", "vae": "appearance_encoder.vae", "gpt2": "audio_decoder.gpt",
    "unet": "video_denoiser.unet", "vocoder": "vocoder",
}
"""Preset argument -> submodule of NFYNetwork it loads."""


SD15_UNET: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280), "attention_head_dim": 8, "cross_attention_dim": 768,
    "norm_num_groups": 32,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
}
"""``unet/config.json`` of stable-diffusion-v1-5 (architecture keys)."""
ANIMATEDIFF_V152: dict[str, Any] = {
    "block_out_channels": (320, 640, 1280, 1280), "motion_layers_per_block": 2,
    "motion_mid_block_layers_per_block": 1, "motion_num_attention_heads": 8, "motion_norm_num_groups": 32,
    "motion_max_seq_length": 32, "use_motion_mid_block": True,
}
"""``config.json`` of guoyww/animatediff-motion-adapter-v1-5-2."""
SD_VAE_FT_MSE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "sample_size": 512,
    "block_out_channels": (128, 256, 512, 512), "norm_num_groups": 32, "scaling_factor": 0.18215,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
}
"""``config.json`` of stabilityai/sd-vae-ft-mse."""
GPT2_SMALL: dict[str, Any] = {"n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024, "vocab_size": 50257}
"""``config.json`` of gpt2 (architecture keys)."""
WAV2VEC2_BASE: dict[str, Any] = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "feat_extract_norm": "group", "do_stable_layer_norm": False, "conv_dim": (512,) * 7,
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_stride": (5, 2, 2, 2, 2, 2, 2), "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
}
"""``config.json`` of facebook/wav2vec2-base (architecture keys)."""


@contextlib.contextmanager
def hub_architectures() -> Iterator[None]:
    """Within the block, the pretrained parts' ``from_pretrained`` build their architecture at random init.

    Every hub id or folder of a UNet, motion adapter, VAE, GPT-2 or Wav2Vec2 then gives the model of
    the checkpoint the paper uses (:data:`SD15_UNET`, :data:`ANIMATEDIFF_V152`, :data:`SD_VAE_FT_MSE`,
    :data:`GPT2_SMALL`, :data:`WAV2VEC2_BASE`), keyword arguments applied to its config; nothing is read
    or downloaded. With ``torch.device("meta")`` this builds ete.yaml's network at its real size for
    memory and FLOP accounting.
    """
    def diffusers_loader(cls, config):
        return lambda source, subfolder=None, **kwargs: cls.from_config({**config, **kwargs})

    def transformers_loader(cls, config_cls, config):
        return lambda source, **kwargs: cls(config_cls(**{**config, **kwargs}))

    loaders = {
        UNet2DConditionModel: diffusers_loader(UNet2DConditionModel, SD15_UNET),
        MotionAdapter: diffusers_loader(MotionAdapter, ANIMATEDIFF_V152),
        AutoencoderKL: diffusers_loader(AutoencoderKL, SD_VAE_FT_MSE),
        GPT2Model: transformers_loader(GPT2Model, GPT2Config, GPT2_SMALL),
        Wav2Vec2Model: transformers_loader(Wav2Vec2Model, Wav2Vec2Config, WAV2VEC2_BASE),
    }
    with contextlib.ExitStack() as stack:
        for cls, loader in loaders.items():
            stack.enter_context(mock.patch.object(cls, "from_pretrained", loader))
        yield


def preset(name: str, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of :class:`NFYNetwork` for preset ``name``, updated by ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return {**PRESETS[name], **overrides}


def _count(module: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def _paper_pretrained_architectures(train_vae: bool, cond_channels: int) -> dict[str, nn.Module]:
    """The paper's pretrained parts from the library default configs (equal to the checkpoints' shapes),
    frozen as NFYNetwork freezes them (Wav2Vec2 feature encoder, VAE unless fine-tuned, vocoder)."""
    vae = AutoencoderKL(  # the SD / sd-vae-ft-mse configuration
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
    )
    unet = UNetMotionModel.from_unet2d(UNet2DConditionModel(cross_attention_dim=768), MotionAdapter())
    unet = widen_conv_in(unet, cond_channels)
    wav2vec = Wav2Vec2Model(Wav2Vec2Config())  # = facebook/wav2vec2-base
    wav2vec.freeze_feature_encoder()
    vae.requires_grad_(train_vae)
    gpt2 = GPT2Model(GPT2Config(add_cross_attention=True))  # GPT-2 small + new cross-attention layers
    gpt2.wte = None  # AudioDecoder feeds continuous frames: GPT-2's token table is dropped
    return {
        "wav2vec": wav2vec, "vae": vae, "unet": unet,
        "gpt2": gpt2,
        "vocoder": hifigan_generator(512).requires_grad_(False),
    }


def parameter_counts(name: str = "paper", **overrides: Any) -> dict[str, int]:
    """Parameters per component of preset ``name`` (meta device: nothing is allocated or downloaded).

    The network's own modules come from an NFYNetwork of the preset's sizes whose pretrained parts are
    random stand-ins of the same widths; those stand-ins are then replaced, in the counts, by the
    architectures of the real checkpoints (``paper``) or counted as built (``tiny``).

    Returns:
        ``{component: parameters}`` with ``"trainable"`` (the network's own, non-frozen parameters plus
        fine-tuned pretrained parts) and ``"total"``.
    """
    kwargs = preset(name, **overrides)
    for source in ("wav2vec", "vae", "gpt2", "unet", "motion_adapter", "vocoder"):
        kwargs.pop(source, None)  # random stand-ins: nothing is loaded
    stand_in = {"wav2vec_width": 768, "decoder_width": 768, "decoder_heads": 12} if name == "paper" else {}
    with torch.device("meta"):
        net = NFYNetwork(**{**kwargs, **stand_in})
        real = {}
        if name == "paper":
            cond_channels = net.video_denoiser.unet.conv_in.in_channels - 4
            real = _paper_pretrained_architectures(bool(kwargs.get("train_vae", False)), cond_channels)
    counts = {child_name: _count(child) for child_name, child in net.named_children()}
    counts["queries"] = sum(p.numel() for p in net.parameters(recurse=False))  # learned queries, DC slots
    trainable = _count(net, trainable=True)
    for key, path in PRETRAINED_PARTS.items():
        if key in real:
            stand = net.get_submodule(path)
            counts[path.split(".")[0]] += _count(real[key]) - _count(stand)
            trainable += _count(real[key], trainable=True) - _count(stand, trainable=True)
    counts["total"] = sum(counts.values())
    counts["trainable"] = trainable
    return counts
