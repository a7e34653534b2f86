"""Shared test fixtures: the real sample data in ../shared/data, and seeding."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NFY_SHARED_DATA", REPO.parent / "shared" / "data"))

# Two cores are shared by the pytest-xdist workers: one intra-op thread each.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real photos and clips (faces/, clips/, clips/transcripts.json); skips if absent."""
    if not (SHARED_DATA / "clips" / "transcripts.json").is_file():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (set NFY_SHARED_DATA to its folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_transcripts(shared_data: Path) -> dict:
    """``clips/transcripts.json``: per clip, the spoken prompt text and the source photo."""
    return json.loads((shared_data / "clips" / "transcripts.json").read_text())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
