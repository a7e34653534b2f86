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

Training extras: with probability ``guidance_dropout`` a row's cross-attention tokens are zeroed,
so that classifier-free guidance in :meth:`NFYNetwork.generate_video` has a trained unconditional
branch; a trainable VAE adds its own reconstruction L1 to the pixel loss (``vae_recon``).

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

import torch
from torch import nn

from datamodules.batch import MEL_PAD_VALUE, NFYBatch
from datamodules.conventions import HOP_LENGTH, MEL_FRAMES_PER_VIDEO_FRAME
from lightning_modules.diffusion import sampling_scheduler, training_scheduler
from lightning_modules.networks.encoders import (
    AppearanceEncoder,
    AudioProfileEncoder,
    AudioSequenceEncoder,
    PatchTokens,
    StructureEncoder,
    TextEncoder,
)
from lightning_modules.networks.entangled import EntangledEncoder
from lightning_modules.networks.layers import FRAME_WINDOW, frame_windows
from lightning_modules.networks.speech_decoder import AudioDecoder
from lightning_modules.networks.video_denoiser import VideoDenoiser
from lightning_modules.networks.vocoder import Vocoder

log = logging.getLogger(__name__)

ENTANGLEMENTS: tuple[str, ...] = ("ete", "ste", "none")
ATTENDED: tuple[str, ...] = ("both", "visual", "audio")
AUDIO, VIDEO = 0, 1  # modality indices of the shared STE encoder


class NFYNetwork(nn.Module):
    """All NFY components; ``forward`` is the teacher-forced training pass (see the module docstring).

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
        num_train_timesteps, prediction_type: DDPM training schedule; the denoiser predicts the noise
            (``"epsilon"``), the velocity (``"v_prediction"``) or the clean latent (``"sample"``).
        reference_residual: diffuse the latent's change from the reference latent and add the decoded
            change to the reference photo (module docstring); a random UNet then starts with a zero output
            layer (with ``prediction_type="sample"`` the untrained network returns the photo unchanged).
        prenet_dropout: dropout on the decoder's pre-net in training (Tacotron 2 uses 0.5): the decoder
            cannot lean on the previous frame alone, which keeps free-running generation on track.
        stop_pos_weight: weight of the one positive (last) frame per utterance in the stop-head BCE
            (ESPnet's TTS decoders use 5), against the class imbalance of one stop in hundreds of frames.
        guidance_dropout: probability that a training row's cross-attention tokens are zeroed, so that the
            unconditional branch of classifier-free guidance is learned.
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
        num_train_timesteps: int = 1000,
        prediction_type: str = "epsilon",
        reference_residual: bool = False,
        prenet_dropout: float = 0.5,
        stop_pos_weight: float = 5.0,
        guidance_dropout: float = 0.1,
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
        if not 0.0 <= guidance_dropout < 1.0:
            raise ValueError(f"guidance_dropout must lie in [0, 1), got {guidance_dropout}")
        self.guidance_dropout = guidance_dropout
        if stop_pos_weight <= 0:
            raise ValueError(f"stop_pos_weight must be > 0, got {stop_pos_weight}")
        self.stop_pos_weight = stop_pos_weight
        self.reference_residual = reference_residual

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
                                          gradient_checkpointing=checkpoint_gpt2)
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
        self.train_scheduler = training_scheduler(num_train_timesteps, prediction_type)
        self.sample_scheduler = sampling_scheduler(self.train_scheduler)

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
            (B, Nv, D) with ``video_mask`` (B, Nv), ``ref_latent`` (B, 4, h, w), ``mask_maps`` (B, 2, h, w).
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
                "video_mask": video_mask, "ref_latent": ref_latent, "mask_maps": mask_maps}

    def _unet_inputs(self, cond: dict[str, torch.Tensor], motion_latents: torch.Tensor,
                     windows: torch.Tensor | None, num_frames: int) -> tuple[torch.Tensor, dict]:
        """Condition channels (B, 4 + 4M + 2, F, h, w) and the denoiser's cross-attention arguments.

        The arguments: ``tokens`` (B F, N, C) per frame, EC first then DC; ``ec_tokens`` their EC count;
        ``ec_mask`` (B F, ec_tokens) real EC tokens; ``lip_gate`` (B F, 1, h, w).
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

    def _encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, F, 3, H, W) -> (B, 4, F, h, w) scaled latents."""
        b, f = frames.shape[:2]
        latents = self.appearance_encoder.encode(frames.flatten(0, 1))  # (B F, 4, h, w)
        return latents.unflatten(0, (b, f)).transpose(1, 2)  # (B, 4, F, h, w)

    def _decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 4, F, h, w) -> (B, F, 3, H, W) frames."""
        b, _, f = latents.shape[:3]
        frames = self.appearance_encoder.decode(latents.transpose(1, 2).flatten(0, 1))  # (B F, 3, H, W)
        return frames.unflatten(0, (b, f))

    def _diffused(self, latents: torch.Tensor, ref_latent: torch.Tensor) -> torch.Tensor:
        """(B, 4, F, h, w) frame latents -> what the denoiser diffuses (their change from ``ref_latent``
        (B, 4, h, w) with ``reference_residual``)."""
        return latents - ref_latent[:, :, None] if self.reference_residual else latents

    def _frames(self, diffused: torch.Tensor, ref_latent: torch.Tensor, ref_image: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`_diffused` then decoding: (B, 4, F, h, w) -> (B, F, 3, H, W) frames.

        With ``reference_residual``: ``ref_image + D(ref_latent + r) - D(ref_latent)`` per frame.
        """
        if not self.reference_residual:
            return self._decode_latents(diffused)
        frames = self._decode_latents(diffused + ref_latent[:, :, None])  # (B, F, 3, H, W)
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
        return self._frames(self._diffused(self._encode_frames(frames), ref_latent), ref_latent, ref_image)

    def _motion_latents(self, motion: torch.Tensor | None, ref_image: torch.Tensor) -> torch.Tensor:
        """(B, M, 3, H, W) context frames (the reference repeated when None) -> (B, 4 M, h, w)."""
        if self.motion_frames == 0:
            return ref_image.new_zeros(ref_image.shape[0], 0, self.latent_size, self.latent_size)
        if motion is None:
            motion = ref_image[:, None].expand(-1, self.motion_frames, -1, -1, -1)  # as the batch contract does
        if motion.shape[1] != self.motion_frames:
            raise ValueError(f"motion_frames tensor has {motion.shape[1]} frames, the network uses {self.motion_frames}")
        return self._encode_frames(motion).flatten(1, 2)  # (B, 4 M, h, w)

    # ------------------------------------------------------------------ training
    def forward(self, batch: NFYBatch) -> dict[str, torch.Tensor]:
        """Teacher-forced training pass over one batch of the contract.

        Returns:
            Unweighted losses ``video_l1`` (pixel L1 of the decoded one-step x0 estimate), ``audio_mse``
            (mel MSE over valid frames), ``denoise`` (noise / v MSE), ``stop`` (stop-head BCE), and
            ``pred_frames`` (B, F, 3, H, W) in [-1, 1], ``pred_mel`` (B, 80, T), ``audio_hidden`` (B, T, W).
            With a trainable VAE, ``vae_recon`` (L1 of the VAE's own reconstruction of the target frames)
            is returned too and already included in ``video_l1``.
        """
        m, f = self.motion_frames, batch["video"].shape[1] - self.motion_frames
        if f < 1:
            raise ValueError(f"batch['video'] has {batch['video'].shape[1]} frames, need motion_frames={m} + >= 1")
        cond = self.encode_conditions(batch["text_ids"], batch["text_mask"], batch["ref_image"], batch["face_mask"],
                                      batch["lip_mask"], batch["profile_wav"])
        audio = self._audio_losses(cond, batch["mel"], batch["mel_lengths"])
        first_mel = torch.floor((batch["frame_start"] + m).clamp(min=0) * MEL_FRAMES_PER_VIDEO_FRAME).long()
        windows = frame_windows(audio["audio_hidden"], first_mel, f, batch["mel_lengths"]) if self.dc else None
        video = self._video_losses(cond, batch["video"], batch["ref_image"], windows)
        return {**audio, **video}

    def _decoder_video(self, cond: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Video-side tokens and their mask for the decoder's cross-attention (DC video -> audio), if any."""
        return (cond["video_tokens"], cond["video_mask"]) if self.dc else (None, None)

    def _audio_losses(self, cond: dict[str, torch.Tensor], mel: torch.Tensor,
                      lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.audio_decoder(cond["prefix"], cond["prefix_mask"], mel, *self._decoder_video(cond))
        valid = torch.arange(mel.shape[2], device=mel.device)[None] < lengths[:, None]  # (B, T)
        squared = ((out["mel"] - mel) ** 2).mean(1)  # (B, T)
        audio_mse = (squared * valid).sum() / valid.sum().clamp(min=1)
        stop_target = (torch.arange(mel.shape[2], device=mel.device)[None] == lengths[:, None] - 1).float()
        pos_weight = out["stop_logits"].new_tensor(self.stop_pos_weight)
        bce = nn.functional.binary_cross_entropy_with_logits(out["stop_logits"], stop_target, reduction="none",
                                                             pos_weight=pos_weight)
        stop = (bce * valid).sum() / valid.sum().clamp(min=1)
        return {"audio_mse": audio_mse, "stop": stop, "pred_mel": out["mel"], "audio_hidden": out["hidden"]}

    def _video_losses(self, cond: dict[str, torch.Tensor], video: torch.Tensor, ref_image: torch.Tensor,
                      windows: torch.Tensor | None) -> dict[str, torch.Tensor]:
        m = self.motion_frames
        target = video[:, m:]  # (B, F, 3, H, W)
        b, f = target.shape[:2]
        latents = self._encode_frames(target)  # (B, 4, F, h, w)
        diffused = self._diffused(latents, cond["ref_latent"])  # (B, 4, F, h, w)
        maps, cross = self._unet_inputs(cond, self._motion_latents(video[:, :m], ref_image), windows, f)
        if self.training and self.guidance_dropout > 0:  # learn the unconditional branch of guidance
            keep = (torch.rand(b, device=latents.device) >= self.guidance_dropout).to(latents.dtype)  # (B,)
            cross["tokens"] = cross["tokens"] * keep.repeat_interleave(f)[:, None, None]
        noise = torch.randn_like(diffused)
        steps = self.train_scheduler.config.num_train_timesteps
        t = torch.randint(0, steps, (b,), device=latents.device)
        noisy = self.train_scheduler.add_noise(diffused, noise, t)  # (B, 4, F, h, w)
        pred = self.video_denoiser(torch.cat([noisy, maps], 1), t, **cross)
        kind = self.train_scheduler.config.prediction_type
        if kind == "epsilon":
            goal = noise
        elif kind == "sample":
            goal = diffused
        else:
            goal = self.train_scheduler.get_velocity(diffused, noise, t)
        denoise = nn.functional.mse_loss(pred, goal)
        x0 = torch.cat([  # one-step x0 estimate per row (the scheduler takes one timestep per call)
            self.train_scheduler.step(pred[i : i + 1], int(t[i]), noisy[i : i + 1]).pred_original_sample
            for i in range(b)
        ])  # (B, 4, F, h, w)
        frames = self._frames(x0, cond["ref_latent"], ref_image)  # (B, F, 3, H, W)
        out = {"denoise": denoise, "video_l1": (frames - target).abs().mean(), "pred_frames": frames.clamp(-1, 1)}
        if self.appearance_encoder.trainable:
            # A fine-tuned (or random) VAE also learns to reconstruct, or its latent space could collapse
            # into one the denoiser finds trivial; the term joins the pixel loss and is logged on its own.
            recon = self._decode_latents(latents)  # (B, F, 3, H, W)
            out["vae_recon"] = (recon - target).abs().mean()
            out["video_l1"] = out["video_l1"] + out["vae_recon"]
        return out

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_speech(self, text_ids: torch.Tensor, text_mask: torch.Tensor, ref_image: torch.Tensor,
                        face_mask: torch.Tensor, lip_mask: torch.Tensor, profile_wav: torch.Tensor,
                        max_mel_frames: int = 625) -> dict[str, torch.Tensor]:
        """Autoregressive speech until the stop head fires (or ``max_mel_frames``), then the vocoder.

        Returns:
            ``mel`` (B, 80, T) (pad value after each length), ``mel_lengths`` (B,), ``wav`` (B, 256 T)
            16 kHz in [-1, 1] (0 after each length), ``wav_lengths`` (B,), ``audio_hidden`` (B, T, W).
        """
        if max_mel_frames < 1:
            raise ValueError(f"max_mel_frames must be >= 1, got {max_mel_frames}")
        cond = self.encode_conditions(text_ids, text_mask, ref_image, face_mask, lip_mask, profile_wav)
        out = self.audio_decoder.generate(cond["prefix"], cond["prefix_mask"], max_mel_frames,
                                          *self._decoder_video(cond))
        valid = torch.arange(out["mel"].shape[2], device=text_ids.device)[None] < out["lengths"][:, None]  # (B, T)
        mel = torch.where(valid[:, None], out["mel"], torch.full_like(out["mel"], MEL_PAD_VALUE))
        wav = self.vocoder(mel)  # (B, 256 T)
        wav_lengths = out["lengths"] * HOP_LENGTH
        wav = wav * (torch.arange(wav.shape[1], device=wav.device)[None] < wav_lengths[:, None])
        return {"mel": mel, "mel_lengths": out["lengths"], "wav": wav, "wav_lengths": wav_lengths,
                "audio_hidden": out["hidden"]}

    @torch.no_grad()
    def generate_video(self, ref_image: torch.Tensor, face_mask: torch.Tensor, lip_mask: torch.Tensor,
                       text_ids: torch.Tensor, text_mask: torch.Tensor, profile_wav: torch.Tensor,
                       audio_hidden: torch.Tensor, num_frames: int, motion_frames: torch.Tensor | None = None,
                       num_inference_steps: int = 25, guidance_scale: float = 1.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """One window of ``num_frames`` frames by DDIM, conditioned on the previous window's last frames.

        Args:
            audio_hidden: (B, >= 1, W) decoder states of this window's time span (2.5 per frame, the
                window starting at index 0); shorter spans repeat their last state.
            motion_frames: (B, M, 3, H, W) in [-1, 1], or ``None`` at the start of a clip.
            guidance_scale: classifier-free guidance on the cross-attention tokens (1 = off).

        Returns:
            (B, num_frames, 3, H, W) in [-1, 1].
        """
        if num_inference_steps < 1 or num_frames < 1:
            raise ValueError(f"num_inference_steps and num_frames must be >= 1, got {num_inference_steps}, {num_frames}")
        b, device = ref_image.shape[0], ref_image.device
        cond = self.encode_conditions(text_ids, text_mask, ref_image, face_mask, lip_mask, profile_wav)
        windows = None
        if self.dc:
            windows = frame_windows(audio_hidden, torch.zeros(b, dtype=torch.long, device=device), num_frames)
        maps, cross = self._unet_inputs(cond, self._motion_latents(motion_frames, ref_image), windows, num_frames)
        scheduler = self.sample_scheduler
        scheduler.set_timesteps(num_inference_steps, device=device)
        shape = (b, 4, num_frames, self.latent_size, self.latent_size)
        latents = torch.randn(shape, generator=generator, device=device) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            pred = self._guided(torch.cat([latents, maps], 1), t, cross, guidance_scale)
            latents = scheduler.step(pred, t, latents).prev_sample
        return self._frames(latents, cond["ref_latent"], ref_image).clamp(-1, 1)  # (B, F, 3, H, W)

    def _guided(self, sample: torch.Tensor, t: torch.Tensor, cross: dict, scale: float) -> torch.Tensor:
        """Classifier-free guidance: the unconditional branch sees zeroed cross-attention tokens, as the
        ``guidance_dropout`` rows of training do."""
        cond = self.video_denoiser(sample, t, **cross)
        if scale == 1.0 or cross["tokens"].shape[1] == 0:
            return cond
        uncond = self.video_denoiser(sample, t, **{**cross, "tokens": torch.zeros_like(cross["tokens"])})
        return uncond + scale * (cond - uncond)

__all__ = ["ATTENDED", "ENTANGLEMENTS", "NFYNetwork"]
