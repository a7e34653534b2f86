"""check_checkpoint: a file that is not a readable checkpoint gives one error naming it and the problem."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lightning_modules.checkpoint import CheckpointError, check_checkpoint


def write_bad_checkpoint(case: str, folder: Path) -> Path:
    """A file (or folder) at ``folder / f"{case}.ckpt"`` that no checkpoint loader can use.

    ``case``: ``missing``, ``empty``, ``truncated`` (half of a real checkpoint), ``random`` (bytes),
    ``folder``, ``not_lightning`` (a PyTorch file without ``state_dict``).
    """
    path = folder / f"{case}.ckpt"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        torch.save({"state_dict": {"w": torch.randn(4096)}, "optimizer_states": [], "loops": {}}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "random":
        path.write_bytes(os.urandom(4096))
    elif case == "folder":
        path.mkdir()
    elif case == "not_lightning":
        torch.save([torch.zeros(3)], path)
    return path


PROBLEMS = {"missing": "no such file", "empty": "empty", "truncated": "not a PyTorch checkpoint",
            "random": "not a PyTorch checkpoint", "folder": "a folder", "not_lightning": "no 'state_dict'"}


@pytest.mark.parametrize("case", sorted(PROBLEMS))
def test_unreadable_files_name_the_file_and_the_problem(case: str, tmp_path: Path) -> None:
    path = write_bad_checkpoint(case, tmp_path)
    with pytest.raises(CheckpointError, match=PROBLEMS[case]) as caught:
        check_checkpoint(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message


def test_a_good_checkpoint_opens_without_reading_its_tensors(tmp_path: Path) -> None:
    path = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.arange(6.0)}, "epoch": 3}, path)
    checkpoint = check_checkpoint(path)
    assert checkpoint["epoch"] == 3 and checkpoint["state_dict"]["w"].tolist() == list(range(6))
    # weights alone generate but cannot resume training
    with pytest.raises(CheckpointError, match="no optimizer_states.*cannot resume"):
        check_checkpoint(path, resumable=True)
    torch.save({"state_dict": {}, "optimizer_states": [], "loops": {}}, path)
    assert set(check_checkpoint(path, resumable=True)) == {"state_dict", "optimizer_states", "loops"}


def test_objects_a_weights_only_load_refuses(tmp_path: Path) -> None:
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "thing": Path("x")}, path)  # any class outside torch's allow-list
    with pytest.raises(CheckpointError, match="weights-only"):
        check_checkpoint(path)
    assert check_checkpoint(path, weights_only=False)["thing"] == Path("x")
