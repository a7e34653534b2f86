"""Distributed training: the users' first command with two processes (DDP over gloo, on the CPU)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from callbacks import GenerativeMetricsCallback, SampleCallback
from datamodules.demo_corpus import build_demo_corpus

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    """A 4-clip demo corpus at 64 px (every split has a speaker)."""
    return build_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus", num_clips=4, size=64, min_seconds=2.0,
                             max_seconds=2.4, num_workers=0, progress=False)


@pytest.mark.slow
def test_two_process_ddp_fit_with_sample_and_metric_callbacks(demo_root: Path, tmp_path: Path) -> None:
    """``experiments.fit --config ete.yaml --config tiny.yaml`` on 2 CPU processes for 2 steps: the demo cache
    and tokenizer are prepared before both ranks read them, validation renders samples and scores PSNR under
    DDP without hanging, and rank 0 writes last.ckpt."""
    args = [
        sys.executable, "-m", "experiments.fit", "--config", "ete.yaml", "--config", "tiny.yaml",
        f"--data.root={demo_root}", "--data.batch_size=2", "--data.vocab_size=300",
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
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
    assert list(tmp_path.rglob("samples/epoch=1-*.mp4")), "SampleCallback rendered nothing on rank 0"


class _Generates:
    """A LightningModule stand-in that counts generate_batch calls."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.calls = 0

    def generate_batch(self, batch: dict) -> dict:
        self.calls += 1
        rows = len(batch["key"])
        return {"video": torch.zeros(rows, 2, 3, 8, 8), "wav": torch.zeros(rows, 1280), "mel": torch.zeros(rows, 80, 5)}

    def log(self, *args, **kwargs) -> None:
        pass


def _validation_epoch(callback, strategy) -> _Generates:
    trainer = SimpleNamespace(strategy=strategy, is_global_zero=True, current_epoch=0, sanity_checking=False,
                              loggers=[], global_step=0)
    module = _Generates()
    batch = {"key": ["a"], "wav": torch.zeros(1, 1280), "video": torch.zeros(1, 2, 3, 8, 8), "frame_start": [0]}
    for _ in range(2):  # two due epochs: one warning
        callback.on_validation_epoch_start(trainer, module)
        callback.on_validation_batch_end(trainer, module, None, batch, 0)
        callback.on_validation_epoch_end(trainer, module)
    return module


@pytest.mark.parametrize("make", [lambda: SampleCallback(write_mp4=False),
                                  lambda: GenerativeMetricsCallback(metrics=["psnr"], num_samples=1)])
def test_generating_callbacks_skip_under_fsdp_with_a_reason(make, caplog) -> None:
    from lightning.pytorch.strategies import FSDPStrategy, SingleDeviceStrategy

    assert _validation_epoch(make(), SingleDeviceStrategy("cpu")).calls == 2  # the same callback generates here
    with caplog.at_level(logging.WARNING, logger="callbacks"):
        module = _validation_epoch(make(), FSDPStrategy())
    assert module.calls == 0
    warnings = [r.getMessage() for r in caplog.records if "FSDPStrategy shards the weights" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
