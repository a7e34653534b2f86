"""Blocks shared by the NFY networks: pretrained loading with one clear error, token pooling,
per-frame audio windows and the reference mel of the voice profile.

Pretrained parts and checkpoints: every part loaded by :func:`load_pretrained` inside
:func:`recording_architectures` has its class and architecture config recorded; the network keeps
them and checkpoints store them. Inside :func:`stored_architectures` the same calls build each
part from its stored config at random init instead (no hub or disk access), for the checkpoint's
weights to fill: generation needs nothing but the checkpoint file.
"""

from __future__ import annotations

import logging
import math
import contextlib
import importlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, Optional, TypeVar

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
    stored = _STORED.get()
    model = _from_architecture(part, source, stored) if stored is not None else None
    first_error: Exception | None = None
    for subfolder in subfolders if model is None else ():
        where = {} if subfolder is None else {"subfolder": subfolder}
        try:
            model = loader(source, **where, **kwargs)
            break
        except (OSError, ValueError) as error:  # HF raises OSError/ValueError subclasses
            first_error = first_error or error
    if model is None:
        reason = describe_missing_files(source, _model_files(loader), subfolders, first_error)
        raise PretrainedNotFoundError(part, source, reason) from first_error
    recording = _RECORDING.get()
    if recording is not None:  # also when rebuilt from a checkpoint: its next checkpoint stores them again
        recording[part] = architecture_of(model)
    return model


# -- architectures stored in checkpoints ------------------------------------------------------------
_RECORDING: ContextVar[Optional[dict[str, dict[str, Any]]]] = ContextVar("nfy_recording", default=None)
_STORED: ContextVar[Optional[dict[str, dict[str, Any]]]] = ContextVar("nfy_stored", default=None)


@contextlib.contextmanager
def recording_architectures() -> Iterator[dict[str, dict[str, Any]]]:
    """Within the block, :func:`load_pretrained` records ``{part: architecture_of(model)}`` in the dict yielded."""
    found: dict[str, dict[str, Any]] = {}
    token = _RECORDING.set(found)
    try:
        yield found
    finally:
        _RECORDING.reset(token)


@contextlib.contextmanager
def stored_architectures(architectures: dict[str, dict[str, Any]]) -> Iterator[None]:
    """Within the block, :func:`load_pretrained` builds each part from ``architectures`` (as recorded by
    :func:`recording_architectures`) at random init, reading nothing; the vocoder skips its file too."""
    token = _STORED.set(dict(architectures))
    try:
        yield
    finally:
        _STORED.reset(token)


def building_from_checkpoint() -> bool:
    """Whether pretrained weights are about to come from a checkpoint (inside :func:`stored_architectures`)."""
    return _STORED.get() is not None


def architecture_of(model: nn.Module) -> dict[str, Any]:
    """``{"class": import path, "config": plain dict}`` of a diffusers or transformers model.

    Plain Python values only (no ``FrozenDict`` or config objects), so that a checkpoint holding it still
    opens with ``torch.load(weights_only=True)``.
    """
    config = model.config.to_dict() if hasattr(model.config, "to_dict") else dict(model.config)
    cls = type(model)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "config": _plain(config)}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # e.g. a torch.dtype: transformers reads its name back


def _from_architecture(part: str, source: str, stored: dict[str, dict[str, Any]]) -> nn.Module:
    """The model of ``stored[part]`` at random init (its weights come from the checkpoint)."""
    if part not in stored:
        raise PretrainedNotFoundError(part, source, f"the checkpoint stores no architecture for it (it holds "
                                      f"{sorted(stored) or 'none'}); it was saved before architectures were stored")
    module_name, _, name = stored[part]["class"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    config = stored[part]["config"]
    from diffusers import ModelMixin

    if issubclass(cls, ModelMixin):
        return cls.from_config(config)
    return cls(cls.config_class.from_dict(config))


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
