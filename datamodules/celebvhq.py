"""CelebV-HQ as a DataModule, from ``celebvhq_info.json`` and the download script's folders.

``<root>/celebvhq_info.json`` lists ``clips[key]`` (key = ``<ytb_id>_<n>``; ids may start with
``_`` or ``-``, so the id is everything before the *last* underscore) with ``duration``,
normalised ``bbox`` and attribute vectors. Files: ``<root>/downloaded_celebvhq/processed/<key>.mp4``
(square face crops of varying size, source fps and audio) or, failing that, the raw download
``<root>/downloaded_celebvhq/raw/<ytb_id>.mp4``, cut to ``duration`` and cropped as the official
script would (bbox grown by 0.02 per side, clamped, squared on its centre). Keys with neither
file are skipped and counted (partial downloads are normal).

By default only clips flagged ``talk`` are used. Speakers are ``ytb_id`` (the recommended split
unit). An optional ``<root>/language.csv`` (``clip_key,language,prob,text``) supplies the language
metadata; otherwise language ID from the transcript sidecar decides English.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional, Union

from datamodules.clip_dataset import ClipDataModule
from datamodules.hdtf import _shrunk
from datamodules.media import MediaError, probe
from datamodules.sources import ClipSource, safe_key

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]
BBOX_GROW: float = 0.02
"""The official processing grows the normalised bbox by this much per side."""


def youtube_id(key: str) -> str:
    """``M2Ohb0FAaJU_1`` -> ``M2Ohb0FAaJU``; ``_0tf2n3rlJU_0`` -> ``_0tf2n3rlJU`` (split on the last ``_``)."""
    return key.rsplit("_", 1)[0]


def official_crop(bbox: dict[str, float], width: int, height: int) -> tuple[float, float, float, float]:
    """The square crop (x0, y0, x1, y1) pixels the official ``download_and_process.py`` cuts for ``bbox``."""
    top, bottom = max(0.0, bbox["top"] - BBOX_GROW), min(1.0, bbox["bottom"] + BBOX_GROW)
    left, right = max(0.0, bbox["left"] - BBOX_GROW), min(1.0, bbox["right"] + BBOX_GROW)
    top, bottom, left, right = top * height, bottom * height, left * width, right * width
    cy, cx = (top + bottom) / 2, (left + right) / 2
    half = min(bottom - top, right - left) // 2
    return cx - half, cy - half, cx + half, cy + half


def read_info(root: PathLike) -> dict[str, Any]:
    """``celebvhq_info.json`` under ``root``.

    Raises:
        FileNotFoundError: the file is missing.
    """
    path = Path(root) / "celebvhq_info.json"
    if not path.is_file():
        raise FileNotFoundError(f"CelebV-HQ metadata not found: looked for {path}")
    return json.loads(path.read_text())


def read_languages(path: Path) -> dict[str, dict[str, str]]:
    """``{clip_key: {language, prob, text}}`` from an optional ``language.csv``."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return {row["clip_key"]: row for row in csv.DictReader(handle)}


def _names(mapping: list[str], flags: list[int]) -> list[str]:
    return [n.lower() for n, f in zip(mapping, flags) if f]


def discover(root: PathLike, talk_only: bool = True, box_scale: float = 1.45,
             downloads: Optional[PathLike] = None) -> list[ClipSource]:
    """Downloaded CelebV-HQ clips under ``root`` (processed clip preferred, else a raw cut).

    Args:
        root: holds ``celebvhq_info.json`` and ``downloaded_celebvhq/``.
        talk_only: keep clips whose ``talk`` action flag is set.
        box_scale: the core's ``PreprocessConfig.box_scale`` (raw cuts are cropped to the official square).
        downloads: the download folder when not ``<root>/downloaded_celebvhq``.
    """
    root = Path(root)
    info = read_info(root)
    actions = [a.lower() for a in info["meta_info"]["action_mapping"]]
    appearance = info["meta_info"]["appearance_mapping"]
    base = Path(downloads) if downloads else root / "downloaded_celebvhq"
    languages = read_languages(root / "language.csv")
    out, absent, sizes = [], 0, {}
    for key, clip in sorted(info["clips"].items()):
        acts = _names(actions, clip["attributes"]["action"])
        if talk_only and "talk" not in acts:
            continue
        source = _source(key, clip, base, box_scale, sizes)
        if source is None:
            absent += 1
            continue
        lang = languages.get(key)
        source.language = lang["language"] if lang else None
        source.transcript = lang.get("text") if lang else None
        source.extra.update(actions=acts, appearance=_names(appearance, clip["attributes"]["appearance"]),
                            emotion=clip["attributes"].get("emotion"))
        out.append(source)
    log.info("CelebV-HQ: %d clips found, %d listed clips not downloaded under %s", len(out), absent, base)
    return out


def _source(key: str, clip: dict, base: Path, box_scale: float, sizes: dict) -> Optional[ClipSource]:
    ytb = clip.get("ytb_id") or youtube_id(key)
    common = dict(key=safe_key(key), speaker=ytb, dataset="celebvhq")
    processed = base / "processed" / f"{key}.mp4"
    if processed.is_file():
        return ClipSource(video_path=str(processed), extra={"scheme": "processed"}, **common)
    raw = base / "raw" / f"{ytb}.mp4"
    if not raw.is_file():
        return None
    if raw not in sizes:
        try:
            meta = probe(raw)
            sizes[raw] = (meta.width, meta.height)
        except MediaError as err:  # let the core record the unreadable file
            log.warning("cannot probe %s: %s", raw, err)
            sizes[raw] = None
    crop = None if sizes[raw] is None else official_crop(clip["bbox"], *sizes[raw])
    return ClipSource(video_path=str(raw), start=float(clip["duration"]["start_sec"]),
                      end=float(clip["duration"]["end_sec"]), face_box=None if crop is None else _shrunk(crop, box_scale),
                      extra={"scheme": "raw", "official_crop": crop}, **common)


class CelebVHQDataModule(ClipDataModule):
    """CelebV-HQ (see the module docstring); arguments of :class:`ClipDataModule` plus:

    Args:
        talk_only: keep only clips flagged ``talk``.
        downloads: download folder when not ``<root>/downloaded_celebvhq``.
    """

    dataset_name = "celebvhq"

    def __init__(self, *args, talk_only: bool = True, downloads: Optional[str] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.talk_only, self.downloads = talk_only, downloads

    def sources(self) -> list[ClipSource]:
        return discover(self.root, self.talk_only, self.config.box_scale, self.downloads)
