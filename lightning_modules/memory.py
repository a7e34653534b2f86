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
* autocast, which does not act on meta tensors, is emulated on request (``autocast=torch.bfloat16``):
  the matmul/convolution/attention ops get bf16 inputs, norms, softmax and losses float32 ones, so
  the bf16 weight copies autocast saves for backward are counted as it keeps them;
* saved tensors that are parameters are reported apart (``weight_copies``, free in fp32).

Used by ``benchmarks/memory.py`` and the tests of the memory switches.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

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


F = nn.functional
LOW_PRECISION_OPS = frozenset({F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
                               torch.matmul, torch.bmm, torch.baddbmm, torch.addmm, torch.mm,
                               torch.Tensor.__matmul__, torch.Tensor.matmul, torch.Tensor.bmm,
                               F.scaled_dot_product_attention})
"""Ops CUDA autocast runs in bf16 (its lower-precision list, the ones these networks call)."""
FP32_LOSSES = frozenset({F.mse_loss, F.l1_loss, F.binary_cross_entropy_with_logits})
"""Ops CPU autocast runs in float32 (its fp32 list, the ones these networks call)."""
FP32_OPS = FP32_LOSSES | {F.layer_norm, F.group_norm, F.softmax, torch.softmax, torch.Tensor.softmax, F.log_softmax,
                          torch.exp, torch.Tensor.exp, torch.pow, torch.Tensor.pow, torch.Tensor.__pow__}
"""Ops CUDA autocast runs in float32 (its fp32 list, the ones these networks call): norms too."""


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
        return value.to(dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


class _MetaMode(TorchFunctionMode):
    """On meta tensors: fused attention, autocast's casts (``autocast``), and a fixed value for ``int()``."""

    def __init__(self, meta_scalar: int, autocast: torch.dtype | None = None,
                 fp32_ops: frozenset = FP32_OPS, fused_attention: bool = True) -> None:
        super().__init__()
        self.meta_scalar = meta_scalar
        self.autocast = autocast
        self.fp32_ops = fp32_ops
        self.fused_attention = fused_attention

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        meta = bool(args) and isinstance(args[0], torch.Tensor) and args[0].is_meta
        if self.autocast is not None and meta and func in LOW_PRECISION_OPS:
            args, kwargs = _cast(args, self.autocast), {k: _cast(v, self.autocast) for k, v in kwargs.items()}
        elif self.autocast is not None and meta and func in self.fp32_ops:
            args = _cast(args, torch.float32)
        if func in (torch.Tensor.__int__, torch.Tensor.item, torch.Tensor.__index__) and args[0].is_meta:
            return self.meta_scalar
        if func is torch.Tensor.__bool__ and args[0].is_meta:
            return True  # "no padding" / "all valid" checks: the dense case, the one that costs memory
        if self.fused_attention and func is nn.functional.scaled_dot_product_attention and args[0].is_meta:
            return _meta_attention(*args, **kwargs)
        return func(*args, **kwargs)


def _meta_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False) -> torch.Tensor:
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = None  # a boolean mask becomes a bias inside the kernel, not a saved input
    return _FlashAttention.apply(query, key, value, attn_mask)


def meta_semantics(meta_scalar: int = 500, autocast: torch.dtype | None = None,
                   fused_attention: bool = True) -> TorchFunctionMode:
    """The meta-device conventions of :class:`SavedTensorMeter` as a context manager of their own.

    ``int()`` / ``.item()`` of a meta tensor read as ``meta_scalar`` and ``bool()`` as True;
    ``autocast`` emulates CUDA autocast's casts; ``fused_attention`` replaces attention by a
    shape-only fused kernel (off: torch's own attention runs, so that a FLOP counter sees it).
    """
    return _MetaMode(meta_scalar, autocast, fused_attention=fused_attention)


class SavedTensorMeter:
    """Context manager counting the bytes a forward pass keeps for backward (module docstring).

    Args:
        module: the network; its parameters (and their views) are counted as ``weight_copies``.
        meta_scalar: what ``int()`` of a meta tensor returns (a diffusion step, a length).
        autocast: a low-precision dtype: meta tensors are cast as CUDA autocast would
            (:data:`LOW_PRECISION_OPS` to it, ``fp32_ops`` to float32); autocast itself does not act
            on the meta device.
        fp32_ops: the ops autocast runs in float32: :data:`FP32_OPS` (CUDA, the default) or
            :data:`FP32_LOSSES` (CPU autocast keeps norms and softmax in bf16).
        components: ``{name: submodule}``; a saved tensor counts for the innermost one running when
            it is saved (``"other"`` outside them).
        regions: module classes whose instances are recomputed as one by activation checkpointing;
            ``largest_region`` is the most any one (outermost) instance saved: what the backward pass
            holds again while it recomputes that region, when checkpointing is on.

    Attributes (after the block):
        saved_bytes: bytes of the saved activations, each storage once, parameters excluded.
        by_component: the same bytes per component name.
        weight_copies: bytes of the parameters autograd saved (counted in their own dtype).
        largest_region: see ``regions``; ``largest_region_by_component`` the same per component.
    """

    def __init__(self, module: nn.Module, meta_scalar: int = 500, autocast: torch.dtype | None = None,
                 fp32_ops: frozenset = FP32_OPS, components: dict[str, nn.Module] | None = None,
                 regions: tuple[type, ...] = ()) -> None:
        self.module = module
        self.autocast = autocast
        self.fp32_ops = fp32_ops
        self.meta_scalar = meta_scalar
        self.components = components or {}
        self.regions = regions
        self.saved_bytes = self.weight_copies = self.largest_region = 0
        self.by_component: dict[str, int] = {}
        self.largest_region_by_component: dict[str, int] = {}

    def _hooks(self) -> list:
        """Forward hooks that keep the stacks of running components and checkpointed regions."""
        handles = []

        calls = iter(range(1 << 62))

        def track(stack: list, label: Any) -> None:
            def push(*_):  # a region is one call (a block may run several times per forward)
                stack.append(label if label is not None else next(calls))

            def pop(*_):
                stack.pop()

            handles.append(module.register_forward_pre_hook(push))
            handles.append(module.register_forward_hook(pop, always_call=True))

        for name, module in self.components.items():
            track(self._component_stack, name)
        for module in self.module.modules():
            if self.regions and isinstance(module, self.regions):
                track(self._region_stack, None)
        return handles

    def __enter__(self) -> SavedTensorMeter:
        self._params = {_storage_key(p) for p in self.module.parameters()}
        self._saved: dict[int, tuple[torch.Tensor, str, Any]] = {}
        self._component_stack: list[str] = []
        self._region_stack: list[int] = []

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            component = self._component_stack[-1] if self._component_stack else "other"
            region = self._region_stack[0] if self._region_stack else None
            self._saved.setdefault(_storage_key(tensor), (tensor, component, region))
            return tensor

        self._stack = contextlib.ExitStack()
        for handle in self._hooks():
            self._stack.callback(handle.remove)
        self._stack.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor))
        self._stack.enter_context(_MetaMode(self.meta_scalar, self.autocast, self.fp32_ops))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()
        self.weight_copies = sum(_storage_bytes(t) for k, (t, _, _) in self._saved.items() if k in self._params)
        self.by_component, regions = {}, {}
        for key, (tensor, component, region) in self._saved.items():
            if key in self._params:
                continue
            size = _storage_bytes(tensor)
            self.by_component[component] = self.by_component.get(component, 0) + size
            if region is not None:
                regions[region, component] = regions.get((region, component), 0) + size
        self.saved_bytes = sum(self.by_component.values())
        self.largest_region_by_component = {}
        for (_, component), size in regions.items():
            best = self.largest_region_by_component.get(component, 0)
            self.largest_region_by_component[component] = max(best, size)
        self.largest_region = max(self.largest_region_by_component.values(), default=0)
        self._saved = {}


class LiveTensorMeter(TorchDispatchMode):
    """Context manager: the peak of bytes held by the tensors created inside it (``peak_bytes``).

    Each storage counts from the op that creates it until the last tensor viewing it is freed, so
    a no-grad forward pass's peak is what it needs on top of its inputs and weights. Works on the
    meta device (inference memory of a network at any size, nothing allocated).
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = self.peak_bytes = 0
        self._views: dict[int, int] = {}
        self._bytes: dict[int, int] = {}

    def _release(self, key: int) -> None:
        self._views[key] -= 1
        if self._views[key] == 0:
            self.current -= self._bytes.pop(key)
            del self._views[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in torch.utils._pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                key = _storage_key(tensor)
                if key not in self._views:
                    self._views[key], self._bytes[key] = 0, _storage_bytes(tensor)
                    self.current += self._bytes[key]
                    self.peak_bytes = max(self.peak_bytes, self.current)
                self._views[key] += 1
                weakref.finalize(tensor, self._release, key)
        return out


def parameter_bytes(module: nn.Module, optimizer_state_bytes: float = 8.0) -> dict[str, int]:
    """Bytes of fp32 weights, their gradients and the optimiser state of a module's parameters.

    Args:
        module: the network (its parameters may be on the meta device).
        optimizer_state_bytes: state per trainable parameter: 8 for AdamW (two fp32 moments), 2 for
            8-bit AdamW (two uint8 moments; bitsandbytes adds an fp32 scale per 256 elements, 1.6 %,
            and keeps fp32 moments in tensors under 4,096 elements, 0.06 % of ete.yaml's trained ones).

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


__all__ = ["FP32_LOSSES", "FP32_OPS", "GIB", "LOW_PRECISION_OPS", "LiveTensorMeter", "PRECISION_BYTES", "SavedTensorMeter",
           "meta_semantics", "parameter_bytes"]
