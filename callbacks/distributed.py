"""How the generating callbacks get their samples, under any strategy.

The callbacks never run the network themselves: a callback's hook is outside the wrapped forward,
where a sharding strategy (FSDP, DeepSpeed ZeRO-3) cannot run it. They ask the LightningModule for
rows of the next validation batch (``pl_module.request_generation``), its validation step
generates them and returns them, and the callback finds them in ``on_validation_batch_end``'s
``outputs`` (:mod:`lightning_modules.generation_requests` has the protocol and why it holds under
DDP and FSDP alike).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from lightning.pytorch import LightningModule, Trainer

from lightning_modules.generation_requests import shards_weights


def want_generation(callback: Any, trainer: Trainer, pl_module: LightningModule, every_rank: bool = False) -> bool:
    """Whether this process should request generation now: not in the sanity check; on rank zero (on
    every rank with ``every_rank``), and on every rank where the strategy shards the weights (all must
    then make the same calls). A module without ``request_generation`` gets one warning (per
    callback) and nothing is generated."""
    if trainer.sanity_checking or not (every_rank or trainer.is_global_zero or shards_weights(trainer.strategy)):
        return False
    if not hasattr(pl_module, "request_generation"):
        if not getattr(callback, "_warned", False):
            logging.getLogger(type(callback).__module__).warning(
                "%s: %s has no request_generation (lightning_modules.generation_requests.GenerationRequests): "
                "nothing is generated", type(callback).__name__, type(pl_module).__name__)
            callback._warned = True
        return False
    return True


def requested_output(outputs: Any, name: str) -> Optional[dict[str, Any]]:
    """``{"batch", "output"}`` that a validation step generated for the request ``name``, else ``None``."""
    if not isinstance(outputs, dict):
        return None
    return (outputs.get("generated") or {}).get(name)
