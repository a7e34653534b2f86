"""GPT-2 decoder of the audio latent (paper Sec. 3.3): autoregressive over continuous mel frames.

Sequence fed to transformers' ``GPT2Model`` (``inputs_embeds``)::

    [ conditioning tokens (B, P, D) | start frame | prenet(mel_0) ... prenet(mel_{T-2}) ]

The conditioning prefix holds the audio-side entangled tokens and the text tokens (padding masked).
The state at the position of input frame t predicts mel frame t (linear head) and whether t is the
last frame (stop head). With ``cross_attention`` the decoder also attends to the video-side tokens
(diffusion cross-attention, video -> audio).

Mel frames enter the pre-net and leave the mel head standardised per mel bin (ESPnet's global
mean-variance normalisation of TTS targets): the statistics are buffers, estimated from training
batches when fitting starts (``NFYLitModule``, :meth:`AudioDecoder.set_mel_statistics`) and stored in
checkpoints; until then they are constants typical of the dynamic-range-compressed log-mel of speech
(``MEL_MEAN``, ``MEL_STD``; the demo corpus: -5.3 and 2.8). A freshly initialised head thus starts
near the data rather than 25 units of MSE away.
The pre-net drops out half its units in training (``prenet_dropout``, as in Tacotron 2): with the
previous frame only partly visible, the decoder learns to follow the conditioning, and errors of its
own frames in free running do not snowball.
"""

from __future__ import annotations

import inspect
import logging

import torch
from torch import nn
from transformers import GPT2Config, GPT2Model

from datamodules.conventions import N_MELS
from lightning_modules.networks.layers import enable_checkpointing, load_pretrained

log = logging.getLogger(__name__)

MEL_MEAN: float = -5.0
"""Offset of the standardised mel frames until per-bin statistics are set."""
MEL_STD: float = 2.5
"""Scale of the standardised mel frames until per-bin statistics are set."""
CACHE_ARGUMENT: str = "cache" if "cache" in inspect.signature(GPT2Model.forward).parameters else "past_key_values"
"""The key/value cache's keyword of ``GPT2Model.forward``: transformers renames ``past_key_values`` to
``cache`` (the old name goes in 5.40); both the argument and the output attribute follow it."""
MIN_MEL_STD: float = 0.1
"""Floor of a bin's standard deviation (a constant bin would otherwise blow up its standardised units)."""


class AudioDecoder(nn.Module):
    """GPT-2 over mel frames with a linear pre-net, a mel head and a stop head.

    Args:
        dim: width D of the conditioning tokens (projected to GPT-2's width when they differ).
        pretrained: hub id or local folder of a GPT-2 (``"gpt2"``); ``None`` builds a random one.
        width, layers, heads: size of the random-init GPT-2.
        max_positions: longest prefix + mel sequence.
        cross_attention: add cross-attention layers to the video-side tokens (DC, video -> audio).
        prenet_dropout: dropout probability after each pre-net layer in training (0 disables it).
        freeze_model: keep GPT-2's own weights fixed; the cross-attention layers (new, random) and the
            pre-net, heads and projections around GPT-2 still train.
        gradient_checkpointing: recompute each GPT-2 block's activations in the backward pass
            (transformers' activation checkpointing; it acts in training mode).
    """

    def __init__(self, dim: int, pretrained: str | None = None, width: int = 32, layers: int = 2, heads: int = 2,
                 max_positions: int = 1024, cross_attention: bool = True, prenet_dropout: float = 0.5,
                 freeze_model: bool = False, gradient_checkpointing: bool = False) -> None:
        super().__init__()
        if not 0.0 <= prenet_dropout < 1.0:
            raise ValueError(f"prenet_dropout must lie in [0, 1), got {prenet_dropout}")
        if pretrained is not None:
            self.gpt = load_pretrained("GPT-2 audio decoder", pretrained, GPT2Model.from_pretrained,
                                       add_cross_attention=cross_attention)
        else:
            config = GPT2Config(n_embd=width, n_layer=layers, n_head=heads, n_positions=max_positions,
                                add_cross_attention=cross_attention, vocab_size=1, bos_token_id=0, eos_token_id=0, resid_pdrop=0.0,
                                embd_pdrop=0.0, attn_pdrop=0.0)
            self.gpt = GPT2Model(config)
        if gradient_checkpointing:  # before wte goes: transformers hooks its (unused) token table
            enable_checkpointing(self.gpt)
        self.gpt.wte = None  # continuous inputs only: no token embedding table
        if freeze_model:
            self.gpt.requires_grad_(False)
            for block in self.gpt.h:  # the cross-attention GPT-2 never had: it must learn
                for name in ("crossattention", "ln_cross_attn"):
                    if hasattr(block, name):
                        getattr(block, name).requires_grad_(True)
        width = self.gpt.config.n_embd
        self.width = width
        self.cross_attention = cross_attention
        self.cond_proj = nn.Linear(dim, width) if dim != width else nn.Identity()
        self.prenet = nn.Sequential(nn.Linear(N_MELS, width), nn.GELU(), nn.Dropout(prenet_dropout),
                                    nn.Linear(width, width), nn.Dropout(prenet_dropout))
        self.start = nn.Parameter(torch.zeros(1, 1, width))
        self.mel_head = nn.Linear(width, N_MELS)
        self.stop_head = nn.Linear(width, 1)
        self.register_buffer("mel_mean", torch.full((N_MELS,), MEL_MEAN))
        self.register_buffer("mel_std", torch.full((N_MELS,), MEL_STD))
        self.register_buffer("mel_statistics_set", torch.tensor(False))

    @torch.no_grad()
    def set_mel_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-bin mean and standard deviation, each (80,), of the training log-mel frames.

        The standard deviation is floored at ``MIN_MEL_STD``.
        """
        if mean.shape != (N_MELS,) or std.shape != (N_MELS,):
            raise ValueError(f"mel statistics must have shape ({N_MELS},), got {tuple(mean.shape)}, {tuple(std.shape)}")
        self.mel_mean.copy_(mean)
        self.mel_std.copy_(std.clamp(min=MIN_MEL_STD))
        self.mel_statistics_set.fill_(True)

    def _check_length(self, positions: int) -> None:
        limit = int(self.gpt.config.n_positions)
        if positions > limit:
            raise ValueError(f"conditioning prefix + mel frames = {positions} positions exceed the decoder's "
                             f"{limit} (max_decoder_positions); shorten the text/utterance or raise the limit")

    def _run(self, embeds: torch.Tensor, mask: torch.Tensor, video_tokens: torch.Tensor | None,
             video_mask: torch.Tensor | None, past=None) -> tuple[torch.Tensor, object]:
        if self.cross_attention and video_tokens is None:
            raise ValueError("AudioDecoder built with cross_attention needs video_tokens")
        cross = {}
        if self.cross_attention:
            cross["encoder_hidden_states"] = self.cond_proj(video_tokens)  # (B, Nv, W)
            if video_mask is not None:
                cross["encoder_attention_mask"] = video_mask.long()
        out = self.gpt(inputs_embeds=embeds, attention_mask=mask.long(), use_cache=past is not None,
                       **{CACHE_ARGUMENT: past}, **cross)
        return out.last_hidden_state, getattr(out, CACHE_ARGUMENT)

    def forward(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, mel: torch.Tensor,
                video_tokens: torch.Tensor | None = None,
                video_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Teacher-forced pass.

        Args:
            prefix: (B, P, D) conditioning tokens; prefix_mask (B, P) bool, True on real tokens.
            mel: (B, 80, T) target log-mel (padding beyond each row's length is ignored by the losses).
            video_tokens: (B, Nv, D) video-side tokens for the cross-attention (DC), if built with it;
                video_mask (B, Nv) bool, True on real tokens (``None``: all real).

        Returns:
            ``mel`` (B, 80, T) predicted, ``stop_logits`` (B, T), ``hidden`` (B, T, W) per-mel-frame states.
        """
        b, _, t = mel.shape
        self._check_length(prefix.shape[1] + t)
        frames = self.prenet(self._standardise(mel[:, :, :-1].transpose(1, 2)))  # (B, T-1, W)
        embeds = torch.cat([self.cond_proj(prefix), self.start.expand(b, -1, -1), frames], dim=1)  # (B, P+T, W)
        mask = torch.cat([prefix_mask, prefix_mask.new_ones(b, t)], dim=1)  # (B, P+T)
        hidden, _ = self._run(embeds, mask, video_tokens, video_mask)
        hidden = hidden[:, prefix.shape[1]:]  # (B, T, W)
        return {"mel": self._mel(hidden).transpose(1, 2), "stop_logits": self.stop_head(hidden).squeeze(-1),
                "hidden": hidden}

    def _mel(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., W) decoder states -> (..., 80) log-mel frames."""
        return self.mel_head(hidden) * self.mel_std + self.mel_mean

    def _standardise(self, mel: torch.Tensor) -> torch.Tensor:
        """(..., 80) log-mel -> the decoder's standardised units."""
        return (mel - self.mel_mean) / self.mel_std

    @torch.no_grad()
    def generate(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, max_frames: int,
                 video_tokens: torch.Tensor | None = None, video_mask: torch.Tensor | None = None,
                 stop_threshold: float = 0.5, use_cache: bool = True) -> dict[str, torch.Tensor]:
        """Autoregressive mel generation with a key/value cache, until every row's stop head fires.

        ``use_cache=False`` runs the whole sequence again at every step (same frames, slower): a check
        of the cache.

        ``max_frames`` is capped (with a warning) to the positions the decoder has left after the prefix.

        Returns:
            ``mel`` (B, 80, T), ``lengths`` (B,) frames up to and including the stop frame (``max_frames``
            where it never fired), ``hidden`` (B, T, W); T <= ``max_frames``, rows past their length repeat
            the decoder's continuation and should be cut with ``lengths``.
        """
        b = prefix.shape[0]
        room = int(self.gpt.config.n_positions) - prefix.shape[1]
        if max_frames > room:
            self._check_length(prefix.shape[1] + 1)  # not even one frame fits: a clear error
            log.warning("max_frames=%d capped to %d: the decoder holds %d positions and the prefix uses %d",
                        max_frames, room, self.gpt.config.n_positions, prefix.shape[1])
            max_frames = room
        embeds = torch.cat([self.cond_proj(prefix), self.start.expand(b, -1, -1)], dim=1)  # (B, P+1, W)
        mask = torch.cat([prefix_mask, prefix_mask.new_ones(b, 1)], dim=1)  # (B, P+1)
        lengths = torch.full((b,), max_frames, dtype=torch.long, device=prefix.device)
        mels, states, past = [], [], _empty_cache(self.gpt.config) if use_cache else None
        sequence = embeds  # (B, P+1+step, W): the whole input, for runs without the cache
        for step in range(max_frames):
            hidden, past = self._run(embeds if use_cache else sequence, mask, video_tokens, video_mask, past)
            state = hidden[:, -1]  # (B, W)
            frame = self._mel(state)  # (B, 80)
            mels.append(frame)
            states.append(state)
            stopped = (torch.sigmoid(self.stop_head(state).squeeze(-1)) > stop_threshold) & (lengths == max_frames)
            lengths = torch.where(stopped, torch.full_like(lengths, step + 1), lengths)
            if bool((lengths < max_frames).all()) or step + 1 == max_frames:
                break
            embeds = self.prenet(self._standardise(frame))[:, None]  # (B, 1, W)
            sequence = torch.cat([sequence, embeds], dim=1)
            mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
        return {"mel": torch.stack(mels, dim=2), "lengths": lengths, "hidden": torch.stack(states, dim=1)}


def _empty_cache(config: GPT2Config):
    """An empty transformers cache of the kind GPT-2 expects (encoder-decoder when it cross-attends)."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    if config.add_cross_attention:
        return EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
    return DynamicCache(config=config)
