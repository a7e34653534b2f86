"""The weights registry: every metric's file is registered with its published URL and checks."""

from __future__ import annotations

import hashlib
import os
import re

import pytest
import requests

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


# ------------------------------------------------------------------ sha256 prefixes (torch.hub)
def test_published_hash_prefix_is_recorded() -> None:
    # what torch.hub's check_hash reads from a file name
    from torch.hub import HASH_REGEX

    named = {e.name: HASH_REGEX.search(e.filename) for e in REGISTRY.values()}
    named = {name: match.group(1) for name, match in named.items() if match and match.group(1)}
    assert {"alexnet_lpips", "vggish", "vggish_pca", "inception_fid"} <= set(named)
    for name, prefix in named.items():
        entry = REGISTRY[name]
        assert entry.sha256_prefix == prefix or (entry.sha256 or "").startswith(prefix), name


def test_file_without_the_published_hash_prefix_is_rejected(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NFY_CACHE", str(tmp_path))
    path = registry.expected_path("vggish")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the weights")
    with pytest.raises(WeightsNotFoundError, match=r"sha256 .*, expected .*10086976"):
        weights_path("vggish")
    assert not registry.available("vggish")


def _local_entry(monkeypatch, content: bytes, full: bool, name: str = "tiny_test") -> registry.WeightFile:
    """Register a small file whose checks are its full sha256 or the prefix in its name."""
    digest = hashlib.sha256(content).hexdigest()
    entry = registry.WeightFile(
        name=name, filename=f"tiny-{digest[:8]}.bin", url=f"https://example.invalid/tiny-{digest[:8]}.bin",
        sha256=digest if full else None, size=len(content), used_by="a test",
        sha256_prefix=None if full else digest[:8],
    )
    monkeypatch.setitem(REGISTRY, name, entry)
    return entry


def test_file_with_the_published_hash_prefix_is_accepted(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NFY_CACHE", str(tmp_path))
    entry = _local_entry(monkeypatch, b"weights" * 100, full=False)
    path = registry.expected_path(entry.name)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights" * 100)
    assert weights_path(entry.name) == path


# ------------------------------------------------------------------ download (no network: served from a folder)
def _serve_from(monkeypatch, files: dict[str, bytes], calls: list) -> None:
    """Make downloads read ``files`` (by URL) instead of the network."""

    def fake_downloader(url: str):
        def fetch(url_: str, output_file, pooch_) -> None:
            calls.append(url_)
            if url_ not in files:
                raise requests.exceptions.ConnectionError(f"Failed to resolve '{url_}' (offline)")
            with open(output_file, "wb") if isinstance(output_file, (str, os.PathLike)) else output_file as out:
                out.write(files[url_])

        return fetch

    monkeypatch.setattr(registry, "_downloader", fake_downloader)


@pytest.mark.parametrize("full", [True, False])
def test_download_verifies_and_moves_into_place(tmp_path, monkeypatch, full: bool) -> None:
    monkeypatch.setenv("NFY_CACHE", str(tmp_path))
    content = b"weights" * 100
    entry = _local_entry(monkeypatch, content, full=full)
    calls: list = []
    _serve_from(monkeypatch, {entry.url: content}, calls)
    path = registry.download(entry.name)
    assert path == registry.expected_path(entry.name) and path.read_bytes() == content and calls == [entry.url]
    assert sorted(p.name for p in path.parent.iterdir()) == [entry.filename]  # no staging leftovers
    assert registry.download(entry.name) == path and len(calls) == 1  # present: not fetched again


@pytest.mark.parametrize("full", [True, False])
def test_download_of_a_wrong_file_leaves_nothing(tmp_path, monkeypatch, full: bool) -> None:
    monkeypatch.setenv("NFY_CACHE", str(tmp_path))
    entry = _local_entry(monkeypatch, b"weights" * 100, full=full)
    _serve_from(monkeypatch, {entry.url: b"tampered" * 100}, [])  # wrong content (and size)
    with pytest.raises(WeightsNotFoundError, match="expected"):
        registry.download(entry.name)
    folder = registry.expected_path(entry.name).parent
    assert not folder.exists() or not any(folder.iterdir())


def test_download_offline_says_where_to_put_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NFY_CACHE", str(tmp_path))
    _serve_from(monkeypatch, {}, [])
    with pytest.raises(WeightsNotFoundError) as info:
        registry.download("vggish")
    message = str(info.value)
    entry = REGISTRY["vggish"]
    assert entry.url in message and str(registry.expected_path("vggish")) in message
    assert "could not download" in message and "python -m metrics.registry download vggish" in message
    assert not any(registry.expected_path("vggish").parent.iterdir())
