"""Distributed training: the users' first command with two processes (DDP and FSDP over gloo, on the CPU)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy

from callbacks import GenerativeMetricsCallback, SampleCallback
from datamodules.demo_corpus import build_demo_corpus
from lightning_modules.generation_requests import GenerationRequests

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    """A 4-clip demo corpus at 64 px (every split has a speaker)."""
    return build_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus", num_clips=4, size=64, min_seconds=2.0,
                             max_seconds=2.4, num_workers=0, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_process_fit_with_sample_and_metric_callbacks(strategy: str, demo_root: Path, tmp_path: Path) -> None:
    """``experiments.fit --config ete.yaml --config tiny.yaml`` on 2 CPU processes for 2 steps, under DDP and
    under the users' FSDP config (``fsdp.yaml``; on CPU processes through tests/model/cpu_fsdp.py): the demo
    cache and tokenizer are prepared before both ranks read them, validation renders samples and scores
    PSNR without hanging (under FSDP inside the sharded validation step), and rank 0 writes last.ckpt."""
    args = [
        sys.executable, "-m", "experiments.fit", "--config", "ete.yaml", "--config", "tiny.yaml",
        *(["--config", "fsdp.yaml", "--trainer.strategy.class_path=tests.model.cpu_fsdp.CPUFSDPStrategy"]
          if strategy == "fsdp" else ["--trainer.strategy=ddp"]),
        f"--data.root={demo_root}", "--data.batch_size=2", "--data.vocab_size=300",
        "--trainer.accelerator=cpu", "--trainer.devices=2",
        f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=2", "--trainer.max_steps=2",
        "--trainer.max_time=null", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1",
        "--trainer.check_val_every_n_epoch=1", "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.callbacks.every_n_epochs=2",  # SampleCallback, the last of tiny.yaml's callbacks
        "--trainer.callbacks+=callbacks.GenerativeMetricsCallback", "--trainer.callbacks.metrics=[psnr]",
        "--trainer.callbacks.every_n_epochs=2", "--trainer.callbacks.num_samples=1",
        "--model.num_inference_steps=2", "--model.max_mel_frames=50",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    # A hang (a collective one rank never joins) fails here instead of stalling the suite
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert "GLOBAL_RANK: 0" in output and "GLOBAL_RANK: 1" in output, output[-3000:]  # two processes ran
    checkpoints = list(tmp_path.rglob("last.ckpt"))
    assert len(checkpoints) == 1, sorted(str(p) for p in tmp_path.rglob("*"))
    samples = list(tmp_path.rglob("samples/epoch=1-*.mp4"))
    assert len(samples) == 1, "SampleCallback rendered nothing on rank 0"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = [EventAccumulator(str(p.parent)).Reload() for p in tmp_path.rglob("events.out.tfevents.*")]
    psnr = [e.Scalars("val/psnr") for e in logs if "val/psnr" in e.Tags()["scalars"]]
    assert psnr and psnr[0][-1].value > 0, "GenerativeMetricsCallback logged no val/psnr"


class _Served(GenerationRequests):
    """A module stand-in that records what it was asked to generate."""

    def __init__(self, strategy) -> None:
        self._trainer = SimpleNamespace(strategy=strategy)
        self.calls: list[dict] = []

    def generate_batch(self, batch: dict, mel_frames=None, seed=None) -> dict:
        self.calls.append({"keys": list(batch["key"]), "mel_frames": mel_frames, "seed": seed,
                           "draw": torch.rand(1).item()})
        return {"video": torch.zeros(len(batch["key"]), 2, 3, 8, 8)}


class _ShardedHere(FSDPStrategy):
    """An FSDP strategy whose broadcast hands over what "rank 0" holds (one process stands in for two)."""

    def __init__(self, rank0: dict) -> None:
        super().__init__()
        self.rank0 = rank0

    def broadcast(self, obj, src: int = 0):
        return self.rank0


def _batch(keys: list[str], lengths: list[int]) -> dict:
    return {"key": keys, "wav": torch.zeros(len(keys), 1280), "mel_lengths": torch.tensor(lengths)}


def test_requests_are_served_with_rank_0_rows_at_their_lengths_where_weights_are_sharded() -> None:
    """Under a sharding strategy every process generates process 0's rows at their ground-truth lengths
    (the same calls everywhere); elsewhere its own rows, the stop head deciding unless the request asks
    for the ground truth's length; the global RNG is untouched either way."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    rank0, here = _batch(["a", "b", "c"], [40, 25, 30]), _batch(["x", "y", "z"], [10, 11, 12])
    for strategy, keys, frames, own_length in (
            (SingleDeviceStrategy("cpu"), ["x", "y"], None, False),
            (SingleDeviceStrategy("cpu"), ["x", "y"], [10, 11], True),
            (_ShardedHere({k: v[:2] for k, v in rank0.items()}), ["a", "b"], [40, 25], False)):
        module = _Served(strategy)
        module.request_generation("samples", rows=2, seed=7, ground_truth_length=own_length)
        torch.manual_seed(0)
        served = module.serve_generation_requests(here)
        after = torch.rand(1).item()
        torch.manual_seed(0)
        assert after == torch.rand(1).item()  # training's random draws do not change
        (call,) = module.calls
        assert call["keys"] == keys and call["seed"] == 7 and list(served) == ["samples"]
        assert (call["mel_frames"] is None) if frames is None else call["mel_frames"].tolist() == frames
        assert served["samples"]["batch"]["key"] == keys
        assert module.serve_generation_requests(here) == {}  # served once
    with pytest.raises(ValueError, match="rows"):
        module.request_generation("samples", rows=0, seed=0)


def test_callbacks_request_on_due_epochs_and_log_what_the_step_served(caplog) -> None:
    """SampleCallback asks on rank zero only (every rank under FSDP); GenerativeMetricsCallback on every
    rank; a module without the protocol gets one warning and nothing is generated."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    def trainer(strategy, rank_zero: bool):
        return SimpleNamespace(strategy=strategy, is_global_zero=rank_zero, current_epoch=0, sanity_checking=False,
                               loggers=[], global_step=0)

    batch = _batch(["x", "y"], [10, 11])
    for strategy, rank_zero, sample_asks in ((SingleDeviceStrategy("cpu"), True, True),
                                             (SingleDeviceStrategy("cpu"), False, False),
                                             (_ShardedHere(batch), False, True)):
        module = _Served(strategy)
        sample, metrics = SampleCallback(write_mp4=False), GenerativeMetricsCallback(metrics=["psnr"], num_samples=1)
        metrics.on_validation_epoch_start(trainer(strategy, rank_zero), module)
        for callback in (sample, metrics):
            callback.on_validation_batch_start(trainer(strategy, rank_zero), module, batch, 0)
        expected = {metrics.name: (1, 0, True), **({sample.name: (2, 0, False)} if sample_asks else {})}
        assert module._generation_requests == expected
    callback = SampleCallback(write_mp4=False)
    with caplog.at_level(logging.WARNING, logger="callbacks"):
        for _ in range(2):  # a LightningModule without request_generation
            callback.on_validation_batch_start(trainer(SingleDeviceStrategy("cpu"), True), SimpleNamespace(), batch, 0)
    assert [r.getMessage() for r in caplog.records].count(
        "SampleCallback: SimpleNamespace has no request_generation (lightning_modules.generation_requests."
        "GenerationRequests): nothing is generated") == 1, caplog.text
