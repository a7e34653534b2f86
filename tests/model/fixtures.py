"""Shared fixtures of the model tests: a stand-in network, synthetic batches, the ablation table.

The classes are also named by class path in YAML and on the command line (``STAND_IN``,
``STAND_IN_NETWORK``, ``SYNTHETIC_DATA``), so the CLI tests can train and generate without files
and without the real network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from lightning.pytorch import LightningDataModule
from torch import nn
from torch.utils.data import DataLoader

from datamodules.batch import collate
from datamodules.conventions import PROFILE_SAMPLES

STAND_IN_NETWORK = f"{__name__}.StandInNetwork"
"""Class path of :class:`StandInNetwork` for configs and ``--model.init_args.net``."""
SYNTHETIC_DATA = f"{__name__}.SyntheticDataModule"
"""Class path of :class:`SyntheticDataModule` for configs and ``--data``."""

STAND_IN = f"""
model:
  class_path: lightning_modules.NFYLitModule
  init_args:
    net: {STAND_IN_NETWORK}
    optimizer:
      class_path: torch.optim.AdamW
      init_args: {{lr: 1.0e-2, weight_decay: 1.0e-2}}
    scheduler:
      class_path: torch.optim.lr_scheduler.StepLR
      init_args: {{step_size: 3, gamma: 0.5}}
data:
  class_path: {SYNTHETIC_DATA}
  init_args: {{num_samples: 6, batch_size: 2}}
trainer:
  accelerator: cpu
  limit_val_batches: 1
  num_sanity_val_steps: 1
"""
"""A whole config: the stand-in network on synthetic batches, AdamW + StepLR, CPU."""


class StandInNetwork(nn.Module):
    """The NFYNetwork compute interface with linear internals: learns, generates, costs nothing.

    Its "VAE" is the identity on pixels padded to 4 channels (latent side = image side), its
    denoiser a linear map of the pooled text, its vocoder noise. It records what generation passes
    to it: ``video_calls`` (per window: the audio states and the motion frames), ``denoise_calls``.
    """

    def __init__(self, vocab_size: int = 32, image_size: int = 16, num_frames: int = 4, motion_frames: int = 2,
                 hidden: int = 8, speech_frames: int = 13) -> None:
        super().__init__()
        self.image_size, self.num_frames, self.motion_frames = image_size, num_frames, motion_frames
        self.latent_size, self.trains_vae = image_size, False
        self.speech_frames, self.hidden = speech_frames, hidden
        self.embed = nn.Embedding(vocab_size, hidden)
        self.to_latent = nn.Linear(hidden, 4)
        self.to_mel = nn.Linear(hidden, 80)
        self.to_stop = nn.Linear(hidden, 1)
        self.video_calls: list[dict] = []
        self.denoise_calls = 0

    def vocoder(self, mel: torch.Tensor) -> torch.Tensor:
        return torch.tanh(torch.randn(mel.shape[0], mel.shape[2] * 256)) * 0.1  # (B, 256 T)

    def encode_conditions(self, text_ids, text_mask, ref_image, face_mask, lip_mask, profile_wav) -> dict:
        emb = self.embed(text_ids) * text_mask[..., None]  # (B, L, D)
        text = emb.sum(1) / text_mask.sum(1, keepdim=True).clamp(min=1)  # (B, D)
        return {"text": text, "ref_latent": self.encode_frames(ref_image[:, None])[:, :, 0]}

    def decode_speech(self, cond: dict, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> dict:
        b, _, t = mel.shape
        return {"mel": self.to_mel(cond["text"])[:, :, None].expand_as(mel),
                "stop_logits": self.to_stop(cond["text"]).expand(b, t),
                "hidden": torch.arange(t, dtype=torch.float)[None, :, None].expand(b, t, self.hidden)}

    def generate_mel(self, cond: dict, max_mel_frames: int, target_lengths: torch.Tensor | None = None,
                     generators: list | None = None) -> dict:
        b, t = cond["text"].shape[0], min(self.speech_frames, max_mel_frames)
        lengths = torch.full((b,), t, dtype=torch.long)
        if target_lengths is not None:
            lengths, t = target_lengths.long(), int(target_lengths.max())
        return {"mel": self.to_mel(cond["text"])[:, :, None].expand(b, 80, t),
                "lengths": lengths,
                "hidden": torch.arange(t, dtype=torch.float)[None, :, None].expand(b, t, self.hidden)}

    def audio_windows(self, audio_hidden, first_mel, num_frames, lengths=None) -> None:
        self.video_calls.append({"hidden": audio_hidden.clone()})

    def motion_latents(self, motion, ref_image) -> torch.Tensor:
        self.video_calls[-1]["motion"] = motion
        return ref_image.new_zeros(ref_image.shape[0], 0, self.image_size, self.image_size)

    def denoiser_inputs(self, cond: dict, motion_latents, windows, num_frames: int) -> tuple[torch.Tensor, dict]:
        b = cond["text"].shape[0]
        maps = cond["ref_latent"].new_zeros(b, 0, num_frames, self.image_size, self.image_size)
        return maps, {"tokens": cond["text"][:, None].repeat_interleave(num_frames, dim=0)}  # (B F, 1, D)

    def denoise(self, noisy: torch.Tensor, timesteps, maps, cross: dict) -> torch.Tensor:
        self.denoise_calls += 1
        b, _, f = noisy.shape[:3]
        bias = self.to_latent(cross["tokens"].mean(1)).unflatten(0, (b, f)).transpose(1, 2)  # (B, 4, F)
        return 0.1 * noisy + bias[..., None, None]

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        pad = frames.new_zeros(*frames.shape[:2], 1, *frames.shape[3:])
        return torch.cat([frames, pad], dim=2).transpose(1, 2)  # (B, 4, F, H, W)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents[:, :3].transpose(1, 2)  # (B, F, 3, H, W)

    def diffusion_target(self, latents: torch.Tensor, ref_latent: torch.Tensor) -> torch.Tensor:
        return latents

    def decode_diffused(self, diffused: torch.Tensor, ref_latent: torch.Tensor, ref_image: torch.Tensor) -> torch.Tensor:
        return self.decode_latents(diffused)


def synthetic_sample(index: int, vocab_size: int = 32, image_size: int = 16, frames: int = 6) -> dict:
    """One per-clip sample of the batch contract, seeded by ``index``."""
    g = torch.Generator().manual_seed(index)
    n_text, seconds = 5 + index % 3, 0.4 + 0.1 * (index % 2)
    wav = torch.rand(int(seconds * 16000), generator=g) * 0.2 - 0.1
    masks = torch.zeros(1, image_size, image_size)
    masks[:, image_size // 4 : -image_size // 4, image_size // 4 : -image_size // 4] = 1
    return {
        "text_ids": torch.randint(1, vocab_size, (n_text,), generator=g),
        "ref_image": torch.rand(3, image_size, image_size, generator=g) * 2 - 1,
        "face_mask": masks, "lip_mask": masks,
        "profile_wav": torch.rand(PROFILE_SAMPLES, generator=g) * 0.2 - 0.1,
        "video": torch.rand(frames, 3, image_size, image_size, generator=g) * 2 - 1,
        "frame_start": -2, "wav": wav,
        "mel": torch.randn(80, int(seconds * 62.5), generator=g) - 4,
        "key": f"clip{index}", "speaker": f"spk{index % 2}", "dataset": "synthetic",
    }


class SyntheticDataModule(LightningDataModule):
    """Batches of the NFY contract from seeded random samples (no files)."""

    def __init__(self, vocab_size: int = 32, image_size: int = 16, num_frames: int = 4, motion_frames: int = 2,
                 num_samples: int = 4, batch_size: int = 2) -> None:
        super().__init__()
        self.vocab_size, self.image_size = vocab_size, image_size
        self.num_frames, self.motion_frames = num_frames, motion_frames
        self.num_samples, self.batch_size = num_samples, batch_size

    def _loader(self, offset: int, shuffle: bool = False) -> DataLoader:
        samples = [synthetic_sample(offset + i, self.vocab_size, self.image_size, self.num_frames + self.motion_frames)
                   for i in range(self.num_samples)]
        return DataLoader(samples, batch_size=self.batch_size, collate_fn=collate, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(0, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(100)

    def test_dataloader(self) -> DataLoader:
        return self._loader(200)


@dataclass(frozen=True)
class Ablation:
    """One ablation of NFYNetwork (paper Tables 6 and 7) and what it changes in the full network.

    Attributes:
        flags: the NFYNetwork arguments it sets (also what ``configs/<name>.yaml`` sets).
        removed: submodules and parameters of the full network it no longer has, as dotted names.
        added: submodules and parameters it has that the full network lacks.
    """

    flags: dict
    removed: frozenset[str]
    added: frozenset[str] = field(default_factory=frozenset)


ABLATIONS: dict[str, Ablation] = {
    "ste": Ablation({"entanglement": "ste"}, frozenset({"audio_entangler", "video_entangler"}),
                    frozenset({"shared_entangler"})),
    "no_te": Ablation({"entanglement": "none"}, frozenset({"audio_entangler", "video_entangler"})),
    "dc_off": Ablation({"diffusion_cross_attention": False}, frozenset({"dc_proj", "dc_slots"})),
    "ec_off": Ablation({"embedding_cross_attention": False}, frozenset({"ec_proj"})),
    "dc_ec_off": Ablation({"diffusion_cross_attention": False, "embedding_cross_attention": False},
                          frozenset({"dc_proj", "dc_slots", "ec_proj", "video_entangler"})),
    "only_visual_tokens": Ablation({"attended_tokens": "visual"}, frozenset({"audio_entangler"})),
    "only_audio_tokens": Ablation({"attended_tokens": "audio"}, frozenset({"video_entangler"})),
    "no_audio_sequence": Ablation({"use_audio_sequence_encoder": False}, frozenset({"audio_sequence_encoder"}),
                                  frozenset({"audio_query"})),
    "no_audio_profile": Ablation({"use_audio_profile_encoder": False}, frozenset({"audio_profile_encoder"})),
    "no_visual_tokens": Ablation({"use_visual_tokens": False}, frozenset({"appearance_tokens", "structure_encoder.tokens"}),
                                 frozenset({"video_query"})),
}
"""Every ablation, by the name of its config in ``configs/`` (without ``.yaml``)."""


def network_parts(net: nn.Module) -> set[str]:
    """Dotted names of every submodule and parameter of ``net`` (a ``None`` attribute is no part)."""
    return {name for name, _ in net.named_modules() if name} | {name for name, _ in net.named_parameters()}
