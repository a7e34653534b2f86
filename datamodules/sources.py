"""What a dataset hands to the preprocessing core: one :class:`ClipSource` per usable clip.

Dataset modules (``datamodules/<dataset>.py``) only discover files and read metadata; they turn
each clip into a ``ClipSource`` and the preprocessing core (``datamodules/preprocess.py``) does
the rest in one code path for all datasets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


@dataclass
class ClipSource:
    """One clip to preprocess.

    Args:
        key: unique within ``dataset``; safe as a folder name (use ``safe_key`` for odd names).
        video_path: the container holding the video (and usually the audio).
        speaker: speaker identity; splits are speaker-disjoint on it.
        dataset: dataset name, e.g. ``demo``, ``voxceleb``, ``fakeavceleb``, ``hdtf``, ``celebvhq``.
        split: ``train``/``val``/``test`` when the dataset fixes it, else ``None``.
        transcript: spoken text when known (demo corpus, Whisper sidecar), else ``None``.
        language: ISO code when known.
        start: first second of the clip inside ``video_path`` (HDTF intervals, CelebV-HQ raw).
        end: last second (exclusive), ``None`` for the end of the file. The core still applies
            its own ``max_seconds`` cap from ``start``.
        audio_path: a separate audio file (VoxCeleb1 wav next to a rebuilt video), else the
            audio of ``video_path`` is used.
        face_box: (x0, y0, x1, y1) in pixels of the source frame at ``start``, when the
            dataset gives one (HDTF, CelebV-HQ, demo corpus); ``None`` runs the face detector.
        landmarks: (5, 2) float pixels in the source frame: left eye, right eye, nose, left
            mouth corner, right mouth corner (MTCNN's order); ``None`` lets the detector find them.
        extra: anything dataset-specific worth keeping in the manifest (JSON-serialisable).
    """

    key: str
    video_path: str
    speaker: str
    dataset: str
    split: Optional[str] = None
    transcript: Optional[str] = None
    language: Optional[str] = None
    start: float = 0.0
    end: Optional[float] = None
    audio_path: Optional[str] = None
    face_box: Optional[tuple[float, float, float, float]] = None
    landmarks: Optional[np.ndarray] = None
    extra: dict[str, Any] = field(default_factory=dict)


def safe_key(name: str) -> str:
    """Turn an arbitrary clip name (spaces, parentheses, slashes) into a folder-safe key."""
    out = "".join(c if c.isalnum() or c in "-_.#" else "_" for c in name.strip())
    return out.strip(".") or "clip"
