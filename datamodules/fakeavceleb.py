"""FakeAVCeleb v1.2 as a DataModule, resolved through its malformed ``meta_data.csv``.

The CSV header ``source,target1,target2,method,category,type,race,gender,path,`` has a trailing
comma, and rows carry 10 values: ``path`` is the *file name* and the unnamed 10th column the
*folder*, prefixed ``FakeAVCeleb/``. Basenames repeat across folders, so files are resolved
through the CSV only. The archive often unpacks twice nested (``FakeAVCeleb_v1.2/FakeAVCeleb_v1.2/``).

By default only category A (RealVideo-RealAudio) is used: real talking faces. Speakers are the
``source`` identities (VoxCeleb2 ids); there is no official split. CSV rows whose file is missing
are still listed so the core records them in ``rejects.jsonl``.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Union

from datamodules.clip_dataset import ClipDataModule
from datamodules.sources import ClipSource, safe_key

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]

CATEGORIES: dict[str, str] = {"A": "RealVideo-RealAudio", "B": "RealVideo-FakeAudio",
                              "C": "FakeVideo-RealAudio", "D": "FakeVideo-FakeAudio"}
COLUMNS: tuple[str, ...] = ("source", "target1", "target2", "method", "category", "type", "race", "gender",
                            "file", "folder")


def find_root(root: PathLike) -> Path:
    """The folder holding ``meta_data.csv`` (``root`` or one/two ``FakeAVCeleb_v1.2`` levels down).

    Raises:
        FileNotFoundError: no ``meta_data.csv`` at any of those places.
    """
    root = Path(root)
    tries = [root, root / "FakeAVCeleb_v1.2", root / "FakeAVCeleb_v1.2" / "FakeAVCeleb_v1.2"]
    for folder in tries:
        if (folder / "meta_data.csv").is_file():
            return folder
    raise FileNotFoundError(f"FakeAVCeleb metadata not found: looked for meta_data.csv in "
                            f"{', '.join(str(t) for t in tries)}")


def read_meta(path: PathLike) -> list[dict[str, str]]:
    """Rows of ``meta_data.csv`` as dicts with :data:`COLUMNS` keys (``file`` + ``folder`` fixed up)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    header = [h.strip() for h in rows[0]]
    if header[:9] != list(COLUMNS[:8]) + ["path"]:
        raise ValueError(f"{path}: unexpected header {rows[0]}; expected 'source,target1,target2,method,category,"
                         "type,race,gender,path,'")
    out = []
    for number, row in enumerate(rows[1:], 2):
        if len(row) < 10:
            log.warning("%s line %d has %d values, expected 10 (file name, folder); skipped", path, number, len(row))
            continue
        record = dict(zip(COLUMNS, (v.strip() for v in row[:10])))
        parts = Path(record["folder"]).parts
        record["folder"] = str(Path(*parts[1:])) if parts and parts[0] == "FakeAVCeleb" else record["folder"]
        out.append(record)
    return out


def discover(root: PathLike, categories: tuple[str, ...] = ("A",)) -> list[ClipSource]:
    """Clips of ``categories`` (letters A-D) listed in ``meta_data.csv`` under ``root``.

    Raises:
        FileNotFoundError: no ``meta_data.csv`` (see :func:`find_root`).
        ValueError: an unknown category letter.
    """
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise ValueError(f"categories {unknown} unknown; expected letters of {CATEGORIES}")
    base = find_root(root)
    seen, out = set(), []
    for row in read_meta(base / "meta_data.csv"):
        if row["category"] not in categories:
            continue
        rel = Path(row["folder"]) / row["file"]
        if rel in seen:  # the CSV repeats a few rows
            continue
        seen.add(rel)
        extra = {k: row[k] for k in ("category", "type", "method", "race", "gender", "target1", "target2")}
        out.append(ClipSource(key=safe_key(rel.with_suffix("").as_posix().replace("/", "__")),
                              video_path=str(base / rel), speaker=row["source"], dataset="fakeavceleb",
                              extra={**extra, "relative_path": rel.as_posix()}))
    missing = [s.video_path for s in out if not Path(s.video_path).is_file()]
    if missing:
        log.warning("%d FakeAVCeleb files listed in %s are missing (e.g. %s); they will be recorded as rejected",
                    len(missing), base / "meta_data.csv", missing[0])
    return out


class FakeAVCelebDataModule(ClipDataModule):
    """FakeAVCeleb (see the module docstring); arguments of :class:`ClipDataModule` plus:

    Args:
        categories: category letters to use (A = real video and real audio).
    """

    dataset_name = "fakeavceleb"

    def __init__(self, *args, categories: tuple[str, ...] = ("A",), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.categories = tuple(categories)

    def sources(self) -> list[ClipSource]:
        return discover(self.root, self.categories)
