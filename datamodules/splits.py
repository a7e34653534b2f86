"""Speaker-disjoint train/val/test splits, deterministic for a seed, written to plain text files.

Protocol (paper Sec. 4.1 evaluates on held-out speakers): clips of one speaker never land in two
splits. Where a dataset fixes a split (VoxCeleb2 test identities, the VoxCeleb1 ``Set`` column,
an HDTF ``splits/test.txt``) that split is kept as is and only ``val`` is drawn from the rest.
Otherwise whole speakers are drawn at random (seeded) into ``test`` until it holds at least
``min(test_min_clips, max_test_fraction * N)`` clips (200 test clips per dataset when it is big
enough), then into ``val``; every split keeps at least one speaker when there are three or more.

Split files: ``<out>/<dataset>/{train,val,test}.txt``, one ``key<TAB>speaker`` line per clip.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from common.files import write_text_atomic

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
PathLike = Union[str, os.PathLike]


@dataclass
class SplitConfig:
    """How splits are drawn.

    Args:
        seed: random seed (same seed and clips give the same splits).
        test_min_clips: the paper's protocol: at least this many test clips when the dataset allows.
        test_fraction: the test split gets at least this fraction of the clips.
        max_test_fraction: ... but never more than this fraction (small datasets).
        val_fraction: fraction of clips drawn (by speaker) into ``val``.
        use_official: keep a dataset's own split where it has one.
    """

    seed: int = 0
    test_min_clips: int = 200
    test_fraction: float = 0.05
    max_test_fraction: float = 0.2
    val_fraction: float = 0.05
    use_official: bool = True

    def __post_init__(self) -> None:
        for name in ("test_fraction", "max_test_fraction", "val_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"SplitConfig.{name} must be in [0, 1), got {value}")


def assign_splits(
    clips: Sequence[tuple[str, str, Optional[str]]], config: Optional[SplitConfig] = None
) -> dict[str, str]:
    """Assign every clip to ``train``/``val``/``test`` so that no speaker spans two splits.

    Args:
        clips: ``(key, speaker, official_split or None)`` per clip; keys unique.
        config: the protocol (defaults: :class:`SplitConfig`).

    Returns:
        ``{key: split}``.

    Raises:
        ValueError: an official split name is unknown, or one speaker has two official splits.
    """
    config = config or SplitConfig()
    by_speaker: dict[str, list[str]] = defaultdict(list)
    official: dict[str, str] = {}
    for key, speaker, split in clips:
        by_speaker[speaker].append(key)
        if split is not None and config.use_official:
            split = {"dev": "train"}.get(split, split)
            if split not in SPLITS:
                raise ValueError(f"clip {key!r}: official split {split!r} is not one of {SPLITS} (or 'dev')")
            if official.setdefault(speaker, split) != split:
                raise ValueError(f"speaker {speaker!r} has clips in official splits {official[speaker]!r} "
                                 f"and {split!r}; splits must be speaker-disjoint")
    rng = random.Random(config.seed)
    free = sorted(s for s in by_speaker if s not in official)
    rng.shuffle(free)
    speaker_split = dict(official)
    total = sum(len(k) for k in by_speaker.values())
    if "test" not in official.values():
        target = max(math.ceil(config.test_fraction * total),
                     min(config.test_min_clips, math.floor(config.max_test_fraction * total)))
        _draw(free, by_speaker, speaker_split, "test", target, keep=2)
    if "val" not in official.values():
        _draw(free, by_speaker, speaker_split, "val", math.ceil(config.val_fraction * total), keep=1)
    for speaker in free:
        speaker_split[speaker] = "train"
    return {key: speaker_split[s] for s, keys in by_speaker.items() for key in keys}


def _draw(free: list[str], by_speaker: dict, out: dict, split: str, target: int, keep: int) -> None:
    """Move speakers from the front of ``free`` into ``split`` until it has ``target`` clips."""
    count = 0
    while free and count < target and len(free) > keep:
        speaker = free.pop(0)
        out[speaker] = split
        count += len(by_speaker[speaker])


def write_split_files(out_dir: PathLike, dataset: str, clips: Iterable[tuple[str, str]], splits: dict[str, str]) -> Path:
    """Write ``<out_dir>/<dataset>/{train,val,test}.txt`` (``key<TAB>speaker`` lines, sorted).

    Returns:
        The folder holding the three files.
    """
    folder = Path(out_dir) / dataset
    folder.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    for key, speaker in clips:
        lines[splits[key]].append(f"{key}\t{speaker}")
    for split, rows in lines.items():
        write_text_atomic(folder / f"{split}.txt", "".join(row + "\n" for row in sorted(rows)))
    log.info("%s splits in %s: %s", dataset, folder, {s: len(r) for s, r in lines.items()})
    return folder


def read_split_files(folder: PathLike) -> dict[str, str]:
    """``{key: split}`` from a folder written by :func:`write_split_files`.

    Raises:
        FileNotFoundError: one of ``train.txt``/``val.txt``/``test.txt`` is missing.
    """
    out = {}
    for split in SPLITS:
        path = Path(folder) / f"{split}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"split file {path} not found (expected train.txt, val.txt, test.txt)")
        for line in path.read_text().splitlines():
            if line.strip():
                out[line.split("\t")[0]] = split
    return out
