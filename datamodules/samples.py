"""Unbatched samples of preprocessed clips, for every DataModule and for the LitData writer.

:class:`CachedClipDataset` serves whole clips of a preprocessing cache (the demo corpus);
:class:`UtteranceDataset` serves utterances inside them (the real datasets).
:func:`utterance_frames`, :func:`pick_window` and :func:`build_sample` are shared with
:mod:`datamodules.streaming`, which yields the same samples from LitData chunks. Samples follow
the batch contract of :func:`datamodules.batch.collate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.audio import log_mel
from datamodules.conventions import FPS, PROFILE_SAMPLES, SAMPLES_PER_FRAME
from datamodules.preprocess import load_clip


def to_unit(images: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)
    return x.movedim(-1, -3)


class CachedClipDataset(Dataset):
    """Unbatched samples of preprocessed clips (see :func:`datamodules.batch.collate`).

    Args:
        records: manifest records (``load_manifest``) of the clips to serve.
        cache_dir: the cache the records' paths are relative to.
        text_ids: per record, the BPE ids of its transcript (``<s>`` ... ``</s>``).
        num_frames: F, frames of the window the model generates.
        motion_frames: frames of motion context before the window.
        random_window: a random window start (training); else the first window (val/test).
    """

    def __init__(self, records: Sequence[dict], cache_dir: Any, text_ids: Sequence[Sequence[int]],
                 num_frames: int, motion_frames: int, random_window: bool) -> None:
        if len(records) != len(text_ids):
            raise ValueError(f"records ({len(records)}) and text_ids ({len(text_ids)}) differ in length")
        self.records, self.cache_dir = list(records), Path(cache_dir)
        self.text_ids = [list(ids) for ids in text_ids]
        self.num_frames, self.motion_frames, self.random_window = num_frames, motion_frames, random_window

    def __len__(self) -> int:
        return len(self.records)

    def window_start(self, num_clip_frames: int) -> int:
        """``frame_start``: index of the first motion frame (negative when the window starts the clip)."""
        first = 0
        if self.random_window and num_clip_frames > self.num_frames:
            first = int(torch.randint(0, num_clip_frames - self.num_frames + 1, ()))
        return first - self.motion_frames

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        clip = load_clip(self.cache_dir, record)
        ref = clip.ref()  # (H, W, 3) uint8
        frame_start = self.window_start(clip.num_frames)
        video = self._window(clip, ref, frame_start)  # (F + M, H, W, 3)
        wav = torch.from_numpy(clip.wav()).float()  # (S,)
        masks = clip.masks()
        return {
            "text_ids": torch.tensor(self.text_ids[index], dtype=torch.long),  # (L,)
            "ref_image": to_unit(ref),  # (3, H, W)
            "face_mask": torch.from_numpy(masks["face"]).float()[None],  # (1, H, W)
            "lip_mask": torch.from_numpy(masks["lip"]).float()[None],  # (1, H, W)
            "profile_wav": wav[:PROFILE_SAMPLES].clone(),  # (32000,)
            "video": to_unit(video),  # (F + M, 3, H, W)
            "frame_start": frame_start,
            "wav": wav,
            "mel": torch.from_numpy(clip.mel()).float(),  # (80, T)
            "key": record["key"],
            "speaker": record["speaker"],
            "dataset": record["dataset"],
        }

    def _window(self, clip: Any, ref: np.ndarray, frame_start: int, num_frames: Optional[int] = None) -> np.ndarray:
        """Frames ``frame_start`` .. + M + F - 1 (F: ``num_frames``, default the dataset's); before the
        clip: the reference, after it: the last frame."""
        total = self.motion_frames + (num_frames if num_frames is not None else self.num_frames)
        lo, hi = max(frame_start, 0), min(frame_start + total, clip.num_frames)
        decoded = clip.frames(lo, hi)  # (hi - lo, H, W, 3)
        before = [ref] * (lo - frame_start)
        after = [decoded[-1]] * (total - len(before) - len(decoded))
        return np.stack([*before, *decoded, *after])


def utterance_frames(record: dict) -> tuple[int, int]:
    """``(first, stop)`` 25 fps frame indices of a record's utterance inside its clip."""
    start, end = record.get("utterance", (0.0, None))[:2]
    first = int(round(float(start) * FPS))
    stop = record["num_frames"] if end is None else min(record["num_frames"], int(round(float(end) * FPS)))
    return first, max(stop, first + 1)


def pick_window(first: int, stop: int, num_frames: Optional[int], motion_frames: int, random_window: bool) -> int:
    """``frame_start`` (index of the first motion frame) of a window inside frames ``[first, stop)``."""
    start = first
    if num_frames is not None and random_window and stop - first > num_frames:
        start = first + int(torch.randint(0, stop - first - num_frames + 1, ()))
    return start - motion_frames


def build_sample(frames: np.ndarray, frame_start: int, ref: np.ndarray, masks: dict, wav: np.ndarray,
                 text_ids: Sequence[int], meta: dict) -> dict[str, Any]:
    """One unbatched sample of the batch contract (see :func:`datamodules.batch.collate`).

    Args:
        frames: (M + F, H, W, 3) uint8 window (motion frames first).
        frame_start: clip index of ``frames[0]`` (negative when it repeats the reference).
        ref: (H, W, 3) uint8 reference image (the clip's first frame).
        masks: ``face``, ``lip``: (H, W) uint8 {0, 1}.
        wav: (S,) float32 utterance audio at 16 kHz.
        text_ids: BPE ids of the utterance text.
        meta: ``key``, ``speaker``, ``dataset``.
    """
    audio = torch.from_numpy(np.ascontiguousarray(wav, np.float32))  # (S,)
    profile = torch.zeros(PROFILE_SAMPLES)
    profile[: min(PROFILE_SAMPLES, audio.numel())] = audio[:PROFILE_SAMPLES]  # (32000,) zero-padded
    return {
        "text_ids": torch.tensor(list(text_ids), dtype=torch.long),  # (L,)
        "ref_image": to_unit(ref),  # (3, H, W)
        "face_mask": torch.from_numpy(masks["face"]).float()[None],  # (1, H, W)
        "lip_mask": torch.from_numpy(masks["lip"]).float()[None],  # (1, H, W)
        "profile_wav": profile,
        "video": to_unit(frames),  # (M + F, 3, H, W)
        "frame_start": int(frame_start),
        "wav": audio,
        "mel": log_mel(audio) if audio.numel() > 512 else torch.full((80, 1), -11.5129),  # (80, S // 256 + 1)
        "key": meta["key"],
        "speaker": meta["speaker"],
        "dataset": meta["dataset"],
    }


class UtteranceDataset(CachedClipDataset):
    """:class:`CachedClipDataset` restricted to utterances inside the clips.

    Each record carries ``utterance = (start_s, end_s, text)`` (seconds in the clip); audio, mel
    and profile cover the utterance, the video window lies inside it. ``num_frames=None`` gives
    the whole utterance as the window (then ``T`` frames pair with ``T * 640`` samples).
    """

    def __init__(self, records: Sequence[dict], cache_dir: Any, text_ids: Sequence[Sequence[int]],
                 num_frames: Optional[int], motion_frames: int, random_window: bool) -> None:
        super().__init__(records, cache_dir, text_ids, num_frames or 1, motion_frames, random_window)
        self.whole = num_frames is None

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        clip = load_clip(self.cache_dir, record)
        first, stop = utterance_frames(record)
        num_frames = stop - first if self.whole else self.num_frames  # a local: samples never change the dataset
        frame_start = pick_window(first, stop, num_frames, self.motion_frames, self.random_window)
        ref = np.array(clip.ref())  # (H, W, 3), writable
        frames = self._window(clip, ref, frame_start, num_frames)  # (M + F, H, W, 3)
        wav = clip.wav()[first * SAMPLES_PER_FRAME : stop * SAMPLES_PER_FRAME]  # (S,)
        return build_sample(frames, frame_start, ref, clip.masks(), wav, self.text_ids[index], record)
