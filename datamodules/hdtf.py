"""HDTF as a DataModule: annotation files, either processed-clip naming, or raw videos cut and cropped.

Read from ``<root>/HDTF_dataset/`` (or ``root`` itself), per subset RD/WDA/WRA (UTF-8 BOM allowed):
``xx_annotion_time.txt`` (``<name>.mp4 mm:ss-mm:ss ...``: interval k of video ``name``) and
``xx_crop_wh.txt`` (``<name>_<k>.mp4 x w y h``, not every interval has one).

For interval k of ``name`` the first existing file wins:

1. a processed clip: ``<clips>/<SUBSET>_<name>_<kkk>.mp4`` (universome ``download.py``) or
   ``<clips>/<name>_<k>.mp4`` (official naming); the face is found by the detector;
2. the raw video ``<raw>/<SUBSET>_<name>.mp4`` or ``<raw>/<name>.mp4``, cut to the interval
   (``start``/``end``) and cropped with the annotated box when there is one.

Otherwise the interval is listed with its missing path so the core records it as rejected.
Speakers are names without trailing digits (``AmyKlobuchar0``/``1`` are one person); all
speech is English. An optional ``<root>/splits/test.txt`` (clip names, either scheme) fixes the test set.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Optional, Union

from datamodules.clip_dataset import ClipDataModule
from datamodules.sources import ClipSource

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]
SUBSETS: tuple[str, ...] = ("RD", "WDA", "WRA")


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def _seconds(stamp: str) -> float:
    parts = [float(p) for p in stamp.split(":")]
    return sum(p * 60 ** i for i, p in enumerate(reversed(parts)))


def read_intervals(path: PathLike) -> dict[str, list[tuple[float, float]]]:
    """``{name: [(start_s, end_s), ...]}`` from an ``xx_annotion_time.txt`` file."""
    out = {}
    for parts in _lines(Path(path)):
        out[Path(parts[0]).stem] = [(_seconds(a), _seconds(b)) for a, b in (p.split("-") for p in parts[1:])]
    return out


def read_crops(path: PathLike) -> dict[str, tuple[float, float, float, float]]:
    """``{"<name>_<k>": (x0, y0, x1, y1)}`` pixels from an ``xx_crop_wh.txt`` file (``x w y h`` rows)."""
    if not Path(path).is_file():
        return {}
    out = {}
    for parts in _lines(Path(path)):
        x, w, y, h = (float(v) for v in parts[1:5])
        out[Path(parts[0]).stem] = (x, y, x + w, y + h)
    return out


def speaker_of(name: str) -> str:
    """Person of a video name: trailing digits stripped (``Radio<n>`` programmes stay apart)."""
    if re.fullmatch(r"Radio\d+", name):
        return name
    return re.sub(r"\d+$", "", name) or name


def annotation_dir(root: PathLike) -> Path:
    """``<root>/HDTF_dataset`` or ``root``, whichever holds ``*_annotion_time.txt`` files.

    Raises:
        FileNotFoundError: neither does (names the files looked for).
    """
    for folder in (Path(root) / "HDTF_dataset", Path(root)):
        if any((folder / f"{s}_annotion_time.txt").is_file() for s in SUBSETS):
            return folder
    raise FileNotFoundError(f"HDTF annotations not found: looked for {{RD,WDA,WRA}}_annotion_time.txt in "
                            f"{Path(root) / 'HDTF_dataset'} and {root}")


def _shrunk(box: tuple[float, float, float, float], scale: float) -> tuple[float, float, float, float]:
    """A box ``scale`` times smaller about its centre: the core grows it back to the annotated crop."""
    cx, cy, half_w, half_h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
    return cx - half_w / scale, cy - half_h / scale, cx + half_w / scale, cy + half_h / scale


def _clip_source(subset: str, name: str, k: int, span, clips: Path, raw: Path, crops: dict, box_scale: float,
                 tests: set) -> ClipSource:
    key = f"{subset}_{name}_{k:03d}"
    split = "test" if {key, f"{name}_{k}"} & tests else None
    common = dict(key=key, speaker=speaker_of(name), dataset="hdtf", split=split, language="en")
    for processed in (clips / f"{key}.mp4", clips / f"{name}_{k}.mp4"):
        if processed.is_file():
            return ClipSource(video_path=str(processed), extra={"subset": subset, "scheme": "processed"}, **common)
    raw_file = next((p for p in (raw / f"{subset}_{name}.mp4", raw / f"{name}.mp4") if p.is_file()),
                    clips / f"{key}.mp4")
    crop = crops.get(f"{name}_{k}")
    return ClipSource(video_path=str(raw_file), start=span[0], end=span[1],
                      face_box=None if crop is None else _shrunk(crop, box_scale),
                      extra={"subset": subset, "scheme": "raw", "annotated_crop": crop}, **common)


def discover(root: PathLike, clips_dir: Optional[PathLike] = None, raw_dir: Optional[PathLike] = None,
             box_scale: float = 1.45) -> list[ClipSource]:
    """One :class:`ClipSource` per annotated interval of HDTF under ``root``.

    Args:
        root: holds ``HDTF_dataset/`` (annotations) and the clips.
        clips_dir: processed clips (default ``<root>/clips`` if present, else ``root``).
        raw_dir: raw downloads (default ``<clips>/_videos_raw`` or ``<root>/_videos_raw``).
        box_scale: the core's ``PreprocessConfig.box_scale``, so that a raw cut is cropped to the annotated box.
    """
    root = Path(root)
    notes = annotation_dir(root)
    clips = Path(clips_dir) if clips_dir else (root / "clips" if (root / "clips").is_dir() else root)
    raw = Path(raw_dir) if raw_dir else next((p for p in (clips / "_videos_raw", root / "_videos_raw") if p.is_dir()),
                                              root / "_videos_raw")
    test_file = root / "splits" / "test.txt"
    tests = {Path(t).stem for t in test_file.read_text().split()} if test_file.is_file() else set()
    out = []
    for subset in SUBSETS:
        times = notes / f"{subset}_annotion_time.txt"
        if not times.is_file():
            log.warning("HDTF subset %s skipped: %s not found", subset, times)
            continue
        crops = read_crops(notes / f"{subset}_crop_wh.txt")
        for name, spans in sorted(read_intervals(times).items()):
            out += [_clip_source(subset, name, k, span, clips, raw, crops, box_scale, tests) for k, span in enumerate(spans)]
    missing = [s.video_path for s in out if not Path(s.video_path).is_file()]
    if missing:
        log.warning("%d HDTF intervals have neither a processed clip nor a raw video (e.g. %s); recorded as rejected",
                    len(missing), missing[0])
    return out


class HDTFDataModule(ClipDataModule):
    """HDTF (see the module docstring); arguments of :class:`ClipDataModule` plus:

    Args:
        clips_dir: folder of processed clips (default ``<root>/clips`` or ``root``).
        raw_dir: folder of raw downloads (default ``_videos_raw`` next to the clips).
    """

    dataset_name = "hdtf"

    def __init__(self, *args, clips_dir: Optional[str] = None, raw_dir: Optional[str] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clips_dir, self.raw_dir = clips_dir, raw_dir

    def sources(self) -> list[ClipSource]:
        return discover(self.root, self.clips_dir, self.raw_dir, self.config.box_scale)
