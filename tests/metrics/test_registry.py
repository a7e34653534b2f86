"""The weights registry: every metric's file is registered with its published URL and checks."""

from __future__ import annotations

import re

import pytest

from metrics import registry
from metrics.registry import REGISTRY, WeightsNotFoundError, weights_path

REQUIRED = ["inception_fid", "i3d_fvd", "vggish", "vggish_pca", "syncnet", "s3fd", "pips2", "whisper_base", "alexnet_lpips"]


@pytest.mark.parametrize("name", REQUIRED)
def test_required_entries_exist(name: str) -> None:
    entry = REGISTRY[name]
    assert entry.url.startswith(("https://", "http://")), entry.url
    assert entry.filename in entry.url.split("?")[0], (entry.filename, entry.url)
    assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256), entry.sha256
    assert entry.size is None or entry.size > 1_000_000


def test_whisper_digest_is_the_url_folder() -> None:
    whisper = [e for e in REGISTRY.values() if e.name.startswith("whisper_")]
    assert len(whisper) >= 4
    for entry in whisper:
        assert entry.url.split("/")[-2] == entry.sha256


def test_missing_file_error_says_where_and_whence(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NFY_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as info:
        weights_path("i3d_fvd")
    message = str(info.value)
    assert "i3d_torchscript.pt" in message and str(tmp_path) in message and "dropbox" in message


def test_wrong_size_or_digest_is_rejected(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NFY_CACHE", str(tmp_path))
    for name in ("pips2", "whisper_tiny"):
        path = registry.expected_path(name)
        path.parent.mkdir(parents=True)
        path.write_bytes(b"not the weights")
        with pytest.raises(WeightsNotFoundError, match="expected"):
            weights_path(name)
    assert not registry.available("pips2")
