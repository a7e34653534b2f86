"""One registry for every weight file that comes from a URL (DESIGN.md section 4).

Nothing is downloaded implicitly: :func:`weights_path` returns the cached file after checking
its size and sha256, or raises :class:`WeightsNotFoundError` saying which file is missing,
where to put it and where to get it. :func:`download` fetches a file on a machine with
internet access, verifying the checksum before the file is moved into place.

The cache folder is ``$NFY_CACHE`` (default ``~/.cache/nfy``); every file lives at
``<cache>/<name>/<filename>``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class WeightFile:
    """A pretrained weight file known to nfy.

    Args:
        name: registry key, e.g. ``"inception_fid"``.
        filename: file name on disk.
        url: where the original authors publish it.
        sha256: hex digest of the published file; ``None`` where no digest is published, in
            which case the file is accepted on its size alone and a warning says so.
        size: bytes, or ``None`` when unknown.
        used_by: which metric or model part needs it.
    """

    name: str
    filename: str
    url: str
    sha256: Optional[str]
    size: Optional[int]
    used_by: str


REGISTRY: dict[str, WeightFile] = {}


def register(entry: WeightFile) -> WeightFile:
    """Add ``entry`` to the registry (re-registering the same name replaces it)."""
    REGISTRY[entry.name] = entry
    return entry


class WeightsNotFoundError(FileNotFoundError):
    """A registered weight file is not in the cache (or fails its checksum)."""


def cache_dir() -> Path:
    """The weights cache: ``$NFY_CACHE`` or ``~/.cache/nfy``."""
    return Path(os.environ.get("NFY_CACHE", Path.home() / ".cache" / "nfy")).expanduser()


def expected_path(name: str) -> Path:
    """Where the file of registry entry ``name`` must be placed."""
    entry = _entry(name)
    return cache_dir() / entry.name / entry.filename


def weights_path(name: str, verify: bool = True) -> Path:
    """Return the local path of registry entry ``name``, checked against its size and sha256.

    Raises:
        KeyError: ``name`` is not registered.
        WeightsNotFoundError: the file is absent or corrupt; the message says where to put it
            and where to get it.
    """
    entry = _entry(name)
    path = expected_path(name)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"weights '{entry.filename}' for {entry.used_by} not found. Put the file at {path} "
            f"(folder set by $NFY_CACHE), downloaded from {entry.url}, or run "
            f"`python -m metrics.registry download {entry.name}` on a machine with internet access."
        )
    if verify:
        _verify(entry, path)
    return path


def available(name: str) -> bool:
    """True when the weights of ``name`` are present and pass their checks."""
    try:
        weights_path(name)
    except WeightsNotFoundError:
        return False
    return True


def download(name: str, force: bool = False) -> Path:
    """Fetch the file of ``name`` into the cache, verifying it before it is moved into place."""
    entry = _entry(name)
    path = expected_path(name)
    if path.is_file() and not force:
        return weights_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{entry.filename}.", dir=path.parent)
    os.close(fd)
    try:
        with urllib.request.urlopen(entry.url) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
        _verify(entry, Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 digest of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _entry(name: str) -> WeightFile:
    if name not in REGISTRY:
        raise KeyError(f"unknown weights {name!r}; registered: {sorted(REGISTRY)}")
    return REGISTRY[name]


def _verify(entry: WeightFile, path: Path) -> None:
    if entry.size is not None and path.stat().st_size != entry.size:
        raise WeightsNotFoundError(
            f"{path} has {path.stat().st_size} bytes, expected {entry.size} for '{entry.filename}'; "
            f"delete it and fetch it again from {entry.url}"
        )
    if entry.sha256 is not None:
        digest = sha256_of(path)
        if digest != entry.sha256:
            raise WeightsNotFoundError(
                f"{path} has sha256 {digest}, expected {entry.sha256} for '{entry.filename}'; "
                f"delete it and fetch it again from {entry.url}"
            )


# --------------------------------------------------------------------------------------------
# Registered files. Every entry names the published file and its published checksum.
# --------------------------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m metrics.registry list`` shows every file and whether it is present;
    ``python -m metrics.registry download NAME [NAME ...]`` fetches files (needs internet)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m metrics.registry", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list registered weight files and their status")
    fetch = sub.add_parser("download", help="download and verify weight files")
    fetch.add_argument("names", nargs="+", choices=sorted(REGISTRY))
    args = parser.parse_args(argv)
    if args.command == "list":
        for entry in REGISTRY.values():
            status = "present" if available(entry.name) else "missing"
            print(f"{entry.name:20s} {status:8s} {expected_path(entry.name)}  ({entry.used_by}; {entry.url})")
    else:
        for name in args.names:
            print(download(name))


if __name__ == "__main__":
    main()
