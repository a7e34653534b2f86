"""When a training callback may call ``pl_module.generate_batch`` outside the wrapped training step.

Under DDP every process holds all the weights: a callback can generate on any rank with the
LightningModule itself (the unwrapped module; no collective runs outside the wrapper's forward).
Under a sharding strategy (FSDP, DeepSpeed, model parallel) a rank holds only its shard: calling
the network outside the wrapped forward either sees empty parameters or starts all-gathers that
the other ranks, which generate different lengths or nothing, never join, and training hangs.
Those callbacks then skip, with one warning; generate from the saved checkpoint instead
(``python -m experiments.generate``).
"""

from __future__ import annotations

import logging
from typing import Optional

from lightning.pytorch import Trainer
from lightning.pytorch.strategies import (
    DDPStrategy,
    DeepSpeedStrategy,
    SingleDeviceStrategy,
)

FULL_COPY_STRATEGIES: tuple[type, ...] = (SingleDeviceStrategy, DDPStrategy)
"""Strategies whose every rank holds the whole model (DDP subclasses such as ddp_spawn included)."""


def why_no_generation(trainer: Trainer) -> Optional[str]:
    """``None`` when callbacks may generate with the LightningModule; else why not (for the warning)."""
    strategy = trainer.strategy
    if isinstance(strategy, FULL_COPY_STRATEGIES) and not _deepspeed_stage_3(strategy):
        return None
    return (f"{type(strategy).__name__} shards the weights across processes, so generating outside "
            "the training step would hang or fail; generate from a checkpoint with python -m experiments.generate")


def generation_blocked(callback: object, trainer: Trainer, what: str) -> bool:
    """True when ``callback`` must not generate under ``trainer``'s strategy; warns once per callback
    (``"<callback class> <what>: <reason>"``), remembering that in ``callback._warned``."""
    reason = why_no_generation(trainer)
    if reason is None:
        return False
    if not getattr(callback, "_warned", False):
        logging.getLogger(type(callback).__module__).warning("%s %s: %s", type(callback).__name__, what, reason)
        callback._warned = True
    return True


def _deepspeed_stage_3(strategy: object) -> bool:
    """DeepSpeed derives from DDPStrategy, but its ZeRO stage 3 shards the parameters like FSDP."""
    if not isinstance(strategy, DeepSpeedStrategy):
        return False
    return (getattr(strategy, "config", None) or {}).get("zero_optimization", {}).get("stage") == 3
