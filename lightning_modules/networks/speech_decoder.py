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
own frames in free running do not snowball. ``prenet_dropout_at_inference`` keeps it on when
generating too, as Tacotron 2 does, so that free running sees the inputs training saw.

Alignment aid (``alignment_aid``, off in the paper's configuration): attention-based decoders spend
most of their early training finding which text token each frame speaks, and before that free
running drifts and the stop head never fires. With the aid, the decoder also predicts the
utterance's length T from its conditioning (``duration_head``, a log-frames regression), and each
input position t receives (a) its progress t / T as sinusoidal features and (b) a soft "expected
text token": the text tokens weighted by a Gaussian around token t / T * n (n real text tokens),
the near-diagonal alignment that guided attention (Tachibana et al., 2017) only encourages. Training
uses the true T; generation the predicted one. The decoder's attention still refines the alignment.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence

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
PROGRESS_FEATURES: int = 16
"""Sinusoidal features of the progress t / T with the alignment aid."""
ALIGNMENT_WIDTH: float = 1.0
"""Standard deviation, in text tokens, of the alignment aid's Gaussian over the text."""
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
        prenet_dropout_at_inference: keep the pre-net dropout on when generating (Tacotron 2).
        alignment_aid: predict the length and feed each position its progress and expected text token
            (module docstring); ``forward`` then needs ``lengths`` and ``text_positions``.
    """

    def __init__(self, dim: int, pretrained: str | None = None, width: int = 32, layers: int = 2, heads: int = 2,
                 max_positions: int = 1024, cross_attention: bool = True, prenet_dropout: float = 0.5,
                 freeze_model: bool = False, gradient_checkpointing: bool = False,
                 prenet_dropout_at_inference: bool = False, alignment_aid: bool = False) -> None:
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
        self.prenet_dropout_at_inference = prenet_dropout_at_inference
        self.alignment_aid = alignment_aid
        if alignment_aid:
            self.progress_proj = nn.Linear(2 * PROGRESS_FEATURES, width)
            self.aligned_text_proj = nn.Linear(width, width)
            self.duration_head = nn.Sequential(nn.Linear(width + 1, width), nn.GELU(), nn.Linear(width, 1))
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
        # Positions count real tokens only, so that a row's frames sit where they would without the
        # batch's text padding (padding shares its neighbour's position and is masked anyway).
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)[:, -embeds.shape[1]:]  # (B, S)
        out = self.gpt(inputs_embeds=embeds, attention_mask=mask.long(), position_ids=positions,
                       use_cache=past is not None, **{CACHE_ARGUMENT: past}, **cross)
        return out.last_hidden_state, getattr(out, CACHE_ARGUMENT)

    def forward(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, mel: torch.Tensor,
                video_tokens: torch.Tensor | None = None,
                video_mask: torch.Tensor | None = None, lengths: torch.Tensor | None = None,
                text_positions: int = 0) -> dict[str, torch.Tensor]:
        """Teacher-forced pass.

        Args:
            prefix: (B, P, D) conditioning tokens; prefix_mask (B, P) bool, True on real tokens.
            mel: (B, 80, T) target log-mel (padding beyond each row's length is ignored by the losses).
            video_tokens: (B, Nv, D) video-side tokens for the cross-attention (DC), if built with it;
                video_mask (B, Nv) bool, True on real tokens (``None``: all real).
            lengths: (B,) true frames per row; needed with ``alignment_aid``.
            text_positions: how many of the prefix's last positions are text tokens (alignment aid).

        Returns:
            ``mel`` (B, 80, T) predicted, ``stop_logits`` (B, T), ``hidden`` (B, T, W) per-mel-frame states;
            with the alignment aid also ``log_duration`` (B,), the predicted log length in frames.
        """
        b, _, t = mel.shape
        self._check_length(prefix.shape[1] + t)
        cond = self.cond_proj(prefix)  # (B, P, W)
        frames = self._prenet(self._standardise(mel[:, :, :-1].transpose(1, 2)))  # (B, T-1, W)
        inputs = torch.cat([self.start.expand(b, -1, -1), frames], dim=1)  # (B, T, W)
        extra = {}
        if self.alignment_aid:
            if lengths is None or text_positions < 1:
                raise ValueError("AudioDecoder built with alignment_aid needs lengths and text_positions >= 1")
            extra["log_duration"] = self._log_duration(cond, prefix_mask, text_positions)
            steps = torch.arange(t, device=mel.device, dtype=cond.dtype)[None].expand(b, -1)  # (B, T)
            inputs = inputs + self._aid(cond, prefix_mask, text_positions, steps, lengths.to(cond.dtype))
        embeds = torch.cat([cond, inputs], dim=1)  # (B, P+T, W)
        mask = torch.cat([prefix_mask, prefix_mask.new_ones(b, t)], dim=1)  # (B, P+T)
        hidden, _ = self._run(embeds, mask, video_tokens, video_mask)
        hidden = hidden[:, prefix.shape[1]:]  # (B, T, W)
        return {"mel": self._mel(hidden).transpose(1, 2), "stop_logits": self.stop_head(hidden).squeeze(-1),
                "hidden": hidden, **extra}

    def _prenet(self, frames: torch.Tensor, generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """(B, ..., 80) standardised frames -> (B, ..., W); dropout also in eval with
        ``prenet_dropout_at_inference``, row ``i``'s masks drawn from ``generators[i]`` when given
        (else from the global RNG)."""
        if not self.prenet_dropout_at_inference or self.training:
            return self.prenet(frames)
        first, act, drop, second, _ = self.prenet
        hidden = _dropout(act(first(frames)), drop.p, generators)
        return _dropout(second(hidden), drop.p, generators)

    def _text(self, cond: torch.Tensor, mask: torch.Tensor, text_positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The text part of the projected prefix (B, L, W) and its mask (B, L) (the prefix ends with the text)."""
        return cond[:, -text_positions:], mask[:, -text_positions:]

    def _log_duration(self, cond: torch.Tensor, mask: torch.Tensor, text_positions: int) -> torch.Tensor:
        """(B,) predicted log length in frames: log(n text tokens) + a correction from the pooled prefix."""
        weights = mask.to(cond.dtype)[..., None]  # (B, P, 1)
        pooled = (cond * weights).sum(1) / weights.sum(1).clamp(min=1)  # (B, W)
        tokens = self._text(cond, mask, text_positions)[1].sum(1).clamp(min=1).to(cond.dtype)  # (B,)
        correction = self.duration_head(torch.cat([pooled, tokens.log()[:, None]], dim=1)).squeeze(-1)
        return tokens.log() + correction

    def _aid(self, cond: torch.Tensor, mask: torch.Tensor, text_positions: int, steps: torch.Tensor,
             lengths: torch.Tensor) -> torch.Tensor:
        """(B, S, W) alignment-aid embeddings of input positions ``steps`` (B, S) of rows ``lengths`` (B,) long."""
        progress = steps / lengths[:, None].clamp(min=1)  # (B, S)
        freqs = torch.pi * 2.0 ** torch.arange(PROGRESS_FEATURES, device=cond.device, dtype=cond.dtype) / 8
        angles = progress[..., None] * freqs  # (B, S, K)
        features = self.progress_proj(torch.cat([angles.sin(), angles.cos()], dim=-1))  # (B, S, W)
        text, text_mask = self._text(cond, mask, text_positions)  # (B, L, W), (B, L)
        # The real tokens are the first n of the text (padding follows), so token j's centre is j + 0.5.
        count = text_mask.sum(1, keepdim=True).to(cond.dtype)  # (B, 1)
        centre = progress * count  # (B, S)
        index = torch.arange(text.shape[1], device=cond.device, dtype=cond.dtype) + 0.5  # (L,)
        logits = -((index[None, None] - centre[..., None]) ** 2) / (2 * ALIGNMENT_WIDTH ** 2)  # (B, S, L)
        logits = logits.masked_fill(~text_mask.bool()[:, None], float("-inf"))
        aligned = torch.softmax(logits, dim=-1) @ text  # (B, S, W)
        return features + self.aligned_text_proj(aligned)

    def _mel(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., W) decoder states -> (..., 80) log-mel frames."""
        return self.mel_head(hidden) * self.mel_std + self.mel_mean

    def _standardise(self, mel: torch.Tensor) -> torch.Tensor:
        """(..., 80) log-mel -> the decoder's standardised units."""
        return (mel - self.mel_mean) / self.mel_std

    @torch.no_grad()
    def generate(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, max_frames: int,
                 video_tokens: torch.Tensor | None = None, video_mask: torch.Tensor | None = None,
                 stop_threshold: float = 0.5, use_cache: bool = True,
                 text_positions: int = 0, target_lengths: torch.Tensor | None = None,
                 generators: Sequence[torch.Generator] | None = None) -> dict[str, torch.Tensor]:
        """Autoregressive mel generation with a key/value cache, until every row's stop head fires.

        ``use_cache=False`` runs the whole sequence again at every step (same frames, slower): a check
        of the cache.

        ``max_frames`` is capped (with a warning) to the positions the decoder has left after the prefix.

        ``target_lengths`` (B,) >= 1: each row speaks exactly that many frames (the stop head is not
        consulted; the alignment aid's progress uses them as the length); ``max_frames`` is then
        their maximum. ``generators``: one per row for the pre-net dropout at inference.

        Returns:
            ``mel`` (B, 80, T), ``lengths`` (B,) frames up to and including the stop frame (``max_frames``
            where it never fired), ``hidden`` (B, T, W); T <= ``max_frames``, rows past their length repeat
            the decoder's continuation and should be cut with ``lengths``. With the alignment aid also
            ``predicted_lengths`` (B,), the length the progress features assumed.
        """
        b = prefix.shape[0]
        room = int(self.gpt.config.n_positions) - prefix.shape[1]
        if target_lengths is not None:
            max_frames = int(target_lengths.max())
        if max_frames > room:
            self._check_length(prefix.shape[1] + 1)  # not even one frame fits: a clear error
            log.warning("max_frames=%d capped to %d: the decoder holds %d positions and the prefix uses %d",
                        max_frames, room, self.gpt.config.n_positions, prefix.shape[1])
            max_frames = room
        cond = self.cond_proj(prefix)  # (B, P, W)
        aid, extra = None, {}
        if self.alignment_aid:
            predicted = self._log_duration(cond, prefix_mask, text_positions).exp().round().clamp(1, max_frames)
            if target_lengths is not None:
                predicted = target_lengths.to(cond.dtype).clamp(1, max_frames)
            extra["predicted_lengths"] = predicted.long()
            aid = lambda step: self._aid(cond, prefix_mask, text_positions,
                                         predicted.new_full((b, 1), float(step)), predicted)  # (B, 1, W)
        start = self.start.expand(b, -1, -1)
        embeds = torch.cat([cond, start + aid(0) if aid else start], dim=1)  # (B, P+1, W)
        mask = torch.cat([prefix_mask, prefix_mask.new_ones(b, 1)], dim=1)  # (B, P+1)
        lengths = torch.full((b,), max_frames, dtype=torch.long, device=prefix.device)
        if target_lengths is not None:
            lengths = target_lengths.to(prefix.device, torch.long).clamp(max=max_frames)
        mels, states, past = [], [], _empty_cache(self.gpt.config) if use_cache else None
        sequence = embeds  # (B, P+1+step, W): the whole input, for runs without the cache
        for step in range(max_frames):
            hidden, past = self._run(embeds if use_cache else sequence, mask, video_tokens, video_mask, past)
            state = hidden[:, -1]  # (B, W)
            frame = self._mel(state)  # (B, 80)
            mels.append(frame)
            states.append(state)
            if target_lengths is None:
                stopped = (torch.sigmoid(self.stop_head(state).squeeze(-1)) > stop_threshold) & (lengths == max_frames)
                lengths = torch.where(stopped, torch.full_like(lengths, step + 1), lengths)
            if bool((lengths <= step + 1).all()) or step + 1 == max_frames:
                break
            embeds = self._prenet(self._standardise(frame), generators)[:, None]  # (B, 1, W)
            if aid:
                embeds = embeds + aid(step + 1)
            sequence = torch.cat([sequence, embeds], dim=1)
            mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
        return {"mel": torch.stack(mels, dim=2), "lengths": lengths, "hidden": torch.stack(states, dim=1), **extra}


def _dropout(x: torch.Tensor, p: float, generators: Sequence[torch.Generator] | None) -> torch.Tensor:
    """Inverted dropout of ``x`` (B, ...) with probability ``p``; row ``i``'s mask from ``generators[i]``."""
    if generators is None:
        return nn.functional.dropout(x, p, training=True)
    if len(generators) != x.shape[0]:
        raise ValueError(f"generators: one per row expected, got {len(generators)} for {x.shape[0]} rows")
    keep = torch.cat([torch.bernoulli(torch.full_like(x[i : i + 1], 1.0 - p), generator=g)
                      for i, g in enumerate(generators)])
    return x * keep / (1.0 - p)


def _empty_cache(config: GPT2Config):
    """An empty transformers cache of the kind GPT-2 expects (encoder-decoder when it cross-attends)."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    if config.add_cross_attention:
        return EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
    return DynamicCache(config=config)
