"""Shared checks of the torchmetrics contract for every metric in :mod:`metrics`.

``check_metric_contract(make_metric, batches)`` checks, for a factory of fresh metric objects
and a list of update argument tuples:

1. ``forward(*batch)`` returns what ``update(*batch); compute()`` returns on a fresh object;
2. accumulating the batches one by one equals one update on all of them concatenated;
3. ``reset()`` brings the object back to a fresh one;
4. a DDP-style merge (two objects, each fed half of the batches, their states combined as
   each state's ``dist_reduce_fx`` would combine them across processes) equals one object
   fed everything;
5. a pickled/unpickled object with accumulated state computes the same value;
6. a real torchmetrics synchronisation (the one ``compute`` runs under DDP, with the gather
   answered as if two processes held the same state) equals one object fed every batch twice:
   list states arrive as tensors there, which check 4's merge does not exercise.

Arguments to ``update`` may be tensors (concatenated on dim 0), lists (joined) or other values
that are equal across batches (passed through, e.g. a sample rate).

A batch may also be a *list* of update-argument tuples, called in order: e.g.
``[(real_videos, True), (fake_videos, False)]`` for two-set metrics (FID, FVD). "One big batch"
then concatenates the i-th calls of all batches. Check 1 is skipped for such batches (a
two-set metric cannot compute from one side), as it is with ``check_forward=False``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchmetrics import Metric

Batch = tuple


def assert_close(actual: Any, expected: Any, atol: float, rtol: float, what: str) -> None:
    """Recursive ``torch.testing.assert_close`` over tensors, numbers, dicts and sequences."""
    if isinstance(expected, dict):
        if set(actual) != set(expected):
            raise AssertionError(f"{what}: keys {sorted(actual)} != {sorted(expected)}")
        for key in expected:
            assert_close(actual[key], expected[key], atol, rtol, f"{what}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        if len(actual) != len(expected):
            raise AssertionError(f"{what}: length {len(actual)} != {len(expected)}")
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, atol, rtol, f"{what}[{i}]")
    else:
        a = torch.as_tensor(actual, dtype=torch.float64)
        e = torch.as_tensor(expected, dtype=torch.float64)
        torch.testing.assert_close(a, e, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """Join update-argument tuples: tensors on dim 0, lists end to end, others must agree."""
    joined = []
    for position, values in enumerate(zip(*batches)):
        first = values[0]
        if isinstance(first, torch.Tensor):
            joined.append(torch.cat(values, dim=0))
        elif isinstance(first, list):
            joined.append([item for value in values for item in value])
        else:
            if any(value != first for value in values):
                raise ValueError(f"update argument {position} differs between batches: {values}")
            joined.append(first)
    return tuple(joined)


def _calls(batch: Batch | list) -> list:
    """The update-argument tuples of one batch (a tuple is one call, a list several)."""
    return list(batch) if isinstance(batch, list) else [batch]


def _update_all(metric: Metric, batches: Sequence) -> None:
    for batch in batches:
        for call in _calls(batch):
            metric.update(*call)


def _concat_calls(batches: Sequence) -> list:
    """One call list equal to all batches joined (i-th calls concatenated together)."""
    per_batch = [_calls(batch) for batch in batches]
    if len({len(calls) for calls in per_batch}) != 1:
        raise ValueError("every batch must make the same number of update calls")
    return [concat_batches([calls[i] for calls in per_batch]) for i in range(len(per_batch[0]))]


def check_metric_contract(
    make_metric: Callable[[], Metric],
    batches: Sequence[Batch | list],
    atol: float = 1e-6,
    rtol: float = 1e-5,
    expected: Any | None = None,
    check_forward: bool = True,
) -> Any:
    """Run the five contract checks of the module docstring; returns the value over all batches.

    Args:
        make_metric: returns a fresh metric object (same configuration every call).
        batches: at least two tuples of ``update`` arguments.
        atol: absolute tolerance of every comparison.
        rtol: relative tolerance of every comparison.
        expected: if given, the value over all batches must also equal it (reference value).
        check_forward: run check 1 (only for batches that are single update tuples).
    """
    if len(batches) < 2:
        raise ValueError(f"check_metric_contract needs at least 2 batches, got {len(batches)}")
    metric = make_metric()
    if metric.full_state_update is not False:
        raise AssertionError(f"{type(metric).__name__}.full_state_update must be False")

    # 1. forward == update + compute on a fresh object (the batch value).
    if check_forward and all(isinstance(batch, tuple) for batch in batches):
        for i, batch in enumerate(batches):
            single = make_metric()
            single.update(*batch)
            assert_close(metric(*batch), single.compute(), atol, rtol, f"forward of batch {i}")
    else:
        _update_all(metric, batches)
    accumulated = metric.compute()

    # 2. accumulation over batches == one big batch.
    whole = make_metric()
    _update_all(whole, [_concat_calls(batches)])
    total = whole.compute()
    assert_close(accumulated, total, atol, rtol, "accumulated vs concatenated")
    if expected is not None:
        assert_close(total, expected, atol, rtol, "value vs reference")

    # 3. reset gives a fresh object.
    metric.reset()
    _update_all(metric, batches[:1])
    fresh = make_metric()
    _update_all(fresh, batches[:1])
    assert_close(metric.compute(), fresh.compute(), atol, rtol, "after reset")

    # 4. DDP-style merge of two halves.
    half = len(batches) // 2
    left, right = make_metric(), make_metric()
    _update_all(left, batches[:half])
    _update_all(right, batches[half:])
    right.merge_state(left)  # torchmetrics folds states as dist_reduce_fx does; "cat" lists: left's first
    assert_close(right.compute(), total, atol, rtol, "DDP-merged states vs one object")

    # 5. pickling keeps the state.
    clone = pickle.loads(pickle.dumps(whole))
    assert_close(clone.compute(), total, atol, rtol, "unpickled object")

    # 6. compute under a DDP synchronisation of two processes with the same state.
    synced = make_metric()
    synced.dist_sync_fn = lambda tensor, group=None: [tensor, tensor]  # all_gather's answer
    synced.distributed_available_fn = lambda: True
    _update_all(synced, batches)
    twice = make_metric()
    _update_all(twice, list(batches) + list(batches))
    assert_close(synced.compute(), twice.compute(), atol, rtol, "synchronised across processes")
    return total


class TrainModeHead(torch.nn.Module):
    """Last layer of a stand-in feature network whose output depends on train/eval mode.

    ``(N, D) -> (N, D)`` through BatchNorm and Dropout. A network ending in it starts in train
    mode with gradients on, as a freshly built ``nn.Module`` does, so a metric that forgets to
    freeze it gives features that change between calls (dropout) and running statistics that
    move (BatchNorm).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(dim)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm(x))


def assert_trainable(net: torch.nn.Module) -> None:
    """``net`` is in train mode with gradients on (the stand-in is not frozen already)."""
    assert all(m.training for m in net.modules()), "stand-in should start in train mode"
    assert all(p.requires_grad for p in net.parameters()), "stand-in should start with gradients on"


def assert_frozen(net: torch.nn.Module) -> None:
    """``net`` and all its submodules in eval mode, no parameter requiring gradients."""
    training = [name or "<root>" for name, m in net.named_modules() if m.training]
    assert not training, f"modules left in train mode: {training}"
    grads = [name for name, p in net.named_parameters() if p.requires_grad]
    assert not grads, f"parameters still requiring gradients: {grads}"
