"""FSDP on CPU processes over gloo, so that the suite can run the users' FSDP config without a GPU.

Lightning's ``FSDPStrategy`` refuses a CPU accelerator, and torch's FSDP needs ``device_id`` to
accept CPU parameters; with those two set it shards, gathers and steps on the CPU as on GPUs. The
full state dict is gathered without ``offload_to_cpu`` (already on the CPU; torch crashes copying a
CPU tensor to the CPU there). Only the tests use this class (``--trainer.strategy.class_path``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.strategies import fsdp as lightning_fsdp


class CPUFSDPStrategy(FSDPStrategy):
    """:class:`FSDPStrategy` for CPU processes (tests only)."""

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        if not any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            model = FullyShardedDataParallel(module=model, sharding_strategy=self.sharding_strategy,
                                             mixed_precision=self.mixed_precision_config,
                                             device_id=torch.device("cpu"), **self.kwargs)
            self.kwargs.pop("auto_wrap_policy", None)  # wrapped: the parent must not wrap again
        return super()._setup_model(model)

    def lightning_module_state_dict(self) -> dict[str, Any]:
        with _full_state_on_cpu():
            return super().lightning_module_state_dict()

    def optimizer_state(self, optimizer: Any) -> dict[str, torch.Tensor]:
        with _full_state_on_cpu():
            return super().optimizer_state(optimizer)


@contextlib.contextmanager
def _full_state_on_cpu():
    """Lightning's full-state-dict context, without offloading to the CPU what is already there."""
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    def context(module: torch.nn.Module, world_size: int, rank0_only: bool = True):
        return FSDP.state_dict_type(module, StateDictType.FULL_STATE_DICT,
                                    FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
                                    FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only))

    original = lightning_fsdp._get_full_state_dict_context
    lightning_fsdp._get_full_state_dict_context = context
    try:
        yield
    finally:
        lightning_fsdp._get_full_state_dict_context = original
