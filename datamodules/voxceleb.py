"""VoxCeleb2 (mp4 release) and VoxCeleb1 (wav release + rebuilt video) as a DataModule.

Layouts read (DATASETS.md section 1):

* VoxCeleb2: ``dev/mp4/idXXXXX/<yt>/00001.mp4`` and the test zip's ``mp4/idXXXXX/<yt>/00001.mp4``
  (no ``test/`` prefix; ``test/mp4/...`` is accepted too); face tracks in the mirrored ``txt/``
  trees (normalised boxes); ``vox2_meta.csv`` (" ," separators, trailing spaces, maybe a BOM)
  gives the official dev/test identities. No language metadata: English comes from language ID.
* VoxCeleb1: ``wav/id1XXXX/<yt>/00001.wav`` with a rebuilt video at ``mp4/id1XXXX/<yt>/00001.mp4``
  (Vox1 has no official video); tab-separated ``vox1_meta.csv`` gives the ``Set`` split and a
  nationality, used as the language metadata for English-speaking countries (others go to LID).
  A wav without its video is still listed, so the core records it as rejected (nothing is lost).

``root`` may hold ``vox1/`` and ``vox2/`` folders, or be one of them.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Optional, Union

from datamodules.clip_dataset import ClipDataModule
from datamodules.sources import ClipSource, safe_key

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]

VOX2_FRAME_SIDE: int = 224
"""VoxCeleb2 mp4 clips are 224x224 face tracks; their txt boxes are normalised to it."""
ENGLISH_NATIONALITIES: frozenset = frozenset({"USA", "UK", "Canada", "Australia", "Ireland", "New Zealand"})
"""Vox1 nationalities taken as English speakers; the rest is left to language ID."""


def read_vox2_meta(path: PathLike) -> dict[str, str]:
    """``{identity: 'dev' | 'test'}`` from ``vox2_meta.csv`` (BOM, " ," separators, trailing spaces)."""
    rows = list(csv.reader(Path(path).read_text(encoding="utf-8-sig").splitlines()))
    header = [h.strip().lower() for h in rows[0]]
    if "set" not in header:
        raise ValueError(f"{path}: no 'Set' column in header {rows[0]} (expected 'VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set')")
    col = header.index("set")
    return {r[0].strip(): r[col].strip() for r in rows[1:] if len(r) > col}


def read_vox1_meta(path: PathLike) -> dict[str, dict[str, str]]:
    """``{identity: {'nationality', 'set'}}`` from the tab-separated ``vox1_meta.csv``."""
    lines = [line.split("\t") for line in Path(path).read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if len(lines[0]) < 5:
        raise ValueError(f"{path}: expected 5 tab-separated columns (ID, name, gender, nationality, set), "
                         f"got {lines[0]}")
    return {r[0].strip(): {"nationality": r[3].strip(), "set": r[4].strip()} for r in lines[1:] if len(r) >= 5}


def read_track_box(path: Path) -> Optional[tuple[float, float, float, float]]:
    """First ``FRAME X Y W H`` row of a VoxCeleb txt file as (x0, y0, x1, y1), or ``None``."""
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0].isdigit():
            x, y, w, h = (float(v) for v in parts[1:])
            return x, y, x + w, y + h
    return None


def _vox2(root: Path) -> list[ClipSource]:
    meta_path = root / "vox2_meta.csv"
    sets = read_vox2_meta(meta_path) if meta_path.is_file() else {}
    if not sets:
        log.warning("%s not found: VoxCeleb2 splits fall back to the folders (dev/ = train, mp4/ = test)", meta_path)
    out = []
    for mp4_root, folder_split in ((root / "dev" / "mp4", "dev"), (root / "mp4", "test"), (root / "test" / "mp4", "test")):
        for path in sorted(mp4_root.glob("id*/*/*.mp4")):
            ident, yt, stem = path.parts[-3], path.parts[-2], path.stem
            box = read_track_box(mp4_root.parent / "txt" / ident / yt / f"{stem}.txt")
            if box is not None and max(box) <= 1.5:  # normalised to the 224x224 frame
                box = tuple(v * VOX2_FRAME_SIDE for v in box)
            out.append(ClipSource(key=safe_key(f"vox2_{ident}_{yt}_{stem}"), video_path=str(path), speaker=ident,
                                  dataset="voxceleb", split=sets.get(ident, folder_split), face_box=box,
                                  extra={"subset": "vox2", "youtube_id": yt}))
    return out


def _vox1(root: Path, video_dir: str) -> list[ClipSource]:
    meta_path = root / "vox1_meta.csv"
    meta = read_vox1_meta(meta_path) if meta_path.is_file() else {}
    if not meta:
        log.warning("%s not found: no VoxCeleb1 split or nationality; language ID decides English", meta_path)
    out = []
    for wav in sorted((root / "wav").glob("id*/*/*.wav")):
        ident, yt, stem = wav.parts[-3], wav.parts[-2], wav.stem
        info = meta.get(ident, {})
        video = root / video_dir / ident / yt / f"{stem}.mp4"
        language = "en" if info.get("nationality") in ENGLISH_NATIONALITIES else None
        out.append(ClipSource(key=safe_key(f"vox1_{ident}_{yt}_{stem}"), video_path=str(video), audio_path=str(wav),
                              speaker=ident, dataset="voxceleb", split=info.get("set"), language=language,
                              extra={"subset": "vox1", "youtube_id": yt, "nationality": info.get("nationality")}))
    missing = sum(not Path(s.video_path).is_file() for s in out)
    if missing:
        log.warning("%d VoxCeleb1 wav files have no rebuilt video under %s (they will be recorded as rejected)",
                    missing, root / video_dir)
    return out


def discover(root: PathLike, subsets: tuple[str, ...] = ("vox1", "vox2"), vox1_video_dir: str = "mp4") -> list[ClipSource]:
    """All VoxCeleb clips under ``root`` (``vox1/`` + ``vox2/``, or one of them directly).

    Raises:
        FileNotFoundError: ``root`` holds neither layout (names what was looked for).
    """
    root = Path(root)
    found: list[ClipSource] = []
    for name in subsets:
        base = root / name if (root / name).is_dir() else root
        is_vox2 = (base / "dev" / "mp4").is_dir() or (base / "vox2_meta.csv").is_file() or (base / "test" / "mp4").is_dir()
        if name == "vox2" and is_vox2:
            found += _vox2(base)
        elif name == "vox1" and (base / "wav").is_dir():
            found += _vox1(base, vox1_video_dir)
    if not found:
        raise FileNotFoundError(f"no VoxCeleb clips under {root}: looked for vox2/dev/mp4/id*/*/*.mp4, vox2/mp4/..., "
                                f"vox1/wav/id*/*/*.wav (or the same without the vox1/vox2 folder)")
    return found


class VoxCelebDataModule(ClipDataModule):
    """VoxCeleb1 + VoxCeleb2 (see the module docstring); arguments of :class:`ClipDataModule` plus:

    Args:
        subsets: which of ``vox1``, ``vox2`` to use.
        vox1_video_dir: folder (under the Vox1 root) of the rebuilt videos, mirroring ``wav/``.
    """

    dataset_name = "voxceleb"

    def __init__(self, *args, subsets: tuple[str, ...] = ("vox1", "vox2"), vox1_video_dir: str = "mp4",
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.subsets, self.vox1_video_dir = tuple(subsets), vox1_video_dir

    def sources(self) -> list[ClipSource]:
        return discover(self.root, self.subsets, self.vox1_video_dir)
