"""Open a checkpoint file before any work depends on it: one clear error per unreadable file.

Training (``experiments.fit --ckpt_path``) and generation both start from a checkpoint; a missing,
empty, truncated or foreign file should stop them at once with one line naming the file and the
problem, not with a traceback from deep inside ``torch.load`` after logs were created.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Union

import torch

RESUME_KEYS: tuple[str, ...] = ("optimizer_states", "loops")
"""Top-level keys that resuming training needs besides the weights (``save_weights_only`` files lack them)."""


class CheckpointError(ValueError):
    """A file that is not a readable training checkpoint; the message names the file and the problem."""


def check_checkpoint(path: Union[str, os.PathLike], *, weights_only: bool = True,
                     resumable: bool = False) -> dict[str, Any]:
    """Open ``path`` as a Lightning checkpoint without reading its tensors, or raise :class:`CheckpointError`.

    The file is read with ``torch.load(path, map_location="cpu", weights_only=weights_only,
    mmap=True)``: the pickled structure is parsed, tensor storages are only memory-mapped, so the
    check takes milliseconds even for gigabytes (a flipped bit inside tensor data goes unnoticed).

    Args:
        path: the checkpoint file.
        weights_only: unpickle with PyTorch's restricted loader, as ``Trainer.fit(ckpt_path=...)``
            does; ``False`` allows any pickled object (trusted files only: unpickling runs code).
        resumable: also require what resuming training needs (:data:`RESUME_KEYS`).

    Returns:
        The checkpoint dict, its tensors memory-mapped from the file.

    Raises:
        CheckpointError: no such file, a folder, unreadable, empty, not a zip archive (truncated or
            another kind of file), refused by the weights-only unpickler, not a Lightning checkpoint
            (no ``state_dict``), or, with ``resumable``, weights only.
    """
    path = Path(path)

    def fail(problem: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {str(path)!r}: {problem}")

    if not path.exists():
        raise fail("no such file")
    if path.is_dir():
        raise fail("is a folder, not a checkpoint file")
    if not os.access(path, os.R_OK):
        raise fail("cannot be read (permission denied)")
    size = path.stat().st_size
    if size == 0:
        raise fail("is empty (0 bytes)")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive whose directory is at the end
        raise fail(f"is not a PyTorch checkpoint: no zip archive in its {size} bytes (a truncated copy, or "
                   "another kind of file)")
    checkpoint = _load(path, weights_only, fail)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise fail(f"is a PyTorch file but not a Lightning checkpoint (no 'state_dict'; holds a "
                   f"{type(checkpoint).__name__})")
    missing = [key for key in RESUME_KEYS if key not in checkpoint] if resumable else []
    if missing:
        raise fail(f"holds model weights only (no {', '.join(missing)}; ModelCheckpoint(save_weights_only=True) "
                   "writes such files): it cannot resume training")
    return checkpoint


def _load(path: Path, weights_only: bool, fail) -> Any:
    """``torch.load`` memory-mapped on CPU; its errors become one-line :class:`CheckpointError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except pickle.UnpicklingError as err:
        if weights_only and "weights_only" in str(err):
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
            refused = found.group(1) if found else _first_line(err)
            raise fail(f"holds objects that a weights-only load refuses ({refused})") from err
        raise fail(f"cannot be unpickled ({_first_line(err)})") from err
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise fail(f"cannot be read ({_first_line(err)})") from err


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


__all__: list[str] = ["RESUME_KEYS", "CheckpointError", "check_checkpoint"]
