"""One registry for every weight file that comes from a URL (DESIGN.md section 4).

Nothing is downloaded implicitly: :func:`weights_path` returns the cached file after checking
its size and sha256 (the full digest, or the 8-hex prefix that a torch.hub file name such as
``vggish-10086976.pth`` carries), or raises :class:`WeightsNotFoundError` saying which file is
missing, where to put it and where to get it. :func:`download` fetches a file with pooch on a
machine with internet access, verifying it before the file is moved into place.

The cache folder is ``$NFY_CACHE`` (default ``~/.cache/nfy``); every file lives at
``<cache>/<name>/<filename>``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
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
        sha256: hex digest of the published file; ``None`` where no digest is published.
        size: bytes, or ``None`` when unknown.
        used_by: which metric or model part needs it.
        sha256_prefix: the leading hex digits of the sha256 where only they are published, as
            in torch.hub file names (``alexnet-owt-7be5be79.pth``, checked by torch.hub's
            ``check_hash``); ``None`` otherwise. A file with neither digest is checked on its
            size alone.
    """

    name: str
    filename: str
    url: str
    sha256: Optional[str]
    size: Optional[int]
    used_by: str
    sha256_prefix: Optional[str] = None


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
        raise WeightsNotFoundError(f"weights '{entry.filename}' for {entry.used_by} not found. {_how_to_get(entry)}")
    if verify:
        _verify(entry, path)
    return path


def _how_to_get(entry: WeightFile) -> str:
    return (f"Put the file at {cache_dir() / entry.name / entry.filename} (folder set by $NFY_CACHE), downloaded "
            f"from {entry.url}, or run `python -m metrics.registry download {entry.name}` on a machine with "
            f"internet access.")


def available(name: str) -> bool:
    """True when the weights of ``name`` are present and pass their checks."""
    try:
        weights_path(name)
    except WeightsNotFoundError:
        return False
    return True


def download(name: str, force: bool = False) -> Path:
    """Fetch the file of ``name`` into the cache (pooch, with a progress bar), verified before it is moved into place.

    Raises:
        KeyError: ``name`` is not registered.
        WeightsNotFoundError: the download failed (e.g. offline) or gave a file that fails its
            checks; the message says where to put the file by hand. Nothing is left in the cache.
    """
    entry = _entry(name)
    path = expected_path(name)
    if path.is_file() and not force:
        return weights_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    # pooch writes into a staging folder beside the cache file: the size and the digest prefix,
    # which pooch cannot check, are checked there before the file takes its place
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.filename}.", dir=path.parent))
    try:
        fetched = _fetch(entry, staging)
        _verify(entry, fetched)
        os.replace(fetched, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _downloader(url: str):
    """pooch's downloader for ``url`` (HTTP(S), FTP...), with a progress bar."""
    import pooch

    return pooch.choose_downloader(url, progressbar=True)


def _fetch(entry: WeightFile, folder: Path) -> Path:
    """Download ``entry.url`` to ``folder / entry.filename``; pooch checks a full sha256 on the way."""
    import pooch
    import requests

    known_hash = f"sha256:{entry.sha256}" if entry.sha256 else None
    try:
        got = pooch.retrieve(entry.url, known_hash=known_hash, fname=entry.filename, path=folder,
                             downloader=_downloader(entry.url), progressbar=True)
    except ValueError as err:  # pooch's digest mismatch
        raise WeightsNotFoundError(
            f"the file downloaded from {entry.url} does not have the expected sha256 {entry.sha256} ({err}). "
            f"{_how_to_get(entry)}"
        ) from err
    except (requests.exceptions.RequestException, OSError) as err:
        raise WeightsNotFoundError(
            f"could not download '{entry.filename}' for {entry.used_by} from {entry.url}: {err}. {_how_to_get(entry)}"
        ) from err
    return Path(got)


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
    expected = entry.sha256 or entry.sha256_prefix
    if expected is not None:
        digest = sha256_of(path)
        if not digest.startswith(expected):
            what = expected if entry.sha256 else f"{expected}... (the prefix in its published name)"
            raise WeightsNotFoundError(
                f"{path} has sha256 {digest}, expected {what} for '{entry.filename}'; "
                f"delete it and fetch it again from {entry.url}"
            )


# --------------------------------------------------------------------------------------------
# Registered files. Every entry names the published file and its published checksum.
# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# Video: FID (Inception), FVD/KVD (I3D), FVMD (PIPs++).
# The 8 hex digits in "pt_inception-...-6726825d.pth" are the only published part of its
# sha256 (torch.hub naming); they are checked with the size.
register(WeightFile(
    name="inception_fid",
    filename="pt_inception-2015-12-05-6726825d.pth",
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth",
    sha256=None,
    size=95_628_359,
    used_by="FID (metrics.fid.VideoFID, Inception pool3 features)",
    sha256_prefix="6726825d",
))
# StyleGAN-V's TorchScript export of the TF-hub I3D (Kinetics-400); no digest or size published.
register(WeightFile(
    name="i3d_fvd",
    filename="i3d_torchscript.pt",
    url="https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
    sha256=None,
    size=None,
    used_by="FVD/KVD (metrics.fvd, I3D 400-d logits)",
))
# FVMD's release of the PIPs++ tracker. The authors publish no digest; this one is the digest
# of the 421,766,633-byte release file as recorded by downstream users of that release.
register(WeightFile(
    name="pips2",
    filename="pips2_weights.pth",
    url="https://github.com/ljh0v0/FVMD-frechet-video-motion-distance/releases/download/"
    "pips2_weights/pips2_weights.pth",
    sha256="74dd05ba7f85a34784851f50fede610a99f9acdeb20620b134596837021de3d1",
    size=421_766_633,
    used_by="FVMD (metrics.fvmd, PIPs++ point tracker)",
))

# LPIPS backbone: torchvision's ImageNet AlexNet (the LPIPS linear heads ship with torchmetrics
# and lpips). The 8 hex digits in the name are torchvision's published sha256 prefix only.
register(WeightFile(
    name="alexnet_lpips",
    filename="alexnet-owt-7be5be79.pth",
    url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    sha256=None,
    size=None,
    used_by="LPIPS (metrics.image_quality.VideoLPIPS, AlexNet backbone)",
    sha256_prefix="7be5be79",
))

# Audio: FAD (VGGish). torchvggish publishes only an 8-hex sha256 prefix in each file name.
register(WeightFile(
    name="vggish",
    filename="vggish-10086976.pth",
    url="https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
    sha256=None,
    size=None,
    used_by="FAD (metrics.fad, VGGish 128-d embeddings)",
    sha256_prefix="10086976",
))
register(WeightFile(
    name="vggish_pca",
    filename="vggish_pca_params-970ea276.pth",
    url="https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
    "vggish_pca_params-970ea276.pth",
    sha256=None,
    size=None,
    used_by="FAD (metrics.fad, VGGish PCA/whitening parameters)",
    sha256_prefix="970ea276",
))

# Sync: LSE-C/LSE-D (SyncNet) and its S3FD face detector, as fetched by syncnet_python's
# download_model.sh. No digests are published for either file.
register(WeightFile(
    name="syncnet",
    filename="syncnet_v2.model",
    url="http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",
    sha256=None,
    size=None,
    used_by="LSE-C/LSE-D (metrics.lse, SyncNet v2)",
))
register(WeightFile(
    name="s3fd",
    filename="sfd_face.pth",
    url="http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/sfd_face.pth",
    sha256=None,
    size=89_844_381,
    used_by="LSE face cropping (metrics.facecrop, S3FD detector)",
))

# Whisper: openai publishes each checkpoint's sha256 as a folder of its URL.
_WHISPER_SHA256 = {
    "tiny": "65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9",
    "tiny.en": "d3dd57d32accea0b295c96e26691aa14d8822fac7d9d27d5dc00b4ca2826dd03",
    "base": "ed3a0b6b1c0edf879ad9b11b1af5a0e6ab5db9205f891f668f8b0e6c6326e34e",
    "base.en": "25a8566e1d0c1e2231d1c762132cd20e0f96a85d16145c3a00adf5d1ac670ead",
    "small": "9ecf779972d90ba49c06d968637d720dd632c55bbf19d441fb42bf17a411e794",
    "small.en": "f953ad0fd29cacd07d5a9eda5624af0f6bcf2258be67c92b79389873d91e0872",
}
for _size, _digest in _WHISPER_SHA256.items():
    register(WeightFile(
        name="whisper_" + _size.replace(".", "_"),
        filename=f"{_size}.pt",
        url=f"https://openaipublic.azureedge.net/main/whisper/models/{_digest}/{_size}.pt",
        sha256=_digest,
        size=None,
        used_by=f"WER transcription (metrics.asr, Whisper {_size})",
    ))
del _size, _digest


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
