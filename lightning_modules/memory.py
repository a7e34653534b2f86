"""What one training step keeps in memory, counted without running it at full size.

:class:`SavedTensorMeter` counts the bytes a forward pass keeps for its backward pass: every tensor
autograd saves (``torch.autograd.graph.saved_tensors_hooks``), each storage once (views share it).
Activation checkpointing needs no special case: non-reentrant ``torch.utils.checkpoint`` saves each
region's inputs through autograd too, and nothing inside it. The meter works on the ``meta``
device, where nothing is allocated, so the paper's network is counted at its real size anywhere:

* attention is counted as a flash / memory-efficient kernel saves it (query, key, value, output,
  a float32 log-sum-exp per query, and an additive mask if any), not as the L x L probability
  matrix the meta device's math fallback would save;
* ``int(t)`` / ``t.item()`` of a meta tensor (a sampled diffusion step) reads as ``meta_scalar``, and
  ``bool(t)`` as True (checks such as "no padding", whose dense branch is the one that costs memory);
* saved tensors that are parameters are reported apart (``weight_copies``): under mixed precision
  autocast saves a low-precision copy of each weight a matmul used, in fp32 they cost nothing extra.

Used by ``benchmarks/memory.py`` and the tests of the memory switches.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

GIB: float = 2.0**30

PRECISION_BYTES: dict[str, int] = {"32-true": 4, "32": 4, "bf16-mixed": 2, "16-mixed": 2, "bf16-true": 2,
                                   "16-true": 2}
"""Bytes per activation element under each Lightning ``precision`` (weights of ``*-mixed`` stay fp32)."""


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata  # the StorageImpl's address: one per storage, views included


def _storage_bytes(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().nbytes()


class _FlashAttention(torch.autograd.Function):
    """Shape-only stand-in of a fused attention kernel: saves what flash / memory-efficient kernels save."""

    @staticmethod
    def forward(ctx, query, key, value, mask):  # noqa: D102
        out = query.new_empty(*query.shape[:-1], value.shape[-1])  # (B, H, Lq, Dv)
        lse = query.new_empty(query.shape[:-1], dtype=torch.float32)  # (B, H, Lq)
        ctx.save_for_backward(query, key, value, out, lse, *([] if mask is None else [mask]))
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102 - never run: the meta pass only counts the forward
        query, key, value = ctx.saved_tensors[:3]
        return torch.zeros_like(query), torch.zeros_like(key), torch.zeros_like(value), None


class _MetaMode(TorchFunctionMode):
    """Fused attention on meta tensors, and a fixed value for ``int()`` / ``.item()`` of a meta tensor."""

    def __init__(self, meta_scalar: int) -> None:
        super().__init__()
        self.meta_scalar = meta_scalar

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.__int__, torch.Tensor.item, torch.Tensor.__index__) and args[0].is_meta:
            return self.meta_scalar
        if func is torch.Tensor.__bool__ and args[0].is_meta:
            return True  # "no padding" / "all valid" checks: the dense case, the one that costs memory
        if func is nn.functional.scaled_dot_product_attention and args[0].is_meta:
            return _meta_attention(*args, **kwargs)
        return func(*args, **kwargs)


def _meta_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False) -> torch.Tensor:
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = None  # a boolean mask becomes a bias inside the kernel, not a saved input
    return _FlashAttention.apply(query, key, value, attn_mask)


class SavedTensorMeter:
    """Context manager counting the bytes a forward pass keeps for backward (module docstring).

    Args:
        module: the network; its parameters (and their views) are counted as ``weight_copies``.
        meta_scalar: what ``int()`` of a meta tensor returns (a diffusion step, a length).

    Attributes (after the block):
        saved_bytes: bytes of the saved activations, each storage once, parameters excluded.
        weight_copies: bytes of the parameters autograd saved (counted in their own dtype).
    """

    def __init__(self, module: nn.Module, meta_scalar: int = 500) -> None:
        self.module = module
        self.meta_scalar = meta_scalar
        self.saved_bytes = self.weight_copies = 0

    def __enter__(self) -> SavedTensorMeter:
        self._params = {_storage_key(p) for p in self.module.parameters()}
        self._saved: dict[int, torch.Tensor] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            self._saved.setdefault(_storage_key(tensor), tensor)
            return tensor

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor))
        self._stack.enter_context(_MetaMode(self.meta_scalar))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()
        saved = {k: v for k, v in self._saved.items() if k not in self._params}
        self.weight_copies = sum(_storage_bytes(v) for k, v in self._saved.items() if k in self._params)
        self.saved_bytes = sum(_storage_bytes(v) for v in saved.values())
        self._saved = {}


def parameter_bytes(module: nn.Module, optimizer_state_bytes: float = 8.0) -> dict[str, int]:
    """Bytes of fp32 weights, their gradients and the optimiser state of a module's parameters.

    Args:
        module: the network (its parameters may be on the meta device).
        optimizer_state_bytes: state per trainable parameter: 8 for AdamW (two fp32 moments), 2 for
            8-bit AdamW (two uint8 moments; its per-block scales are a fraction of a percent).

    Returns:
        ``weights`` (all parameters, in their dtype), ``gradients`` (trainable ones, same dtype),
        ``optimizer`` and the counts ``parameters`` / ``trainable``.
    """
    params = list(module.parameters())
    trainable = [p for p in params if p.requires_grad]
    return {
        "weights": sum(p.numel() * p.element_size() for p in params),
        "gradients": sum(p.numel() * p.element_size() for p in trainable),
        "optimizer": int(sum(p.numel() for p in trainable) * optimizer_state_bytes),
        "parameters": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in trainable),
    }


__all__ = ["GIB", "PRECISION_BYTES", "SavedTensorMeter", "parameter_bytes"]
