"""``python -m experiments.fit`` in-process: config resolution, links, parse-time errors, fast_dev_run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from experiments import fit
from experiments.fit import NFYCLI, resolve_config, resolve_config_args
from tests.model.fixtures import STAND_IN, SYNTHETIC_DATA

FAST = ["--trainer.fast_dev_run=true", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false"]


@pytest.fixture
def stand_in(tmp_path: Path) -> str:
    path = tmp_path / "stand_in.yaml"
    path.write_text(STAND_IN)
    return str(path)


def test_bare_config_names_resolve_to_shipped_configs(tmp_path: Path) -> None:
    assert resolve_config("ete.yaml") == str(fit.CONFIG_DIR / "ete.yaml")
    local = tmp_path / "mine.yaml"
    local.write_text("trainer: {max_steps: 1}\n")
    assert resolve_config(str(local)) == str(local)
    assert resolve_config_args(["--config", "tiny.yaml", "--config=ete.yaml", "--x", "tiny.yaml"]) == [
        "--config", str(fit.CONFIG_DIR / "tiny.yaml"), "--config=" + str(fit.CONFIG_DIR / "ete.yaml"), "--x", "tiny.yaml"]
    with pytest.raises(fit.ConfigError, match="nope.yaml.*ete.yaml"):
        resolve_config("nope.yaml")


def test_fast_dev_run_links_data_values_into_the_network(stand_in: str) -> None:
    cli = fit.main(["--config", stand_in, "--data.vocab_size=77", "--data.image_size=8", *FAST])
    net = cli.model.net
    assert net.embed.num_embeddings == 77 and net.image_size == 8
    assert cli.trainer.global_step == 1
    assert cli.model.hparams.net["init_args"]["vocab_size"] == 77  # stored for load_from_checkpoint
    assert "train/loss" in cli.trainer.callback_metrics and "val/loss" in cli.trainer.callback_metrics


def test_unknown_key_fails_at_parse_time(stand_in: str, capsys) -> None:
    with pytest.raises(SystemExit):
        NFYCLI(args=["--config", stand_in, "--model.init_args.video_wieght=2.0", *FAST])
    assert "video_wieght" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        NFYCLI(args=["--config", stand_in, "--trainer.max_stepz=3"])


def test_tiny_config_trains_the_real_network(tmp_path: Path) -> None:
    """ete.yaml + tiny.yaml (the real NFYNetwork), data swapped for synthetic batches of the contract."""
    cli = fit.main(["--config", "ete.yaml", "--config", "tiny.yaml", f"--data={SYNTHETIC_DATA}",
                    "--data.image_size=64", "--data.vocab_size=300", "--data.batch_size=2",
                    f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
                    "--trainer.fast_dev_run=true", "--trainer.enable_progress_bar=false"])
    assert type(cli.model.net).__name__ == "NFYNetwork" and cli.trainer.global_step == 1
    metrics = cli.trainer.callback_metrics
    for term in ("video_l1", "audio_mse", "denoise", "stop", "loss"):
        assert torch.isfinite(metrics[f"train/{term}"]), term


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "random", "folder"])
def test_bad_ckpt_path_one_line_exit_2_nothing_created(case: str, stand_in: str, tmp_path: Path, capsys) -> None:
    from tests.model.test_checkpoint import write_bad_checkpoint

    bad = write_bad_checkpoint(case, tmp_path)
    args = ["--config", stand_in, f"--ckpt_path={bad}", "--trainer.max_steps=1", "--trainer.enable_progress_bar=false",
            "--trainer.logger=lightning.pytorch.loggers.TensorBoardLogger", f"--trainer.logger.save_dir={tmp_path / 'logs'}",
            f"--trainer.default_root_dir={tmp_path / 'root'}"]
    with pytest.raises(SystemExit) as caught:
        fit.main(args)
    assert caught.value.code == 2
    line = _one_error_line(capsys)
    assert str(bad) in line and "--ckpt_path" in line
    assert not (tmp_path / "logs").exists() and not (tmp_path / "root").exists()  # no empty version_N left
    from lightning_modules.checkpoint import CheckpointError

    with pytest.raises(CheckpointError):  # --debug: the exception itself, with its traceback
        fit.main([*args, "--debug"])


@pytest.mark.parametrize("content, problem", [
    (None, "no such file"),
    (b"trainer: [max_steps: 1\n  x: :\n", "not valid YAML.*line"),
    (b"\x00\xff\xfe binary", "not UTF-8 text"),
    (b"- just\n- a list\n", "expected a YAML mapping"),
])
def test_bad_config_one_line_exit_2(content, problem, stand_in: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "mine.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as caught:
        fit.main(["--config", stand_in, "--config", str(path)])
    assert caught.value.code == 2
    line = _one_error_line(capsys)
    assert str(path) in line
    assert re.search(problem, line), line
