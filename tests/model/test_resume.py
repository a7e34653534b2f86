"""Resuming: the exact loss trajectory of an uninterrupted run, last.ckpt where training stopped, new limits."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from experiments import fit
from experiments.fit import NFYCLI
from tests.model.fixtures import STAND_IN_NETWORK, SYNTHETIC_DATA


@pytest.fixture
def tiny_args() -> list[str]:
    """ete.yaml + tiny.yaml (the real network: diffusion noise, timesteps, dropout-free), shuffled
    synthetic batches at 32 px, validation every epoch, no sample rendering."""
    return ["--config", "ete.yaml", "--config", "tiny.yaml", f"--data={SYNTHETIC_DATA}",
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


class StopAt(Callback):
    """Stops training after optimiser step ``step`` as a user or a scheduler would: Ctrl-C or SIGTERM."""

    def __init__(self, step: int, how: str) -> None:
        self.step, self.how = step, how

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and self.how == "ctrl_c":
            raise KeyboardInterrupt
        if trainer.global_step == self.step and self.how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler stops at the end of this batch


@pytest.fixture
def tiny_trainer(tmp_path: Path, monkeypatch) -> list[str]:
    """ete.yaml + tiny.yaml as shipped (callbacks, logger, validation every 5 epochs) around the stand-in
    network: 2 steps per epoch; the run's root is ``tmp_path / "run"``, the working folder ``tmp_path / "cwd"``."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return ["--config", "ete.yaml", "--config", "tiny.yaml", f"--model.init_args.net={STAND_IN_NETWORK}",
            f"--data={SYNTHETIC_DATA}", "--data.num_samples=4", "--data.batch_size=2",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={tmp_path / 'run'}"]


def _last(tmp_path: Path, version: int = 0) -> Path:
    """Where the one documented rule puts last.ckpt: <default_root_dir>/<logger name>/version_N/checkpoints/."""
    assert not (tmp_path / "cwd" / "outputs").exists()  # tiny.yaml's logger save_dir gives way to default_root_dir
    return tmp_path / "run" / "tiny" / f"version_{version}" / "checkpoints" / "last.ckpt"


STOPS = {
    "max_steps": ["--trainer.max_steps=11"],  # the last validation (and save) is at step 10
    "max_time": ["--trainer.max_epochs=-1", "--trainer.max_time=00:00:00:02"],
    "ctrl_c": ["--trainer.callbacks+=tests.model.test_resume.StopAt", "--trainer.callbacks.step=3",
               "--trainer.callbacks.how=ctrl_c"],
    "sigterm": ["--trainer.callbacks+=tests.model.test_resume.StopAt", "--trainer.callbacks.step=3",
                "--trainer.callbacks.how=sigterm"],
}


@pytest.mark.parametrize("stop", sorted(STOPS))
def test_last_ckpt_is_the_state_where_training_stopped(stop: str, tiny_trainer: list[str], tmp_path: Path) -> None:
    args = [*tiny_trainer, *STOPS[stop]]
    if stop in ("ctrl_c", "sigterm"):
        with pytest.raises(SystemExit):  # Lightning exits after its graceful shutdown
            fit.main(args)
        stopped_at = 3
    else:
        stopped_at = fit.main(args).trainer.global_step
        assert stopped_at == 11 if stop == "max_steps" else stopped_at > 0
    last = _last(tmp_path)
    assert last.is_file(), f"no {last}"
    assert torch.load(last, weights_only=True, map_location="cpu")["global_step"] == stopped_at


def test_resume_continues_to_the_new_limit_and_says_which(tiny_trainer: list[str], tmp_path: Path, caplog) -> None:
    fit.main([*tiny_trainer, "--trainer.max_steps=3", "--trainer.max_time=00:01:00:00"])
    # as if the run had used its whole hour: Lightning restores the Timer, which then stops at the first step
    checkpoint = torch.load(_last(tmp_path), weights_only=True, map_location="cpu")
    assert checkpoint["global_step"] == 3
    checkpoint["callbacks"]["Timer"]["time_elapsed"]["train"] = 3600.0
    torch.save(checkpoint, tmp_path / "hour_spent.ckpt")
    with caplog.at_level(logging.INFO):
        cli = fit.main([*tiny_trainer, f"--ckpt_path={tmp_path / 'hour_spent.ckpt'}", "--trainer.max_steps=6",
                        "--trainer.max_time=00:01:00:00"])
    assert cli.trainer.global_step == 6
    said = caplog.text
    assert "step 3" in said and "max_steps=6" in said and "max_time" in said and "1:00:00 already" in said
    assert torch.load(_last(tmp_path, version=1), weights_only=True, map_location="cpu")["global_step"] == 6
