"""Resuming from a checkpoint continues the exact loss trajectory of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from experiments.fit import NFYCLI

STAND_IN = """
model:
  class_path: lightning_modules.NFYLitModule
  init_args:
    net: tests.model.test_module.StandInNetwork
    optimizer:
      class_path: torch.optim.AdamW
      init_args: {lr: 1.0e-2, weight_decay: 1.0e-2}
    scheduler:
      class_path: torch.optim.lr_scheduler.StepLR
      init_args: {step_size: 3, gamma: 0.5}
data:
  class_path: tests.model.test_module.SyntheticDataModule
  init_args: {num_samples: 6, batch_size: 2}
trainer:
  accelerator: cpu
  limit_val_batches: 1
  num_sanity_val_steps: 1
"""


@pytest.fixture
def tiny_args() -> list[str]:
    """ete.yaml + tiny.yaml (the real network: diffusion noise, timesteps, dropout-free), shuffled
    synthetic batches at 32 px, validation every epoch, no sample rendering."""
    return ["--config", "ete.yaml", "--config", "tiny.yaml", "--data=tests.model.test_module.SyntheticDataModule",
            "--data.image_size=32", "--data.vocab_size=300", "--data.num_samples=4", "--data.batch_size=2",
            "--trainer.check_val_every_n_epoch=1", "--trainer.limit_val_batches=1", "--trainer.callbacks=[]"]


class LossRecorder(Callback):
    """Keeps (global_step, loss) of every training batch."""

    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step] = float(outputs["loss"])


def _run(args: list[str], root: Path, max_epochs: int, ckpt_path: str | None = None) -> dict[int, float]:
    cli = NFYCLI(args=[
        *args,
        f"--trainer.default_root_dir={root}",
        f"--trainer.max_epochs={max_epochs}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={root / 'ckpt'}",
        "--trainer.callbacks.save_top_k=-1",
        "--trainer.callbacks.filename={epoch}",
    ])
    recorder = LossRecorder()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return recorder.losses


def test_resume_matches_uninterrupted(tmp_path: Path, tiny_args: list[str]) -> None:
    full = _run(tiny_args, tmp_path / "full", max_epochs=3)
    first = _run(tiny_args, tmp_path / "cut", max_epochs=2)
    ckpt = tmp_path / "cut" / "ckpt" / "epoch=1.ckpt"
    assert ckpt.is_file()
    torch.manual_seed(1234)  # a different process state: the checkpoint alone must restore it
    rest = _run(tiny_args, tmp_path / "cut", max_epochs=3, ckpt_path=str(ckpt))
    assert set(first) | set(rest) == set(full) and min(rest) > max(first)
    for step, loss in full.items():
        resumed = first.get(step, rest.get(step))
        assert resumed == loss, f"step {step}: {resumed} after resume vs {loss} uninterrupted"
