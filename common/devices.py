"""Checking a device name given by a user before any work is done on it."""

from __future__ import annotations

import torch


def check_device(device: str | torch.device, argument: str = "device") -> torch.device:
    """``device`` as a :class:`torch.device`, if this machine has it (cpu, cuda, cuda:N or mps).

    Args:
        device: what the user asked for.
        argument: how the user gave it, for the message (``"--device"`` on a command line).

    Raises:
        ValueError: an unknown device name, or a device this machine lacks; the message names
            ``argument``, the value and what was expected.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{argument}={str(device)!r}: expected cpu, cuda, cuda:N or mps") from err
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{argument}={str(device)!r}: CUDA is not available here (use cpu)")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"{argument}={str(device)!r}: this machine has {count} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{argument}={str(device)!r}: MPS is not available here (use cpu)")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{argument}={str(device)!r}: expected cpu, cuda, cuda:N or mps")
    return parsed
