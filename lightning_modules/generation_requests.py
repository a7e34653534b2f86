"""Generation that training callbacks request and the validation step serves, under any strategy.

Under FSDP (or DeepSpeed ZeRO-3) a process holds only its shard of the weights. The network can
run only inside the wrapped module's forward, which gathers the weights of each block as it is
called, and every process must make the same calls in the same order, or the gathers never meet.
Lightning routes ``validation_step`` through that forward on every process; a callback's hook is
outside it. So the callbacks never call the network themselves: before a validation batch they
ask for its first rows (:meth:`GenerationRequests.request_generation`); the validation step
generates them (:meth:`GenerationRequests.serve_generation_requests`) and returns them, and
Lightning hands that output to the callbacks' ``on_validation_batch_end``.

* Under a sharding strategy every process generates the same rows (process 0's, broadcast) at
  their ground-truth lengths, with the same seed: the inputs, the lengths and hence every call
  are the same everywhere, whatever the stop head would have said.
* Under DDP or on one device (every process holds all the weights) each process generates its
  own rows, and the stop head ends each utterance unless the request asks for the ground truth's
  length (the metrics callback does: its pairs then cover the ground-truth window).

Generation runs under a forked RNG: training draws the same random numbers with the callbacks on or
off.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.strategies import (
    DeepSpeedStrategy,
    FSDPStrategy,
    ModelParallelStrategy,
    Strategy,
)

SHARDING_STRATEGIES: tuple[type, ...] = (FSDPStrategy, ModelParallelStrategy)
"""Strategies whose processes hold only a shard of the weights (DeepSpeed counts at ZeRO stage 3)."""


def shards_weights(strategy: Strategy) -> bool:
    """True when ``strategy``'s processes each hold only a shard of the weights."""
    if isinstance(strategy, SHARDING_STRATEGIES):
        return True
    if isinstance(strategy, DeepSpeedStrategy):
        return (getattr(strategy, "config", None) or {}).get("zero_optimization", {}).get("stage") == 3
    return False


class GenerationRequests:
    """Mix-in for a LightningModule with ``generate_batch(batch, mel_frames=None, seed=None)``.

    Its ``validation_step`` returns ``{"generated": self.serve_generation_requests(batch)}`` (or
    merges that key into what it returns).
    """

    _generation_requests: dict[str, tuple[int, int, bool]]

    def request_generation(self, name: str, rows: int, seed: int, ground_truth_length: bool = False) -> None:
        """Ask the next validation step to generate the first ``rows`` rows of its batch with ``seed``
        (each row as long as its ground truth with ``ground_truth_length``, which a sharding strategy
        always imposes); its output then holds them under ``["generated"][name]``.

        Raises:
            ValueError: ``rows`` below 1.
        """
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        if not hasattr(self, "_generation_requests"):
            self._generation_requests = {}
        self._generation_requests[name] = (int(rows), int(seed), bool(ground_truth_length))

    def serve_generation_requests(self, batch: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Generate what was requested for this batch: ``{name: {"batch": rows, "output": generated}}``
        (empty when nothing was). Every process must call it in the same validation steps."""
        requests, self._generation_requests = getattr(self, "_generation_requests", {}), {}
        if not requests:
            return {}
        trainer = getattr(self, "_trainer", None)
        sharded = trainer is not None and shards_weights(trainer.strategy)
        served = {}
        device = batch["wav"].device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            for name, (rows, seed, ground_truth_length) in sorted(requests.items()):
                head = _head(batch, rows)
                if sharded:  # the same inputs and lengths on every process: the same collective calls
                    head = _to_device(trainer.strategy.broadcast(_to_device(head, "cpu"), src=0), device)
                mel_frames = head["mel_lengths"].clamp(min=1) if sharded or ground_truth_length else None
                torch.manual_seed(seed)
                served[name] = {"batch": head, "output": self.generate_batch(head, mel_frames=mel_frames, seed=seed)}
        return served


def _head(batch: dict[str, Any], rows: int) -> dict[str, Any]:
    """The first ``rows`` rows of every tensor and list in ``batch``, detached."""
    return {k: (v[:rows].detach() if torch.is_tensor(v) else v[:rows] if isinstance(v, (list, tuple)) else v)
            for k, v in batch.items()}


def _to_device(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


__all__ = ["SHARDING_STRATEGIES", "GenerationRequests", "shards_weights"]
