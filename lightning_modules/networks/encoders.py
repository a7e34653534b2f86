"""The NFY encoders (paper Sec. 3.1-3.2): text, audio sequence, audio profile, appearance, structure.

Every encoder maps its input to tokens of width ``dim`` so that the entangled encoders can mix them:

* :class:`TextEncoder`: BPE ids (B, L) -> (B, L, D)
* :class:`AudioSequenceEncoder`: reference mel (B, 80, T) -> HiFi-GAN upsampling stack -> (B, 10, D)
* :class:`AudioProfileEncoder`: profile wav (B, 32000) -> Wav2Vec2 -> (B, 10, D)
* :class:`AppearanceEncoder`: image (B, 3, H, W) -> AutoencoderKL latent (B, 4, H/s, W/s) (+ decode)
* :class:`StructureEncoder`: face/lip masks (B, 2, H, W) -> mask tokens on the latent patch grid
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from speechbrain.lobes.models.HifiGAN import HifiganGenerator
from speechbrain.nnet.CNN import Conv1d
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from common.frozen import KeepsChildrenFrozen, freeze
from datamodules.conventions import N_MELS
from lightning_modules.networks.layers import (
    enable_checkpointing,
    load_pretrained,
    pool_tokens,
    reference_mel,
)


class TextEncoder(nn.Module):
    """BPE token embedding plus learned positions (ids of ``datamodules/tokenizer.py``).

    Args:
        vocab_size: number of BPE ids (id 0 is ``<pad>``).
        dim: token width D.
        max_len: longest text in tokens.
    """

    def __init__(self, vocab_size: int, dim: int, max_len: int = 512) -> None:
        super().__init__()
        if vocab_size < 2 or dim < 1 or max_len < 1:
            raise ValueError(f"TextEncoder needs vocab_size >= 2, dim >= 1, max_len >= 1, got {vocab_size}, {dim}, {max_len}")
        self.max_len = max_len
        self.tokens = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)

    def forward(self, text_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 ids -> (B, L, D) tokens (L <= max_len)."""
        if text_ids.shape[1] > self.max_len:
            raise ValueError(f"text of {text_ids.shape[1]} tokens exceeds max_text_len={self.max_len}")
        pos = torch.arange(text_ids.shape[1], device=text_ids.device)
        return self.tokens(text_ids) + self.positions(pos)[None]  # (B, L, D)


class AudioSequenceEncoder(nn.Module):
    """E_as: a HiFi-GAN generator's transposed-conv upsampling stack over the reference mel, pooled to tokens.

    The speechbrain ``HifiganGenerator`` is used with ``dim`` output channels instead of one waveform
    channel (its post conv replaced): its upsampled features (B, D, 256 T) are average-pooled to one token per 0.2 s.

    Args:
        dim: token width D.
        channels: ``upsample_initial_channel`` of the generator (halved at every upsampling).
        upsample_factors: product 256 in the vocoder; fewer/smaller stages are fine here.
        num_tokens: tokens for the 2 s profile (10 = one per 0.2 s).
    """

    def __init__(self, dim: int, channels: int = 64, upsample_factors: tuple[int, ...] = (8, 8),
                 num_tokens: int = 10) -> None:
        super().__init__()
        if channels // 2 ** len(upsample_factors) < 1:
            raise ValueError(f"channels={channels} is too small for {len(upsample_factors)} upsampling stages")
        self.num_tokens = num_tokens
        self.stack = HifiganGenerator(
            in_channels=N_MELS, out_channels=dim, resblock_type="1", resblock_dilation_sizes=[[1, 3, 5]],
            resblock_kernel_sizes=[3], upsample_kernel_sizes=[2 * u for u in upsample_factors],
            upsample_initial_channel=channels, upsample_factors=list(upsample_factors),
        )
        # speechbrain's generator ends in a one-channel waveform conv: widen it to ``dim`` feature channels.
        last = channels // 2 ** len(upsample_factors)
        self.stack.conv_post = Conv1d(in_channels=last, out_channels=dim, kernel_size=7, padding="same",
                                      skip_transpose=True, weight_norm=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, profile_wav: torch.Tensor) -> torch.Tensor:
        """(B, 32000) profile wav -> reference mel (B, 80, 126) -> (B, num_tokens, D) tokens."""
        mel = reference_mel(profile_wav)  # (B, 80, T)
        features = self.stack(mel)  # (B, D, T * prod(upsample_factors)), tanh-bounded
        return self.proj(pool_tokens(features.transpose(1, 2), self.num_tokens))  # (B, N, D)


class AudioProfileEncoder(nn.Module):
    """E_ap: transformers ``Wav2Vec2Model`` over the 2 s profile, pooled to one token per 0.2 s.

    Args:
        dim: token width D.
        pretrained: hub id or local folder (``"facebook/wav2vec2-base"``); ``None`` builds a random
            model of ``hidden``/``layers``/``heads`` (tiny config).
        hidden, layers, heads: size of the random-init model.
        num_tokens: tokens for the 2 s profile.
        freeze_feature_encoder: keep the convolutional feature encoder fixed (as in fine-tuning Wav2Vec2).
        freeze_model: keep the whole Wav2Vec2 fixed (only the projection to ``dim`` trains).
        gradient_checkpointing: recompute the transformer layers' activations in the backward pass
            (transformers' activation checkpointing; it acts in training mode).
    """

    def __init__(self, dim: int, pretrained: str | None = None, hidden: int = 32, layers: int = 1,
                 heads: int = 2, num_tokens: int = 10, freeze_feature_encoder: bool = True,
                 freeze_model: bool = False, gradient_checkpointing: bool = False) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        if pretrained is not None:
            self.wav2vec = load_pretrained("Wav2Vec2 audio profile encoder", pretrained, Wav2Vec2Model.from_pretrained,
                                           mask_time_prob=0.0, layerdrop=0.0)
        else:
            config = Wav2Vec2Config(
                hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * hidden,
                conv_dim=(hidden,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=heads,
                do_stable_layer_norm=False, feat_extract_norm="group", mask_time_prob=0.0, layerdrop=0.0,
            )
            self.wav2vec = Wav2Vec2Model(config)
        # The profile is a condition, not a CTC target: no SpecAugment time masking and no layer drop, so
        # the whole 2 s always shape the voice tokens (and the unused mask embedding does not train).
        if getattr(self.wav2vec, "masked_spec_embed", None) is not None:
            self.wav2vec.masked_spec_embed.requires_grad_(False)
        if freeze_feature_encoder:
            self.wav2vec.freeze_feature_encoder()
        if freeze_model:
            self.wav2vec.requires_grad_(False)
        if gradient_checkpointing and not freeze_model:  # a frozen Wav2Vec2 keeps no activations anyway
            enable_checkpointing(self.wav2vec)
            if freeze_feature_encoder:
                # a checkpointed layer keeps its input even when nothing in it trains: the frozen conv
                # stack (2 x 32000 samples in, 512 channels out) would keep more than it saves
                for module in self.wav2vec.feature_extractor.modules():
                    if hasattr(module, "gradient_checkpointing"):
                        module.gradient_checkpointing = False
        self.proj = nn.Linear(self.wav2vec.config.hidden_size, dim)

    def forward(self, profile_wav: torch.Tensor) -> torch.Tensor:
        """(B, 32000) wav in [-1, 1] -> (B, num_tokens, D)."""
        wav = (profile_wav - profile_wav.mean(1, keepdim=True)) / (profile_wav.std(1, keepdim=True) + 1e-7)
        hidden = self.wav2vec(wav).last_hidden_state  # (B, 99, H): one state per 20 ms
        return self.proj(pool_tokens(hidden, self.num_tokens))  # (B, N, D)


class AppearanceEncoder(KeepsChildrenFrozen, nn.Module):
    """E_va: diffusers ``AutoencoderKL`` (frozen by default): images <-> scaled latents.

    Args:
        pretrained: hub id or local folder (``"stabilityai/sd-vae-ft-mse"``); ``None`` builds a random
            VAE with ``levels`` blocks of ``width`` channels (down-sampling 2 ** (levels - 1)).
        width, levels: size of the random-init VAE.
        trainable: fine-tune the VAE instead of freezing it.
        gradient_checkpointing: recompute the decoder's (and a trainable encoder's) block activations in the
            backward pass (diffusers' switch): the pixel loss back-propagates through the decoder even when
            the VAE is frozen.
    """

    def __init__(self, pretrained: str | None = None, width: int = 32, levels: int = 4, trainable: bool = False,
                 gradient_checkpointing: bool = False) -> None:
        super().__init__()
        if pretrained is not None:
            self.vae = load_pretrained("AutoencoderKL appearance encoder", pretrained, AutoencoderKL.from_pretrained)
        else:
            self.vae = AutoencoderKL(
                down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
                block_out_channels=(width,) * levels, layers_per_block=1, latent_channels=4,
                norm_num_groups=min(32, width),
            )
        if not trainable:
            freeze(self.vae)
        if gradient_checkpointing:
            self.vae.enable_gradient_checkpointing()  # diffusers checks grad mode only: eval mode is fine
        self.trainable = trainable
        self.frozen_children = () if trainable else ("vae",)  # a frozen VAE stays in eval through train()
        self.scale = float(self.vae.config.scaling_factor)
        self.latent_channels = int(self.vae.config.latent_channels)
        self.downsample = 2 ** (len(self.vae.config.block_out_channels) - 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, 4, H/s, W/s) scaled latent (the posterior mode)."""
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return self.vae.encode(images).latent_dist.mode() * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, 4, h, w) scaled latent -> (N, 3, h s, w s) images (gradients flow to the latents)."""
        return self.vae.decode(latents / self.scale).sample


class PatchTokens(nn.Module):
    """Non-overlapping ``patch`` x ``patch`` patches of a (B, C, h, w) map -> (B, h w / patch^2, D) tokens."""

    def __init__(self, in_channels: int, dim: int, patch: int, grid: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
        self.positions = nn.Parameter(torch.zeros(1, (grid // patch) ** 2, dim))
        nn.init.normal_(self.positions, std=0.02)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, N, D)."""
        return self.proj(features).flatten(2).transpose(1, 2) + self.positions  # (B, N, D)


class StructureEncoder(nn.Module):
    """E_vs: face and lip masks on the latent grid, as maps for the denoiser and as tokens.

    Args:
        dim: token width D.
        downsample: the VAE's spatial factor s (masks are average-pooled to the latent grid).
        patch, grid: token patch size on a latent grid of ``grid`` x ``grid``.
    """

    def __init__(self, dim: int, downsample: int, patch: int, grid: int) -> None:
        super().__init__()
        self.downsample = downsample
        self.tokens = PatchTokens(2, dim, patch, grid)

    def maps(self, face_mask: torch.Tensor, lip_mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) x2 in {0, 1} -> (B, 2, H/s, W/s) soft masks on the latent grid."""
        masks = torch.cat([face_mask, lip_mask], dim=1)  # (B, 2, H, W)
        return nn.functional.avg_pool2d(masks, self.downsample) if self.downsample > 1 else masks

    def forward(self, face_mask: torch.Tensor, lip_mask: torch.Tensor) -> torch.Tensor:
        """Masks -> (B, N, D) structural tokens."""
        return self.tokens(self.maps(face_mask, lip_mask))
