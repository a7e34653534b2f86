"""NFYLitModule: loss weighting, per-term logging, optimiser wiring and windowed generation.

A small stand-in network with the NFYNetwork interface (``tests/model/fixtures.py``) keeps these tests independent of the
real network's internals (its own tests live in tests/model/test_networks*.py); the real
network is exercised through the configs in test_configs.py and test_fit_cli.py.
"""

from __future__ import annotations

import math

import warnings

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn

from datamodules.conventions import SAMPLES_PER_FRAME
from lightning_modules import NFYLitModule
from lightning_modules.pipeline import window_states
from tests.model.fixtures import StandInNetwork, SyntheticDataModule


def _trainer(**kwargs) -> Trainer:
    defaults = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                    "enable_model_summary": False}
    return Trainer(**{**defaults, **kwargs})


def test_step_weights_and_logs_every_term() -> None:
    module = NFYLitModule(StandInNetwork(), video_weight=2.0, audio_weight=0.5, denoise_weight=0.0, stop_weight=3.0)
    batch = next(iter(SyntheticDataModule().train_dataloader()))
    step_out = module.training_step(batch, 0)  # what callbacks see as ``outputs``
    assert set(step_out) == {"loss", "video_l1", "audio_mse", "denoise", "stop"} and step_out["loss"].requires_grad
    assert not step_out["video_l1"].requires_grad
    expected = 2.0 * step_out["video_l1"] + 0.5 * step_out["audio_mse"] + 3.0 * step_out["stop"]
    torch.testing.assert_close(step_out["loss"].detach(), expected)
    trainer = _trainer(max_steps=2, limit_val_batches=1)
    trainer.fit(module, datamodule=SyntheticDataModule())
    for key in ("train/video_l1", "train/audio_mse", "train/denoise", "train/stop", "train/loss",
                "val/loss", "val/video_l1", "val/stop"):
        assert key in trainer.callback_metrics, key
    trainer.test(module, datamodule=SyntheticDataModule())
    assert "test/audio_mse" in trainer.callback_metrics


def test_optimizer_and_step_scheduler() -> None:
    module = NFYLitModule(
        StandInNetwork(),
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2),
        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
    )
    module.net.embed.weight.requires_grad_(False)
    config = module.configure_optimizers()
    params = {id(p) for group in config["optimizer"].param_groups for p in group["params"]}
    assert id(module.net.embed.weight) not in params and id(module.net.to_mel.weight) in params
    assert config["lr_scheduler"]["interval"] == "step"
    trainer = _trainer(max_steps=3, limit_val_batches=0)
    module.net.embed.weight.requires_grad_(True)
    trainer.fit(module, datamodule=SyntheticDataModule())
    # three optimiser steps, the StepLR halves after each one
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 / 8)


@pytest.mark.parametrize("kwargs, match", [
    ({"audio_weight": -1.0}, "audio_mse"), ({"stop_pos_weight": 0.0}, "stop_pos_weight"),
    ({"guidance_dropout": 1.0}, "guidance_dropout"), ({"pixel_loss_frames": 0}, "pixel_loss_frames"),
    ({"train_scheduler": object()}, "train_scheduler"),
])
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NFYLitModule(StandInNetwork(), **kwargs)


def test_bad_networks_and_bad_batches() -> None:
    with pytest.raises(ValueError, match="encode_conditions"):
        NFYLitModule(nn.Linear(2, 2))
    module = NFYLitModule(StandInNetwork())
    batch = next(iter(SyntheticDataModule().train_dataloader()))
    batch["ref_image"] = batch["ref_image"] * 3  # outside [-1, 1]
    with pytest.raises(ValueError, match="ref_image"):
        module.training_step(batch, 0)


def test_window_states_slice_and_pad() -> None:
    hidden = torch.arange(10, dtype=torch.float)[None, :, None].expand(2, 10, 3)  # (B, T, D)
    first = window_states(hidden, 0, 2)  # frames 0-1 -> mel frames 0..4
    assert first.shape == (2, 5, 3) and first[0, :, 0].tolist() == [0, 1, 2, 3, 4]
    last = window_states(hidden, 2, 2)  # frames 2-3 -> mel 5..9
    assert last[0, :, 0].tolist() == [5, 6, 7, 8, 9]
    past = window_states(hidden, 4, 2)  # beyond the speech -> last state repeated
    assert past.shape == (2, 5, 3) and past[0, :, 0].tolist() == [9] * 5


def test_generate_batch_covers_the_speech_window_by_window() -> None:
    net = StandInNetwork(num_frames=4, motion_frames=2, speech_frames=25)  # 25 mel frames = 0.4 s = 10 video frames
    module = NFYLitModule(net, num_inference_steps=3)
    batch = next(iter(SyntheticDataModule().val_dataloader()))
    out = module.generate_batch(batch)
    frames = math.ceil(25 * 256 / SAMPLES_PER_FRAME)
    assert out["video"].shape == (2, frames, 3, 16, 16)
    assert 0.0 <= float(out["video"].min()) and float(out["video"].max()) <= 1.0
    assert out["wav"].shape == (2, 25 * 256) and out["num_frames"].tolist() == [frames, frames]
    assert len(net.video_calls) == math.ceil(frames / 4) and net.denoise_calls == 3 * len(net.video_calls)
    assert net.video_calls[0]["motion"] is None
    # each later window is conditioned on the last 2 frames the previous window produced
    torch.testing.assert_close(net.video_calls[1]["motion"], out["video"][:, 2:4] * 2 - 1, atol=1e-6, rtol=0)
    assert net.video_calls[1]["hidden"][0, 0, 0].item() == 10.0  # frame 4 starts at mel frame 10
    assert module.net.training  # generation restores the mode
    # a metric scoring the first frames only generates the windows that hold them
    net.video_calls.clear()
    first = module.generate_batch(batch, max_frames=5)
    assert first["video"].shape == (2, 5, 3, 16, 16) and len(net.video_calls) == 2
    assert first["num_frames"].tolist() == [frames, frames]  # what the speech covers, as before
    with pytest.raises(ValueError, match="max_frames"):
        module.generate_batch(batch, max_frames=0)


def test_sample_callback_logs_video_audio_mel(tmp_path) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from callbacks import SampleCallback
    from datamodules.media import read_audio, read_video

    logger = TensorBoardLogger(tmp_path, name="run")
    callback = SampleCallback(every_n_epochs=2, max_samples=1)
    trainer = _trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=1, logger=logger, callbacks=[callback])
    trainer.fit(NFYLitModule(StandInNetwork(speech_frames=30), num_inference_steps=1), datamodule=SyntheticDataModule())
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "audio": 0}).Reload()
    assert set(events.Tags()["images"]) == {"samples/clip100/video", "samples/clip100/mel"}
    assert events.Tags()["audio"] == ["samples/clip100/speech"]
    assert len(events.Images("samples/clip100/video")) == 1  # epoch 0 is skipped, epoch 1 logged
    gif = events.Images("samples/clip100/video")[0].encoded_image_string
    assert gif[:6] == b"GIF89a"
    mp4 = list((tmp_path / "run" / "version_0" / "samples").glob("*.mp4"))
    assert [p.name for p in mp4] == ["epoch=1-clip100.mp4"]
    assert read_video(mp4[0]).shape[0] == 12 and abs(read_audio(mp4[0]).size - 30 * 256) < 640


class TokenizedDataModule(SyntheticDataModule):
    """SyntheticDataModule with the documented ``tokenizer`` attribute, set by ``setup``."""

    def setup(self, stage: str) -> None:
        from datamodules.tokenizer import train_tokenizer

        self.tokenizer = train_tokenizer(["hello there", "the quick brown fox"], 300)


def test_checkpoints_carry_the_datamodules_tokenizer_attribute_only(tmp_path) -> None:
    datamodule = TokenizedDataModule()
    trainer = _trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(NFYLitModule(StandInNetwork()), datamodule=datamodule)
    trainer.save_checkpoint(tmp_path / "with.ckpt")
    saved = torch.load(tmp_path / "with.ckpt", weights_only=True)
    assert saved["nfy_tokenizer"] == datamodule.tokenizer.to_str()
    assert NFYLitModule.load_from_checkpoint(tmp_path / "with.ckpt", net=StandInNetwork()).tokenizer is not None

    # no ``tokenizer`` attribute: a warning naming the DataModule, nothing looked up elsewhere
    # (a combined DataModule's parts once served as a guess)
    lacking = SyntheticDataModule()
    lacking.modules = {"part": datamodule}
    trainer = _trainer(max_steps=1, limit_val_batches=0)
    with pytest.warns(UserWarning, match="SyntheticDataModule has no `tokenizer`"):
        trainer.fit(NFYLitModule(StandInNetwork()), datamodule=lacking)
    trainer.save_checkpoint(tmp_path / "without.ckpt")
    assert "nfy_tokenizer" not in torch.load(tmp_path / "without.ckpt", weights_only=True)


def test_fit_warns_when_the_schedule_ends_below_the_useful_rate() -> None:
    from lightning_modules.nfy_module import lr_floor_step

    def make(interval: str) -> NFYLitModule:
        return NFYLitModule(StandInNetwork(), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-4),
                            scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.1),
                            scheduler_interval=interval, mel_statistics_batches=0)

    assert lr_floor_step(lambda p: torch.optim.AdamW(p, lr=1e-4),
                         lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1000, gamma=0.5), 45_000) == 10_000
    with pytest.warns(UserWarning, match=r"below 1e-07 after 4 of this fit's 6 steps"):
        _trainer(max_steps=6, limit_val_batches=0).fit(make("step"), datamodule=SyntheticDataModule())
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*learning-rate schedule.*")
        module = make("epoch")
        _trainer(max_epochs=2, limit_val_batches=0).fit(module, datamodule=SyntheticDataModule())
    assert module.trainer.lr_scheduler_configs[0].interval == "epoch"
    with pytest.raises(ValueError, match="scheduler_interval"):
        NFYLitModule(StandInNetwork(), scheduler_interval="batch")
