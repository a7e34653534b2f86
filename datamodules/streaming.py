"""LitData chunks of preprocessed utterances, and the streaming dataset that turns them into samples.

:func:`optimize_splits` writes ``<output>/<split>/`` with ``litdata.optimize`` (one chunk set per
split). Every leaf is stored with an explicit type, never a path string that a litdata version
might decode on its own (DATASETS.md section 7):

==============  ============================  =====================================================
leaf            type                          content
==============  ============================  =====================================================
``key`` ...     str                           ``key``, ``speaker``, ``dataset``, ``split``, ``text``, ``language``
``video``       bytes                         the cached clip's H.264 mp4 (face crops, 25 fps, no audio)
``audio``       numpy int16 (S,)              the utterance, 16 kHz mono
``ref_image``   bytes                         PNG of the reference frame
``masks``       numpy uint8 (2, H, W)         face and lip masks
``text_ids``    numpy int64 (L,)              BPE ids of ``text``
``frames``      numpy int64 (3,)              clip frame count, utterance first frame, utterance stop
==============  ============================  =====================================================

:class:`StreamingClipDataset` reads them from local disk or object storage (``s3://``, ``gs://``...)
and yields the same unbatched samples as :class:`~datamodules.samples.UtteranceDataset`.
LitData gives each DDP rank and each DataLoader worker a disjoint set of chunks
(``drop_last=True`` under DDP).
"""

from __future__ import annotations

import functools
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
from litdata import StreamingDataset, optimize

from datamodules.conventions import SAMPLES_PER_FRAME
from datamodules.media import read_video
from datamodules.preprocess import load_clip
from datamodules.samples import build_sample, pick_window, utterance_frames

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]


def to_item(record: dict, cache_dir: str) -> dict[str, Any]:
    """The LitData item of one utterance record (see the module table); runs inside ``optimize``."""
    clip = load_clip(cache_dir, record)
    first, stop = utterance_frames(record)
    wav = clip.wav()[first * SAMPLES_PER_FRAME : stop * SAMPLES_PER_FRAME]
    masks = clip.masks()
    utterance = record.get("utterance", (0.0, None, record.get("transcript") or ""))
    return {
        "key": record["key"], "speaker": record["speaker"], "dataset": record["dataset"],
        "split": record.get("split") or "", "text": utterance[2] or "", "language": record.get("language") or "",
        "video": (clip.folder / "video.mp4").read_bytes(),
        "audio": (np.clip(wav, -1.0, 1.0) * 32767).astype(np.int16),  # (S,)
        "ref_image": (clip.folder / "ref.png").read_bytes(),
        "masks": np.stack([masks["face"], masks["lip"]]).astype(np.uint8),  # (2, H, W)
        "text_ids": np.asarray(record.get("text_ids", [1, 2]), np.int64),  # (L,)
        "frames": np.asarray([clip.num_frames, first, stop], np.int64),
    }


def optimize_splits(records: Sequence[dict], cache_dir: PathLike, output_dir: str, num_workers: int = 1,
                    chunk_bytes: str = "256MB", chunk_size: Optional[int] = None) -> dict[str, int]:
    """Write LitData chunks of ``records`` (utterance records with ``split`` and ``text_ids``) per split.

    Args:
        records: from :meth:`ClipDataModule.streaming_records`.
        cache_dir: the preprocessing cache they refer to.
        output_dir: local folder or object-store URL; gets ``train/``, ``val/``, ``test/``.
        num_workers: ``optimize`` worker processes.
        chunk_bytes: target chunk size (256-512 MB suits MB-sized samples).
        chunk_size: items per chunk instead of ``chunk_bytes`` (small tests).

    Returns:
        Items written per split (splits without items are not written).
    """
    counts = {}
    for split in ("train", "val", "test"):
        chosen = [r for r in records if r["split"] == split]
        if not chosen:
            continue
        optimize(fn=functools.partial(to_item, cache_dir=str(cache_dir)), inputs=chosen,
                 output_dir=f"{str(output_dir).rstrip('/')}/{split}", num_workers=max(1, num_workers),
                 chunk_bytes=None if chunk_size else chunk_bytes, chunk_size=chunk_size, mode="overwrite",
                 verbose=False)
        counts[split] = len(chosen)
    log.info("LitData chunks in %s: %s", output_dir, counts)
    return counts


def _decode(video: bytes, lo: int, hi: int) -> np.ndarray:
    """Frames ``lo`` .. ``hi - 1`` of an mp4 held in memory, (n, H, W, 3) uint8."""
    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        handle.write(video)
        handle.flush()
        return read_video(handle.name, start=lo / 25.0, end=(hi - 0.5) / 25.0)[: hi - lo]


class ItemToSample:
    """Turn a stored item into a batch-contract sample (picklable, used as the dataset transform).

    Args:
        num_frames: window length F, ``None`` for the whole utterance.
        motion_frames: motion frames before the window.
        random_window: random window start (training).
    """

    def __init__(self, num_frames: Optional[int], motion_frames: int, random_window: bool) -> None:
        self.num_frames, self.motion_frames, self.random_window = num_frames, motion_frames, random_window

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        from PIL import Image

        total, first, stop = (int(v) for v in item["frames"])
        length = stop - first if self.num_frames is None else self.num_frames
        frame_start = pick_window(first, stop, length, self.motion_frames, self.random_window)
        ref = np.array(Image.open(io.BytesIO(item["ref_image"])).convert("RGB"))  # (H, W, 3)
        lo, hi = max(frame_start, 0), min(frame_start + self.motion_frames + length, total)
        decoded = _decode(item["video"], lo, hi)
        after = self.motion_frames + length - (lo - frame_start) - len(decoded)
        frames = np.stack([*[ref] * (lo - frame_start), *decoded, *[decoded[-1]] * after])  # (M + F, H, W, 3)
        masks = {"face": item["masks"][0], "lip": item["masks"][1]}
        wav = item["audio"].astype(np.float32) / 32767.0
        return build_sample(frames, frame_start, ref, masks, wav, item["text_ids"].tolist(), item)


class StreamingClipDataset(StreamingDataset):
    """LitData ``StreamingDataset`` over :func:`optimize_splits` output, yielding contract samples.

    Args:
        input_dir: one split's folder (local or ``s3://...``).
        num_frames, motion_frames, random_window: see :class:`ItemToSample`.
        seed: shuffle seed; ``random_window`` also turns on chunk shuffling.
        **kwargs: more ``StreamingDataset`` arguments (``max_cache_size``, ``drop_last`` ...).
    """

    def __init__(self, input_dir: str, num_frames: Optional[int] = 16, motion_frames: int = 2,
                 random_window: bool = False, seed: int = 0, **kwargs: Any) -> None:
        if "://" not in str(input_dir) and not (Path(input_dir) / "index.json").is_file():
            raise FileNotFoundError(f"no LitData index at {Path(input_dir) / 'index.json'}: write chunks with "
                                    "`python -m experiments.prepare --litdata-output ...` first")
        super().__init__(str(input_dir), shuffle=random_window, seed=seed,
                         transform=ItemToSample(num_frames, motion_frames, random_window), **kwargs)
