"""Blocks shared by the NFY networks: pretrained loading with one clear error, token pooling,
per-frame audio windows and the reference mel of the voice profile."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from speechbrain.lobes.models.HifiGAN import mel_spectrogram
from torch import nn

from datamodules.conventions import MEL_FRAMES_PER_VIDEO_FRAME, MEL_SETTINGS

log = logging.getLogger(__name__)

T = TypeVar("T")


class PretrainedNotFoundError(OSError):
    """A pretrained part (hub id or local folder) could not be loaded, typically offline without its files.

    The message names the part and the source, says what is missing where (see
    :func:`describe_missing_files`) and how to provide it.
    """

    def __init__(self, part: str, source: str, reason: str) -> None:
        self.part, self.source, self.reason = part, source, reason
        super().__init__(f"cannot load the pretrained {part} from {source!r}: {reason.rstrip('.')}. Or pass None "
                         f"for a random-init model built from the size arguments.")


def load_pretrained(part: str, source: str, loader: Callable[..., T], subfolders: Sequence[str | None] = (None,),
                    **kwargs: Any) -> T:
    """Call ``loader(source, **kwargs)`` (a ``from_pretrained``), turning any failure into one clear error.

    Args:
        part: human name of the component (``"Wav2Vec2 audio profile encoder"``), used in the error.
        source: hub id or local folder.
        loader: a diffusers or transformers ``from_pretrained`` (e.g. ``Wav2Vec2Model.from_pretrained``).
        subfolders: where in ``source`` the model may sit, tried in order (``None``: at the top).

    Raises:
        PretrainedNotFoundError: naming ``part`` and ``source``, the files missing and how to provide them.
    """
    first_error: Exception | None = None
    for subfolder in subfolders:
        where = {} if subfolder is None else {"subfolder": subfolder}
        try:
            return loader(source, **where, **kwargs)
        except (OSError, ValueError) as error:  # HF raises OSError/ValueError subclasses
            first_error = first_error or error
    reason = describe_missing_files(source, _model_files(loader), subfolders, first_error)
    raise PretrainedNotFoundError(part, source, reason) from first_error


def _model_files(loader: Callable[..., Any]) -> list[tuple[str, ...]]:
    """Files a ``from_pretrained`` needs: the config, and the weights in any of their accepted names."""
    owner = getattr(loader, "__self__", None)
    from diffusers import ModelMixin

    if isinstance(owner, type) and issubclass(owner, ModelMixin):
        from diffusers import utils as names
        weights = (names.SAFETENSORS_WEIGHTS_NAME, names.WEIGHTS_NAME, names.SAFE_WEIGHTS_INDEX_NAME,
                   names.WEIGHTS_INDEX_NAME)
    else:
        from transformers import utils as names
        weights = (names.SAFE_WEIGHTS_NAME, names.WEIGHTS_NAME, names.SAFE_WEIGHTS_INDEX_NAME, names.WEIGHTS_INDEX_NAME)
    return [(names.CONFIG_NAME,), weights]


def describe_missing_files(source: str, files: Sequence[tuple[str, ...]], subfolders: Sequence[str | None] = (None,),
                           error: BaseException | None = None) -> str:
    """Why ``source`` (hub id or folder) gave no model: which of ``files`` are missing where, and how to provide them.

    Args:
        source: hub id or local folder.
        files: the files needed, each as the tuple of its accepted names (the first one is named).
        subfolders: where in ``source`` the files may sit (``None``: at the top); the first is named.
        error: the loader's error, quoted when no file is missing (the files are there but unreadable).

    Returns:
        One or two sentences for :class:`PretrainedNotFoundError`.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    cause = _first_line(error)
    if os.path.isdir(source):
        missing = _missing(lambda name: os.path.isfile(os.path.join(source, name)), files, subfolders)
        if not missing:
            return f"the files in the folder {source} could not be read ({cause})"
        held = sorted(os.listdir(source))
        holds = "is empty" if not held else "holds only " + ", ".join(held[:6]) + (", ..." if len(held) > 6 else "")
        return (f"the folder {source} {holds}: missing {missing}. Copy the files into it, e.g. with `hf download "
                f"<hub id> --local-dir {source}` on a machine with internet access, or `save_pretrained('{source}')` "
                f"of a loaded model")
    if not _is_repo_id(source):
        return f"there is no folder {source} (and it is no hub id): give the folder that holds the files"
    missing = _missing(lambda name: isinstance(try_to_load_from_cache(source, name), str), files, subfolders)
    if not missing:
        return f"the cached files of the hub id {source!r} could not be read ({cause})"
    cache = constants.HF_HUB_CACHE
    how = (f"To provide them, run `hf download {source} --local-dir DIR` on a machine with internet access and pass "
           f"DIR instead of {source!r}, or copy that machine's Hugging Face cache to {cache}")
    if constants.HF_HUB_OFFLINE:
        return (f"the hub id {source!r} is not in the local Hugging Face cache ({cache}) and HF_HUB_OFFLINE=1 "
                f"forbids downloading it: missing {missing}. {how}")
    return (f"the hub id {source!r} could not be fetched ({cause}) and is not in the local Hugging Face cache "
            f"({cache}): missing {missing}. {how}")


def _first_line(error: BaseException | None) -> str:
    """``Type: first line of the message`` (library messages run over many lines)."""
    if error is None:
        return "no error"
    text = str(error).strip().splitlines()
    return type(error).__name__ + (f": {text[0].rstrip('.')}" if text else "")


def _is_repo_id(source: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return True


def _missing(exists: Callable[[str], bool], files: Sequence[tuple[str, ...]], subfolders: Sequence[str | None]) -> str:
    """The files missing in the most complete of ``subfolders``, named as ``a, b (or c)``; "" if none."""
    best: list[tuple[str, ...]] | None = None
    for subfolder in subfolders:
        prefix = "" if subfolder is None else f"{subfolder}/"
        absent = [tuple(prefix + n for n in names) for names in files if not any(exists(prefix + n) for n in names)]
        if best is None or len(absent) < len(best):
            best = absent
    if not best:
        return ""
    text = ", ".join(names[0] + (f" (or {names[1]})" if len(names) > 1 else "") for names in best)
    if len(subfolders) > 1:
        text += "; or the same files " + " or ".join("at the top level" if f is None else f"in {f}/" for f in subfolders[1:])
    return text


def enable_checkpointing(model: nn.Module) -> nn.Module:
    """Non-reentrant activation checkpointing of a transformers model's layers (acts in training mode).

    transformers renames ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable``
    (the old name goes in v6): the new one is used where it exists.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


def pool_tokens(features: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Average-pool a sequence (B, T, D) to (B, num_tokens, D) over equal time spans."""
    pooled = nn.functional.adaptive_avg_pool1d(features.transpose(1, 2), num_tokens)  # (B, D, N)
    return pooled.transpose(1, 2)  # (B, N, D)


def reference_mel(wav: torch.Tensor) -> torch.Tensor:
    """Log-mel of a waveform with the conventions of ``datamodules/conventions.py``.

    The settings of speechbrain's 16 kHz LibriTTS HiFi-GAN recipe (magnitude, slaney norm and scale,
    log dynamic range compression), computed with that recipe's own function.

    Args:
        wav: (B, S) float32 in [-1, 1] at 16 kHz.

    Returns:
        (B, 80, S // 256 + 1) float32 log-mel.
    """
    return mel_spectrogram(audio=wav, **MEL_SETTINGS)  # the settings of datamodules.audio.log_mel


FRAME_WINDOW: int = math.ceil(MEL_FRAMES_PER_VIDEO_FRAME)  # 3 mel frames cover one video frame (2.5)


def frame_windows(hidden: torch.Tensor, first_mel: torch.Tensor, num_frames: int,
                  lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Per-video-frame windows of per-mel-frame states: 2.5 mel frames per video frame.

    Frame ``f`` of the window gets mel frames ``first_mel + floor(2.5 f) .. + 2`` (3 frames), clamped
    to the valid frames of each row (so a window past the speech repeats its last state).

    Args:
        hidden: (B, T, D) decoder states, one per mel frame.
        first_mel: (B,) int64 mel index of the window's first video frame.
        num_frames: F video frames in the window.
        lengths: (B,) valid mel frames per row; ``None`` means all T.

    Returns:
        (B, F, 3, D) states.
    """
    b, t, _ = hidden.shape
    offsets = torch.floor(torch.arange(num_frames, device=hidden.device) * MEL_FRAMES_PER_VIDEO_FRAME).long()
    index = first_mel[:, None, None] + offsets[None, :, None] + torch.arange(FRAME_WINDOW, device=hidden.device)
    last = (lengths if lengths is not None else torch.full((b,), t, device=hidden.device)) - 1  # (B,)
    index = torch.minimum(index.clamp(min=0), last.clamp(min=0)[:, None, None])  # (B, F, 3)
    gathered = torch.gather(hidden, 1, index.reshape(b, -1, 1).expand(-1, -1, hidden.shape[-1]))  # (B, F*3, D)
    return gathered.reshape(b, num_frames, FRAME_WINDOW, -1)  # (B, F, 3, D)
