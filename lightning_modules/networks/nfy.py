"""The NFY network (paper Sec. 3): text + face photo + 2 s voice -> speech and a talking-face video.

How conditioning flows (B batch, L text tokens, D token width, W decoder width, h = w = H / s latent
side, N_v visual tokens = (h / patch)^2, T mel frames, F video frames, M motion frames)::

    text_ids (B, L) ---------------- TextEncoder ----------------------> text    (B, L, D)
    profile_wav (B, 32000) -> mel (B, 80, 126) -> AudioSequenceEncoder -> seq     (B, 10, D)  one per 0.2 s
    profile_wav ------------------ Wav2Vec2 -> pooled ------------------> speaker (B, 10, D)
    ref_image (B, 3, H, W) (lips masked) -> AutoencoderKL -> patches ---> visual  (B, N_v, D)
      + face/lip masks (B, 1, H, W) -> StructureEncoder (same grid) --/
    audio side (Eq. 1): Q = seq, K/V = [speaker, text, visual] -------> audio_tokens (B, 10, D)
    video side:         Q = visual, K/V = [text, seq, speaker] -------> video_tokens (B, N_v, D)
    GPT-2 decoder: prefix [audio_tokens, text] + mel frames, cross-attn to video_tokens (DC video->audio)
                   -> mel (B, 80, T), stop logits (B, T), per-mel-frame states (B, T, W)
    states -> per-video-frame windows of 3 (2.5 mel frames per video frame) (B, F, 3, W)
    UNetMotionModel on [noisy latent, ref latent, motion latents, masks] (B, 4 + 4 + 4M + 2, F, h, w),
                   cross-attending per frame to [video_tokens (EC) ; its window (DC, lip-mask gated)]
    -> latents (B, 4, F, h, w) -> AutoencoderKL.decode -> frames (B, F, 3, H, W)

The network only computes: the training objective (noise, timesteps, losses, guidance dropout) is
:class:`lightning_modules.nfy_module.NFYLitModule`'s, sampling (the speech loop, the DDIM loop and
classifier-free guidance) is :class:`lightning_modules.pipeline.NFYPipeline`'s. Both reach the network
through the public methods below (``encode_conditions``, ``decode_speech``/``generate_mel``,
``encode_frames``, ``denoiser_inputs``, ``denoise``, ``decode_diffused`` ...).

Reference residual (``reference_residual``, off in the paper's configuration): the denoiser diffuses
the change of each frame's latent from the reference latent, r = z - z_ref, and a frame is the
reference photo plus the decoded change, ``ref + D(z_ref + r) - D(z_ref)``. The reference's own
reconstruction error cancels, so predicting "no change" returns the photo exactly, and the model
spends its capacity on what moves (mouth, blinks, head). SD-1.5's VAE reconstructs faces well enough
not to need it; a small random VAE trained for minutes does not (``tiny.yaml`` turns it on).

Ablation flags (each really removes its component: the module is not built, so it has no
parameters and is never called):

* ``entanglement``: ``"ete"`` two entangled encoders with their own weights, ``"ste"`` one shared
  encoder with modality embeddings, ``"none"`` no transformer encoder at all: the decoder's prefix
  holds the raw reference-audio tokens and EC/DC get the raw visual + text tokens (Table 6).
* ``diffusion_cross_attention`` (DC): no per-frame audio tokens in the UNet (no ``dc_proj``) and a
  GPT-2 without cross-attention layers.
* ``embedding_cross_attention`` (EC): no video-side tokens in the UNet (no ``ec_proj``).
* ``attended_tokens``: ``"visual"`` drops the audio-side encoder (the decoder gets the raw speaker
  tokens), ``"audio"`` drops the video-side one (EC/DC get the raw visual + text tokens) (Table 7).
* ``use_audio_sequence_encoder`` / ``use_audio_profile_encoder``: drop E_as / the Wav2Vec2 E_ap; a
  learned query replaces the missing reference-audio tokens.
* ``use_visual_tokens``: no appearance/structure tokens in the prompt-guided encoders (a learned query
  replaces them on the video side); the UNet still sees the reference latent and the masks as maps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from lightning_modules.networks.encoders import (
    AppearanceEncoder,
    AudioProfileEncoder,
    AudioSequenceEncoder,
    PatchTokens,
    StructureEncoder,
    TextEncoder,
)
from lightning_modules.networks.entangled import EntangledEncoder
from lightning_modules.networks.layers import FRAME_WINDOW, frame_windows, recording_architectures
from lightning_modules.networks.speech_decoder import AudioDecoder
from lightning_modules.networks.video_denoiser import VideoDenoiser
from lightning_modules.networks.vocoder import Vocoder

log = logging.getLogger(__name__)

ENTANGLEMENTS: tuple[str, ...] = ("ete", "ste", "none")
ATTENDED: tuple[str, ...] = ("both", "visual", "audio")
AUDIO, VIDEO = 0, 1  # modality indices of the shared STE encoder


class NFYNetwork(nn.Module):
    """All NFY components as plain compute (see the module docstring); no training or sampling logic.

    Args:
        vocab_size: BPE vocabulary size (linked from the DataModule).
        image_size: square frame side H = W (multiple of the VAE factor times ``patch_size``).
        num_frames: F generated frames per video window (16 in the paper).
        motion_frames: M context frames before each window (2).
        dim: token width D of encoders and entangled encoders.
        heads: attention heads of the entangled encoders.
        entangled_layers: blocks per entangled encoder.
        max_text_len: longest text in tokens.
        audio_tokens: tokens of the 2 s profile (10 = one per 0.2 s).
        audio_sequence_channels, audio_sequence_stages: HiFi-GAN stack of E_as (x8 upsampling per stage).
        wav2vec: hub id/folder of a ``Wav2Vec2Model`` or ``None`` (random, ``wav2vec_width``/``wav2vec_layers``).
        vae: hub id/folder of an ``AutoencoderKL`` or ``None`` (random, ``vae_width``/``vae_levels``).
        train_vae: fine-tune the VAE (frozen by default).
        patch_size: latent patch side of a visual token.
        video_queries: learned video-side queries when ``use_visual_tokens`` is off.
        gpt2: hub id/folder of a ``GPT2Model`` or ``None`` (random, ``decoder_width``/``decoder_layers``/``decoder_heads``).
        max_decoder_positions: prefix + mel frames the GPT-2 can hold.
        unet, motion_adapter: SD-1.5 UNet and AnimateDiff ``MotionAdapter`` ids/folders, or ``None`` for a
            random ``UNetMotionModel`` (``unet_width``/``unet_levels``).
        unet_cross_dim: cross-attention width of the random UNet (768 for SD-1.5).
        vocoder: folder/hub id of speechbrain's LibriTTS 16 kHz HiFi-GAN, or ``None`` for Griffin-Lim.
        reference_residual: diffuse the latent's change from the reference latent and add the decoded
            change to the reference photo (module docstring); a random UNet then starts with a zero output
            layer (trained with ``prediction_type="sample"``, the untrained network returns the photo unchanged).
        prenet_dropout: dropout on the decoder's pre-net in training (Tacotron 2 uses 0.5): the decoder
            cannot lean on the previous frame alone, which keeps free-running generation on track.
        prenet_dropout_at_inference: keep that dropout on when generating, as Tacotron 2 does, so that free
            running sees inputs like training's (off in the paper's configuration).
        alignment_aid: the speech decoder predicts the utterance length and gets each frame's progress and
            expected text token (:mod:`~lightning_modules.networks.speech_decoder`; off in the paper's
            configuration); the objective then adds the ``duration`` term.
        entanglement, diffusion_cross_attention, embedding_cross_attention, attended_tokens,
        use_audio_sequence_encoder, use_audio_profile_encoder, use_visual_tokens: ablation flags (above).
        checkpoint_unet, checkpoint_vae, checkpoint_gpt2, checkpoint_wav2vec: activation checkpointing of
            that part (recompute in the backward pass what a forward would keep): the UNet's ResNets,
            transformer blocks and motion modules; the VAE's decoder blocks (the pixel L1 back-propagates
            through them); GPT-2's and Wav2Vec2's layers (in training mode).
        freeze_unet: freeze the UNet's pretrained spatial layers (motion modules and input conv train).
        freeze_gpt2: freeze GPT-2's own weights (its new cross-attention layers train).
        freeze_wav2vec: freeze the whole Wav2Vec2 (its projection to ``dim`` trains).

    Raises:
        ValueError: an unknown flag value or inconsistent sizes, naming the argument.
    """

    def __init__(
        self,
        vocab_size: int = 256,
        image_size: int = 32,
        num_frames: int = 4,
        motion_frames: int = 2,
        dim: int = 32,
        heads: int = 2,
        entangled_layers: int = 1,
        max_text_len: int = 512,
        audio_tokens: int = 10,
        audio_sequence_channels: int = 32,
        audio_sequence_stages: int = 2,
        wav2vec: str | None = None,
        wav2vec_width: int = 32,
        wav2vec_layers: int = 1,
        vae: str | None = None,
        vae_width: int = 32,
        vae_levels: int = 2,
        train_vae: bool = False,
        patch_size: int = 2,
        video_queries: int = 16,
        gpt2: str | None = None,
        decoder_width: int = 32,
        decoder_layers: int = 2,
        decoder_heads: int = 2,
        max_decoder_positions: int = 1024,
        unet: str | None = None,
        motion_adapter: str | None = None,
        unet_width: int = 32,
        unet_levels: int = 2,
        unet_cross_dim: int = 32,
        vocoder: str | None = None,
        reference_residual: bool = False,
        prenet_dropout: float = 0.5,
        prenet_dropout_at_inference: bool = False,
        alignment_aid: bool = False,
        entanglement: str = "ete",
        diffusion_cross_attention: bool = True,
        embedding_cross_attention: bool = True,
        attended_tokens: str = "both",
        use_audio_sequence_encoder: bool = True,
        use_audio_profile_encoder: bool = True,
        use_visual_tokens: bool = True,
        checkpoint_unet: bool = False,
        checkpoint_vae: bool = False,
        checkpoint_gpt2: bool = False,
        checkpoint_wav2vec: bool = False,
        freeze_unet: bool = False,
        freeze_gpt2: bool = False,
        freeze_wav2vec: bool = False,
    ) -> None:
        super().__init__()
        if entanglement not in ENTANGLEMENTS:
            raise ValueError(f"entanglement must be one of {ENTANGLEMENTS}, got {entanglement!r}")
        if attended_tokens not in ATTENDED:
            raise ValueError(f"attended_tokens must be one of {ATTENDED}, got {attended_tokens!r}")
        if num_frames < 1 or motion_frames < 0:
            raise ValueError(f"num_frames must be >= 1 and motion_frames >= 0, got {num_frames}, {motion_frames}")
        self.image_size, self.num_frames, self.motion_frames = image_size, num_frames, motion_frames
        self.entanglement, self.attended_tokens = entanglement, attended_tokens
        self.dc, self.ec = diffusion_cross_attention, embedding_cross_attention
        self.audio_tokens = audio_tokens
        self.reference_residual = reference_residual

        # Each pretrained part's architecture is recorded: checkpoints store it, so that loading one
        # rebuilds the part without the hub (layers.stored_architectures)
        with recording_architectures() as architectures:
            # Encoders (Sec. 3.1-3.2)
            self.text_encoder = TextEncoder(vocab_size, dim, max_text_len)
            self.audio_sequence_encoder = AudioSequenceEncoder(
                dim, audio_sequence_channels, (8,) * audio_sequence_stages, audio_tokens) if use_audio_sequence_encoder else None
            self.audio_profile_encoder = AudioProfileEncoder(
                dim, wav2vec, wav2vec_width, wav2vec_layers, heads, audio_tokens, freeze_model=freeze_wav2vec,
                gradient_checkpointing=checkpoint_wav2vec) if use_audio_profile_encoder else None
            self.audio_query = None if use_audio_sequence_encoder else nn.Parameter(torch.randn(1, audio_tokens, dim) * 0.02)
            self._build_visual_encoders(dim, vae, vae_width, vae_levels, train_vae, patch_size, use_visual_tokens,
                                        checkpoint_vae)

            # Entangled encoders (Eq. 1, Table 6/7)
            entangled = entanglement != "none"
            self._need_audio = entangled and attended_tokens in ("both", "audio")
            self._need_video = entangled and attended_tokens in ("both", "visual") and (self.ec or self.dc)
            self.video_query = None
            if self._need_video and not use_visual_tokens:
                self.video_query = nn.Parameter(torch.randn(1, video_queries, dim) * 0.02)
            self._build_entanglers(dim, entangled_layers, heads)

            # Audio decoder and vocoder
            self.audio_decoder = AudioDecoder(dim, gpt2, decoder_width, decoder_layers, decoder_heads,
                                              max_decoder_positions, cross_attention=self.dc,
                                              prenet_dropout=prenet_dropout, freeze_model=freeze_gpt2,
                                              gradient_checkpointing=checkpoint_gpt2,
                                              prenet_dropout_at_inference=prenet_dropout_at_inference,
                                              alignment_aid=alignment_aid)
            self.vocoder = Vocoder(vocoder)

            # Video denoiser with EC and DC
            cond_channels = 4 + 4 * motion_frames + 2
            self.video_denoiser = VideoDenoiser(cond_channels, unet_cross_dim, unet, motion_adapter, unet_width,
                                                unet_levels, heads, max_frames=max(32, num_frames),
                                                cross_attention=self.ec or self.dc, zero_output=reference_residual,
                                                gradient_checkpointing=checkpoint_unet, freeze_spatial=freeze_unet)
            cross = self.video_denoiser.cross_dim
            self.ec_proj = nn.Linear(dim, cross) if self.ec else None
            self.dc_proj = nn.Linear(self.audio_decoder.width, cross) if self.dc else None
            self.dc_slots = nn.Parameter(torch.zeros(1, FRAME_WINDOW, cross)) if self.dc else None
        self.pretrained_architectures: dict[str, dict] = architectures

    def _build_visual_encoders(self, dim: int, vae: str | None, width: int, levels: int, train_vae: bool,
                               patch_size: int, use_visual_tokens: bool, checkpoint_vae: bool = False) -> None:
        """E_va (VAE) and E_vs (masks); their patch tokens only when the prompt-guided encoders use them."""
        self.appearance_encoder = AppearanceEncoder(vae, width, levels, trainable=train_vae,
                                                    gradient_checkpointing=checkpoint_vae)
        factor = self.appearance_encoder.downsample
        if self.appearance_encoder.latent_channels != 4:
            raise ValueError(f"vae={vae!r} has {self.appearance_encoder.latent_channels} latent channels, expected 4")
        if self.image_size % (factor * patch_size):
            raise ValueError(f"image_size={self.image_size} must be a multiple of the VAE factor {factor} "
                             f"x patch_size {patch_size}")
        self.latent_size = self.image_size // factor
        self.structure_encoder = StructureEncoder(dim, factor, patch_size, self.latent_size)
        self.appearance_tokens = PatchTokens(4, dim, patch_size, self.latent_size) if use_visual_tokens else None
        if not use_visual_tokens:
            self.structure_encoder.tokens = None  # the masks still reach the UNet as maps

    def _build_entanglers(self, dim: int, layers: int, heads: int) -> None:
        """ETE: one encoder per side that needs one; STE: one shared encoder with modality embeddings."""
        self.shared_entangler = self.audio_entangler = self.video_entangler = None
        if self.entanglement == "ste":
            if self._need_audio or self._need_video:
                self.shared_entangler = EntangledEncoder(dim, layers, heads, num_modalities=2)
            return
        if self._need_audio:
            self.audio_entangler = EntangledEncoder(dim, layers, heads)
        if self._need_video:
            self.video_entangler = EntangledEncoder(dim, layers, heads)

    # ------------------------------------------------------------------ conditioning
    def _entangle(self, side: int, query: torch.Tensor, merged: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Run the side's entangled encoder (ETE) or the shared one with the side's embedding (STE)."""
        if self.shared_entangler is not None:
            return self.shared_entangler(query, merged, mask, modality=side)
        encoder = self.audio_entangler if side == AUDIO else self.video_entangler
        return encoder(query, merged, mask)

    def encode_conditions(self, text_ids: torch.Tensor, text_mask: torch.Tensor, ref_image: torch.Tensor,
                          face_mask: torch.Tensor, lip_mask: torch.Tensor,
                          profile_wav: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every conditioning signal of one batch (shapes in the module docstring).

        Returns:
            ``prefix`` (B, P, D) and ``prefix_mask`` (B, P) for the audio decoder, ``video_tokens``
            (B, Nv, D) with ``video_mask`` (B, Nv), ``ref_latent`` (B, 4, h, w), ``mask_maps`` (B, 2, h, w),
            ``text_mask`` (B, L) (the prefix ends with the L text positions).
        """
        b = text_ids.shape[0]
        text = self.text_encoder(text_ids)  # (B, L, D)
        seq = self.audio_sequence_encoder(profile_wav) if self.audio_sequence_encoder is not None else None
        speaker = self.audio_profile_encoder(profile_wav) if self.audio_profile_encoder is not None else None
        ref_latent = self.appearance_encoder.encode(ref_image)  # (B, 4, h, w)
        mask_maps = self.structure_encoder.maps(face_mask, lip_mask)  # (B, 2, h, w)
        visual = None
        if self.appearance_tokens is not None:
            masked = ref_latent * (1 - mask_maps[:, 1:2])  # mouth hidden: lips come from the audio
            visual = self.appearance_tokens(masked) + self.structure_encoder(face_mask, lip_mask)  # (B, Nv, D)

        def merge(*parts: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            tokens = [p for p in parts if p is not None]
            masks = [text_mask if p is text else text_mask.new_ones(b, p.shape[1]) for p in tokens]
            return torch.cat(tokens, dim=1), torch.cat(masks, dim=1)

        query = seq if seq is not None else self.audio_query.expand(b, -1, -1)  # (B, 10, D)
        if self._need_audio:  # Eq. 1: Q = reference-audio tokens, K/V = speaker + text (+ visual)
            audio_tokens = self._entangle(AUDIO, query, *merge(speaker, text, visual))  # (B, 10, D)
        else:
            audio_tokens = torch.cat([t for t in (seq, speaker) if t is not None] or [query], dim=1)
        prefix, prefix_mask = merge(audio_tokens, text)  # (B, P, D), (B, P)
        if self._need_video:  # Q = masked-image tokens, K/V = text + audio
            vquery = visual if visual is not None else self.video_query.expand(b, -1, -1)
            video_tokens = self._entangle(VIDEO, vquery, *merge(text, seq, speaker))  # (B, Nv, D)
            video_mask = video_tokens.new_ones(b, video_tokens.shape[1], dtype=torch.bool)
        else:
            video_tokens, video_mask = merge(visual, text)  # the raw tokens, un-entangled
        return {"prefix": prefix, "prefix_mask": prefix_mask, "video_tokens": video_tokens,
                "video_mask": video_mask, "ref_latent": ref_latent, "mask_maps": mask_maps, "text_mask": text_mask}

    @property
    def trains_vae(self) -> bool:
        """Whether the VAE is fine-tuned (then the objective adds its reconstruction loss)."""
        return bool(self.appearance_encoder.trainable)

    # ------------------------------------------------------------------ speech
    def decoder_memory(self, cond: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Video-side tokens (B, Nv, D) and their mask (B, Nv) the decoder cross-attends to (DC video ->
        audio), or ``(None, None)`` without DC."""
        return (cond["video_tokens"], cond["video_mask"]) if self.dc else (None, None)

    def decode_speech(self, cond: dict[str, torch.Tensor], mel: torch.Tensor,
                      lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Teacher-forced speech decoder on ``mel`` (B, 80, T) given :meth:`encode_conditions`' ``cond``.

        Args:
            lengths: (B,) valid frames per row; the alignment aid needs them.

        Returns:
            ``mel`` (B, 80, T) predicted frames, ``stop_logits`` (B, T), ``hidden`` (B, T, W) states; with the
            alignment aid also ``log_duration`` (B,), the predicted log length in frames.
        """
        return self.audio_decoder(cond["prefix"], cond["prefix_mask"], mel, *self.decoder_memory(cond),
                                  lengths=lengths, text_positions=cond["text_mask"].shape[1])

    def generate_mel(self, cond: dict[str, torch.Tensor], max_mel_frames: int,
                     target_lengths: torch.Tensor | None = None,
                     generators: Sequence[torch.Generator] | None = None) -> dict[str, torch.Tensor]:
        """Free-running speech decoder (its own key/value-cached loop) until every stop head fires, or
        to ``target_lengths`` (B,) frames; ``generators`` (one per row) draw the pre-net dropout.

        Returns:
            ``mel`` (B, 80, T), ``lengths`` (B,), ``hidden`` (B, T, W); see :meth:`AudioDecoder.generate`.
        """
        return self.audio_decoder.generate(cond["prefix"], cond["prefix_mask"], max_mel_frames,
                                           *self.decoder_memory(cond), text_positions=cond["text_mask"].shape[1],
                                           target_lengths=target_lengths, generators=generators)

    def audio_windows(self, audio_hidden: torch.Tensor, first_mel: torch.Tensor, num_frames: int,
                      lengths: torch.Tensor | None = None) -> torch.Tensor | None:
        """Per-video-frame windows (B, F, 3, W) of decoder states for DC, or ``None`` without DC.

        Args:
            audio_hidden: (B, T, W) decoder states; ``first_mel`` (B,) mel index of the first frame;
            lengths: (B,) valid mel frames (``None``: all); see :func:`layers.frame_windows`.
        """
        return frame_windows(audio_hidden, first_mel, num_frames, lengths) if self.dc else None

    # ------------------------------------------------------------------ video
    def denoiser_inputs(self, cond: dict[str, torch.Tensor], motion_latents: torch.Tensor,
                        windows: torch.Tensor | None, num_frames: int) -> tuple[torch.Tensor, dict]:
        """Condition channels (B, 4 + 4M + 2, F, h, w) and the denoiser's cross-attention arguments.

        The arguments: ``tokens`` (B F, N, C) per frame, EC first then DC (zeroing them gives the
        unconditional branch of classifier-free guidance); ``ec_tokens`` their EC count; ``ec_mask``
        (B F, ec_tokens) real EC tokens; ``lip_gate`` (B F, 1, h, w).
        """
        b = motion_latents.shape[0]
        maps = torch.cat([cond["ref_latent"], motion_latents, cond["mask_maps"]], dim=1)  # (B, Cc, h, w)
        maps = maps[:, :, None].expand(-1, -1, num_frames, -1, -1)  # (B, Cc, F, h, w)
        tokens, ec_count, ec_mask = [], 0, None
        if self.ec_proj is not None:
            ec = self.ec_proj(cond["video_tokens"])  # (B, Nv, C)
            ec_count = ec.shape[1]
            tokens.append(ec.repeat_interleave(num_frames, dim=0))  # (B F, Nv, C)
            ec_mask = cond["video_mask"].repeat_interleave(num_frames, dim=0)  # (B F, Nv)
        if self.dc_proj is not None:
            dc = self.dc_proj(windows) + self.dc_slots  # (B, F, 3, C)
            tokens.append(dc.flatten(0, 1))  # (B F, 3, C)
        cross = self.video_denoiser.cross_dim
        per_frame = torch.cat(tokens, dim=1) if tokens else maps.new_zeros(b * num_frames, 0, cross)
        gate = cond["mask_maps"][:, 1:2].repeat_interleave(num_frames, dim=0)  # (B F, 1, h, w)
        return maps, {"tokens": per_frame, "ec_tokens": ec_count, "ec_mask": ec_mask, "lip_gate": gate}

    def denoise(self, noisy: torch.Tensor, timesteps: torch.Tensor, maps: torch.Tensor, cross: dict) -> torch.Tensor:
        """The denoiser's prediction (B, 4, F, h, w) for ``noisy`` latents (B, 4, F, h, w) at ``timesteps``
        ((B,) or a scalar), with the condition ``maps`` and ``cross`` of :meth:`denoiser_inputs`."""
        return self.video_denoiser(torch.cat([noisy, maps], 1), timesteps, **cross)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, F, 3, H, W) in [-1, 1] -> (B, 4, F, h, w) scaled latents."""
        b, f = frames.shape[:2]
        latents = self.appearance_encoder.encode(frames.flatten(0, 1))  # (B F, 4, h, w)
        return latents.unflatten(0, (b, f)).transpose(1, 2)  # (B, 4, F, h, w)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 4, F, h, w) -> (B, F, 3, H, W) frames."""
        b, _, f = latents.shape[:3]
        frames = self.appearance_encoder.decode(latents.transpose(1, 2).flatten(0, 1))  # (B F, 3, H, W)
        return frames.unflatten(0, (b, f))

    def diffusion_target(self, latents: torch.Tensor, ref_latent: torch.Tensor) -> torch.Tensor:
        """(B, 4, F, h, w) frame latents -> what the denoiser diffuses (their change from ``ref_latent``
        (B, 4, h, w) with ``reference_residual``)."""
        return latents - ref_latent[:, :, None] if self.reference_residual else latents

    def decode_diffused(self, diffused: torch.Tensor, ref_latent: torch.Tensor, ref_image: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`diffusion_target` then decoding: (B, 4, F, h, w) -> (B, F, 3, H, W) frames.

        With ``reference_residual``: ``ref_image + D(ref_latent + r) - D(ref_latent)`` per frame.
        """
        if not self.reference_residual:
            return self.decode_latents(diffused)
        frames = self.decode_latents(diffused + ref_latent[:, :, None])  # (B, F, 3, H, W)
        return ref_image[:, None] + frames - self.appearance_encoder.decode(ref_latent)[:, None]

    def reconstruct(self, frames: torch.Tensor, ref_image: torch.Tensor) -> torch.Tensor:
        """What the network outputs when its denoiser predicts the latents of ``frames`` exactly.

        The best any generation can do through this VAE (an upper bound on the video quality).

        Args:
            frames: (B, F, 3, H, W) in [-1, 1]; ref_image (B, 3, H, W) in [-1, 1].

        Returns:
            (B, F, 3, H, W).
        """
        ref_latent = self.appearance_encoder.encode(ref_image)  # (B, 4, h, w)
        return self.decode_diffused(self.diffusion_target(self.encode_frames(frames), ref_latent), ref_latent, ref_image)

    def motion_latents(self, motion: torch.Tensor | None, ref_image: torch.Tensor) -> torch.Tensor:
        """(B, M, 3, H, W) context frames (the reference repeated when None) -> (B, 4 M, h, w)."""
        if self.motion_frames == 0:
            return ref_image.new_zeros(ref_image.shape[0], 0, self.latent_size, self.latent_size)
        if motion is None:
            motion = ref_image[:, None].expand(-1, self.motion_frames, -1, -1, -1)  # as the batch contract does
        if motion.shape[1] != self.motion_frames:
            raise ValueError(f"motion_frames tensor has {motion.shape[1]} frames, the network uses {self.motion_frames}")
        return self.encode_frames(motion).flatten(1, 2)  # (B, 4 M, h, w)


__all__ = ["ATTENDED", "ENTANGLEMENTS", "NFYNetwork"]
