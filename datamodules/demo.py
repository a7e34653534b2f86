"""DataModule of the synthetic demo corpus (``datamodules.demo_corpus``), through the preprocessing core.

``prepare_data`` builds the corpus if absent, preprocesses its clips into
``<root>/cache/<image_size>`` (:mod:`datamodules.preprocess`) and trains the BPE tokenizer on
the training transcripts (``<cache>/tokenizer.json``); ``setup`` reads the manifest and splits
by the corpus' own ``split`` field (speaker-disjoint). Batches follow :class:`~datamodules.batch.NFYBatch`.

The :class:`CachedClipDataset` is not demo-specific: any dataset preprocessed by the core can
use it with its manifest records.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

from datamodules.batch import collate
from datamodules.conventions import IMAGE_SIZE, MAX_UTTERANCE_SECONDS, PROFILE_SAMPLES
from datamodules.preprocess import PreprocessConfig, load_clip, load_manifest, preprocess_clips
from datamodules.sources import ClipSource
from datamodules.tokenizer import MIN_VOCAB_SIZE, load_tokenizer, train_tokenizer

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")


def read_metadata(root: Any) -> list[dict]:
    """Records of ``<root>/metadata.jsonl`` (the demo corpus layout), one per clip.

    Raises:
        FileNotFoundError: the corpus has no ``metadata.jsonl``.
    """
    path = Path(root) / "metadata.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no demo corpus metadata at {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _to_unit(images: np.ndarray) -> torch.Tensor:
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
            "ref_image": _to_unit(ref),  # (3, H, W)
            "face_mask": torch.from_numpy(masks["face"]).float()[None],  # (1, H, W)
            "lip_mask": torch.from_numpy(masks["lip"]).float()[None],  # (1, H, W)
            "profile_wav": wav[:PROFILE_SAMPLES].clone(),  # (32000,)
            "video": _to_unit(video),  # (F + M, 3, H, W)
            "frame_start": frame_start,
            "wav": wav,
            "mel": torch.from_numpy(clip.mel()).float(),  # (80, T)
            "key": record["key"],
            "speaker": record["speaker"],
            "dataset": record["dataset"],
        }

    def _window(self, clip: Any, ref: np.ndarray, frame_start: int) -> np.ndarray:
        """Frames ``frame_start`` .. + M + F - 1; before the clip: the reference, after it: the last frame."""
        total = self.motion_frames + self.num_frames
        lo, hi = max(frame_start, 0), min(frame_start + total, clip.num_frames)
        decoded = clip.frames(lo, hi)  # (hi - lo, H, W, 3)
        before = [ref] * (lo - frame_start)
        after = [decoded[-1]] * (total - len(before) - len(decoded))
        return np.stack([*before, *decoded, *after])


class DemoDataModule(LightningDataModule):
    """The demo corpus as :class:`~datamodules.batch.NFYBatch` batches.

    Args:
        root: corpus folder (``clips/``, ``metadata.jsonl``); built there when absent.
        cache_dir: preprocessed clips; ``None`` = ``<root>/cache/<image_size>``.
        image_size: side of the face crop.
        num_frames: F, frames per video window.
        motion_frames: motion-context frames before the window.
        batch_size: clips per batch.
        num_workers: DataLoader workers (0 loads in the main process).
        max_seconds: utterances are cut to at most this long (paper: about 10 s).
        seed: seeds the training shuffle and the random windows.
        vocab_size: size of the text embedding the model gets; the BPE tokenizer is trained with
            it as its upper bound (at least 260).
        build_if_missing: build the corpus in ``prepare_data`` when ``root`` has none.
        preprocess_workers: processes for preprocessing (0 = in this process).

    Attributes:
        tokenizer: the ``tokenizers.Tokenizer`` of ``<cache>/tokenizer.json`` that encodes
            ``text_ids``, set by :meth:`setup` (``None`` before); the LightningModule stores it in
            every checkpoint (:mod:`datamodules.batch`).
    """

    def __init__(self, root: str = "data/demo", cache_dir: Optional[str] = None, image_size: int = IMAGE_SIZE,
                 num_frames: int = 16, motion_frames: int = 2, batch_size: int = 8, num_workers: int = 2,
                 max_seconds: float = MAX_UTTERANCE_SECONDS, seed: int = 0, vocab_size: int = 512,
                 build_if_missing: bool = True, preprocess_workers: int = 0) -> None:
        super().__init__()
        if vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(f"vocab_size must be >= {MIN_VOCAB_SIZE} (BPE specials + 256 bytes), got {vocab_size}")
        for name, value in (("num_frames", num_frames), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if motion_frames < 0 or num_workers < 0:
            raise ValueError(f"motion_frames and num_workers must be >= 0, got {motion_frames}, {num_workers}")
        self.save_hyperparameters()
        self.root = Path(root)
        self.cache_dir = Path(cache_dir) if cache_dir else self.root / "cache" / str(image_size)
        self.image_size, self.num_frames, self.motion_frames = image_size, num_frames, motion_frames
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.vocab_size = vocab_size
        self.config = PreprocessConfig(image_size=image_size, max_seconds=max_seconds)
        self.tokenizer: Optional[Tokenizer] = None
        self.datasets: dict[str, CachedClipDataset] = {}

    @property
    def tokenizer_path(self) -> Path:
        return self.cache_dir / "tokenizer.json"

    def sources(self) -> list[ClipSource]:
        """One :class:`ClipSource` per clip of the corpus' ``metadata.jsonl``."""
        return [
            ClipSource(key=m["key"], video_path=str(self.root / "clips" / f"{m['key']}.mp4"), speaker=m["speaker"],
                       dataset="demo", split=m["split"], transcript=m["transcript"], language="en",
                       face_box=tuple(m["face_box"]), landmarks=np.asarray(m["landmarks"], np.float64),
                       extra={"voice": m.get("voice"), "face_id": m.get("face_id")})
            for m in read_metadata(self.root)
        ]

    def prepare_data(self) -> None:
        """Build the corpus if absent, preprocess it (resumable), train the tokenizer if absent."""
        if not (self.root / "corpus.json").is_file():  # written last by the corpus builder
            if not self.hparams.build_if_missing:
                raise FileNotFoundError(f"no finished demo corpus at {self.root} (corpus.json missing) "
                                        "and build_if_missing=False")
            from datamodules.demo_corpus import ensure_demo_corpus

            ensure_demo_corpus(self.root)
        report = preprocess_clips(self.sources(), self.cache_dir, self.config,
                                  num_workers=self.hparams.preprocess_workers)
        if report.num_rejected:
            log.warning("demo corpus: %d clips rejected, see %s", report.num_rejected, self.cache_dir / "rejects.jsonl")
        if not self.tokenizer_path.is_file():
            texts = [r["transcript"] for r in load_manifest(self.cache_dir) if r.get("split") == "train"]
            train_tokenizer(texts, self.vocab_size, self.tokenizer_path)

    def setup(self, stage: Optional[str] = None) -> None:
        """Read the manifest and the tokenizer; one dataset per split (idempotent)."""
        if self.datasets:
            return
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        if self.tokenizer.get_vocab_size() > self.vocab_size:
            raise ValueError(f"{self.tokenizer_path} has {self.tokenizer.get_vocab_size()} tokens, more than "
                             f"vocab_size={self.vocab_size}: delete it or raise vocab_size")
        records = load_manifest(self.cache_dir)
        for split in SPLITS:
            chosen = [r for r in records if r.get("split") == split]
            ids = [e.ids for e in self.tokenizer.encode_batch([r.get("transcript") or "" for r in chosen])]
            ids = [[i for i in row if i != 0] for row in ids]  # encode_batch pads; collate pads again
            self.datasets[split] = CachedClipDataset(chosen, self.cache_dir, ids, self.num_frames,
                                                     self.motion_frames, random_window=split == "train")
        log.info("demo splits: %s", {s: len(d) for s, d in self.datasets.items()})

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"call setup() before asking for the {split} dataloader")
        if len(self.datasets[split]) == 0:
            raise RuntimeError(f"the {split} split of {self.cache_dir / 'manifest.jsonl'} has no clip")
        return DataLoader(
            self.datasets[split], batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
            collate_fn=collate, persistent_workers=self.num_workers > 0, drop_last=False,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
