"""The batch contract: every DataModule in nfy yields exactly :class:`NFYBatch` (DESIGN.md section 3).

Shapes use B batch, L text tokens, H/W image side, F video frames, S audio samples, T mel frames.

====================  =====================  ========  ==========================================
key                   shape                  dtype     values
====================  =====================  ========  ==========================================
``text_ids``          (B, L)                 int64     BPE token ids, 0 (``<pad>``) after the end
``text_mask``         (B, L)                 bool      True on real tokens
``ref_image``         (B, 3, H, W)           float32   [-1, 1], RGB, the clip's first frame
``face_mask``         (B, 1, H, W)           float32   {0, 1}, 1 inside the face
``lip_mask``          (B, 1, H, W)           float32   {0, 1}, 1 around the mouth
``profile_wav``       (B, 32000)             float32   [-1, 1], first 2 s of the utterance at 16 kHz
``video``             (B, F, 3, H, W)        float32   [-1, 1], frames ``frame_start`` .. + F - 1
``frame_start``       (B,)                   int64     index (25 fps) of ``video[:, 0]`` in the clip
``wav``               (B, S)                 float32   [-1, 1], whole utterance, 0 after its end
``wav_lengths``       (B,)                   int64     valid samples per row of ``wav``
``mel``               (B, 80, T)             float32   log-mel (conventions.py), pad value after end
``mel_lengths``       (B,)                   int64     valid frames per row of ``mel``
``key``               list[str] (B)                    clip key, unique within its dataset
``speaker``           list[str] (B)                    speaker id (splits are speaker-disjoint)
``dataset``           list[str] (B)                    dataset name (``demo``, ``voxceleb`` ...)
====================  =====================  ========  ==========================================

``video`` holds ``motion_frames + num_frames`` frames: the first ``motion_frames`` (2 by default)
are the motion context that precede the window the model must generate; where the window starts
at the beginning of the clip, the motion frames repeat the reference frame and
``frame_start`` is negative.

Besides the batches, every DataModule sets one attribute in ``setup``: ``tokenizer``, the
``tokenizers.Tokenizer`` that produced ``text_ids`` (``None`` before ``setup``).
:class:`~lightning_modules.NFYLitModule` reads exactly this attribute and stores the tokenizer in
every checkpoint, so that generation encodes text with the vocabulary the model was trained on.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, TypedDict

import torch

from datamodules.conventions import MEL_PAD_VALUE, N_MELS, PROFILE_SAMPLES



class NFYBatch(TypedDict):
    """One batch of the contract; see the module docstring for shapes, dtypes and ranges."""

    text_ids: torch.Tensor
    text_mask: torch.Tensor
    ref_image: torch.Tensor
    face_mask: torch.Tensor
    lip_mask: torch.Tensor
    profile_wav: torch.Tensor
    video: torch.Tensor
    frame_start: torch.Tensor
    wav: torch.Tensor
    wav_lengths: torch.Tensor
    mel: torch.Tensor
    mel_lengths: torch.Tensor
    key: list[str]
    speaker: list[str]
    dataset: list[str]


BATCH_KEYS: tuple[str, ...] = tuple(NFYBatch.__annotations__)


def collate(samples: Sequence[Mapping[str, Any]]) -> NFYBatch:
    """Stack per-clip samples into an :class:`NFYBatch`, right-padding text, audio and mel.

    Each sample carries unbatched tensors: ``text_ids`` (L,), ``ref_image`` (3, H, W), ``face_mask``
    and ``lip_mask`` (1, H, W), ``profile_wav`` (32000,), ``video`` (F, 3, H, W), ``frame_start``
    (int), ``wav`` (S,), ``mel`` (80, T) and the strings ``key``, ``speaker``, ``dataset``.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    text_ids, text_mask = pad_text([s["text_ids"] for s in samples])
    wav, wav_lengths = _pad([s["wav"] for s in samples], 0.0)
    mel, mel_lengths = _pad([s["mel"] for s in samples], MEL_PAD_VALUE)
    return NFYBatch(
        text_ids=text_ids.long(),
        text_mask=text_mask,
        ref_image=torch.stack([s["ref_image"] for s in samples]).float(),
        face_mask=torch.stack([s["face_mask"] for s in samples]).float(),
        lip_mask=torch.stack([s["lip_mask"] for s in samples]).float(),
        profile_wav=torch.stack([s["profile_wav"] for s in samples]).float(),
        video=torch.stack([s["video"] for s in samples]).float(),
        frame_start=torch.tensor([int(s["frame_start"]) for s in samples], dtype=torch.long),
        wav=wav.float(),
        wav_lengths=wav_lengths,
        mel=mel.float(),
        mel_lengths=mel_lengths,
        key=[str(s["key"]) for s in samples],
        speaker=[str(s["speaker"]) for s in samples],
        dataset=[str(s["dataset"]) for s in samples],
    )


def pad_text(ids: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (L_i,) int64 token ids with 0 (``<pad>``) into ``text_ids`` (B, L) and ``text_mask`` (B, L).

    What :func:`collate` does to the texts; generation pads its texts the same way.
    """
    return _pad(ids, 0)


def _pad(tensors: Sequence[torch.Tensor], value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad along the last dim; returns (padded, mask) for 1-D inputs, (padded, lengths) else."""
    lengths = torch.tensor([t.shape[-1] for t in tensors], dtype=torch.long)
    out = tensors[0].new_full((len(tensors), *tensors[0].shape[:-1], int(lengths.max())), value)
    for row, tensor in zip(out, tensors):
        row[..., : tensor.shape[-1]] = tensor
    if tensors[0].dim() == 1 and tensors[0].dtype in (torch.int64, torch.int32):
        mask = torch.arange(out.shape[-1])[None, :] < lengths[:, None]
        return out, mask
    return out, lengths


def validate_batch(batch: Mapping[str, Any]) -> None:
    """Check ``batch`` against the contract; raise ``ValueError`` naming the first key that breaks it.

    Used by every DataModule test and, cheaply, by the LightningModule on its first batch.
    """
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise ValueError(f"batch lacks keys {missing}; the contract has {list(BATCH_KEYS)}")
    b = batch["text_ids"].shape[0]
    _check(batch, "text_ids", torch.int64, (b, None))
    _check(batch, "text_mask", torch.bool, tuple(batch["text_ids"].shape))
    _check(batch, "ref_image", torch.float32, (b, 3, None, None), (-1.0, 1.0))
    h, w = batch["ref_image"].shape[-2:]
    for name in ("face_mask", "lip_mask"):
        _check(batch, name, torch.float32, (b, 1, h, w), (0.0, 1.0))
    _check(batch, "profile_wav", torch.float32, (b, PROFILE_SAMPLES), (-1.0, 1.0))
    _check(batch, "video", torch.float32, (b, None, 3, h, w), (-1.0, 1.0))
    _check(batch, "frame_start", torch.int64, (b,))
    _check(batch, "wav", torch.float32, (b, None), (-1.0, 1.0))
    _check(batch, "wav_lengths", torch.int64, (b,))
    _check(batch, "mel", torch.float32, (b, N_MELS, None))
    _check(batch, "mel_lengths", torch.int64, (b,))
    if int(batch["wav_lengths"].max()) > batch["wav"].shape[1]:
        raise ValueError("wav_lengths exceed the padded wav length")
    if int(batch["mel_lengths"].max()) > batch["mel"].shape[2]:
        raise ValueError("mel_lengths exceed the padded mel length")
    for name in ("key", "speaker", "dataset"):
        values = batch[name]
        if not isinstance(values, (list, tuple)) or len(values) != b or not all(isinstance(v, str) for v in values):
            raise ValueError(f"batch[{name!r}] must be a list of {b} strings, got {values!r}")


def _check(batch, name, dtype, shape, value_range=None) -> None:
    tensor = batch[name]
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"batch[{name!r}] must be a tensor, got {type(tensor).__name__}")
    if tensor.dtype != dtype:
        raise ValueError(f"batch[{name!r}] must be {dtype}, got {tensor.dtype}")
    if tensor.dim() != len(shape) or any(e is not None and e != a for e, a in zip(shape, tensor.shape)):
        raise ValueError(f"batch[{name!r}] must have shape {shape} (None = any), got {tuple(tensor.shape)}")
    if value_range is not None and tensor.numel():
        low, high = float(tensor.min()), float(tensor.max())
        if low < value_range[0] - 1e-6 or high > value_range[1] + 1e-6:
            raise ValueError(f"batch[{name!r}] must lie in {list(value_range)}, got [{low:.4g}, {high:.4g}]")
