"""The paper's training mix: VoxCeleb, FakeAVCeleb, HDTF and CelebV-HQ in one DataModule.

Each dataset's root comes from the config or its environment variable (:data:`ENV_VARS`); a
dataset with neither is left out (at least one is required). The four DataModules share one
cache (clips land in ``clips/<dataset>/``) and one tokenizer; each split is the concatenation of
the datasets' splits, so splits stay speaker-disjoint (datasets share no speaker ids).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import torch
from lightning.pytorch import LightningDataModule
from tokenizers import Tokenizer
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from datamodules.batch import collate
from datamodules.celebvhq import CelebVHQDataModule
from datamodules.clip_dataset import ClipDataModule
from datamodules.conventions import IMAGE_SIZE
from datamodules.fakeavceleb import FakeAVCelebDataModule
from datamodules.hdtf import HDTFDataModule
from datamodules.splits import SPLITS
from datamodules.voxceleb import VoxCelebDataModule

log = logging.getLogger(__name__)

ENV_VARS: dict[str, str] = {"voxceleb": "NFY_VOXCELEB", "fakeavceleb": "NFY_FAKEAVCELEB",
                            "hdtf": "NFY_HDTF", "celebvhq": "NFY_CELEBVHQ"}
MODULES: dict[str, type] = {"voxceleb": VoxCelebDataModule, "fakeavceleb": FakeAVCelebDataModule,
                            "hdtf": HDTFDataModule, "celebvhq": CelebVHQDataModule}


class CombinedDataModule(LightningDataModule):
    """All four datasets mixed (paper Sec. 4.1).

    Every argument after the roots is given to each dataset's
    :class:`~datamodules.clip_dataset.ClipDataModule` (see there); all are plain YAML keys of
    ``data.init_args``.

    Args:
        voxceleb_root, fakeavceleb_root, hdtf_root, celebvhq_root: dataset folders; ``None`` reads
            ``NFY_VOXCELEB`` / ``NFY_FAKEAVCELEB`` / ``NFY_HDTF`` / ``NFY_CELEBVHQ``.
        cache_dir: the shared preprocessing cache (clips land in ``clips/<dataset>/``).
        image_size: side of the face crops (512 in the paper).
        num_frames: F, frames per training window.
        motion_frames: motion context frames before the window.
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        preprocess_workers: processes for preprocessing in ``prepare_data``.
        max_source_seconds: seconds of each source clip that are used (the paper's first 20 s).
        english_only: keep only clips judged English (metadata or Whisper language ID).
        language_threshold: least Whisper language probability for English.
        seed: split and shuffle seed.
        vocab_size: BPE vocabulary of the shared tokenizer.
        tokenizer_path: the shared tokenizer (default ``<cache_dir>/tokenizer.json``); when absent it
            is trained on the training transcripts of all the datasets together.
        streaming_dir: LitData root with one folder per dataset (``<streaming_dir>/<dataset>/``,
            as written by ``python -m experiments.prepare --litdata-output <streaming_dir>/<dataset>``);
            when set, batches stream from it and the cache is not read.
        max_clips: discover at most this many clips per dataset (quick runs).

    Attributes:
        tokenizer: the shared ``tokenizers.Tokenizer`` that encodes ``text_ids``, set by :meth:`setup`
            (``None`` before); the LightningModule stores it in every checkpoint (:mod:`datamodules.batch`).

    Raises:
        ValueError: no dataset root at all.
    """

    def __init__(self, voxceleb_root: Optional[str] = None, fakeavceleb_root: Optional[str] = None,
                 hdtf_root: Optional[str] = None, celebvhq_root: Optional[str] = None, cache_dir: str = "cache",
                 image_size: int = IMAGE_SIZE, num_frames: int = 16, motion_frames: int = 2, batch_size: int = 8,
                 num_workers: int = 2, preprocess_workers: int = 0, max_source_seconds: float = 20.0,
                 english_only: bool = True, language_threshold: float = 0.8, seed: int = 0, vocab_size: int = 512,
                 tokenizer_path: Optional[str] = None, streaming_dir: Optional[str] = None,
                 max_clips: Optional[int] = None) -> None:
        super().__init__()
        given = {"voxceleb": voxceleb_root, "fakeavceleb": fakeavceleb_root, "hdtf": hdtf_root,
                 "celebvhq": celebvhq_root}
        roots = {name: root or os.environ.get(ENV_VARS[name]) for name, root in given.items()}
        roots = {name: root for name, root in roots.items() if root}
        if not roots:
            raise ValueError(f"CombinedDataModule: no dataset root given; set one of *_root or the environment "
                             f"variables {sorted(ENV_VARS.values())}")
        self.save_hyperparameters()
        self.image_size, self.num_frames, self.motion_frames = image_size, num_frames, motion_frames
        self.batch_size, self.num_workers, self.seed, self.vocab_size = batch_size, num_workers, seed, vocab_size
        self.tokenizer_path = Path(tokenizer_path) if tokenizer_path else Path(cache_dir) / "tokenizer.json"
        shared = dict(cache_dir=cache_dir, image_size=image_size, num_frames=num_frames, motion_frames=motion_frames,
                      batch_size=batch_size, num_workers=0, preprocess_workers=preprocess_workers,
                      max_source_seconds=max_source_seconds, english_only=english_only,
                      language_threshold=language_threshold, seed=seed, vocab_size=vocab_size,
                      tokenizer_path=str(self.tokenizer_path), max_clips=max_clips)
        self.modules: dict[str, ClipDataModule] = {
            name: MODULES[name](root=root, **shared,
                                streaming_dir=f"{streaming_dir.rstrip('/')}/{name}" if streaming_dir else None)
            for name, root in roots.items()}
        self.streaming = streaming_dir is not None
        self.tokenizer: Optional[Tokenizer] = None
        self.datasets: dict[str, Dataset] = {}

    def prepare_data(self) -> None:
        """Preprocess every dataset (resumable)."""
        for module in self.modules.values():
            module.prepare_data()

    def setup(self, stage: Optional[str] = None) -> None:
        """Set up every dataset; the shared tokenizer is first trained on all their training text if absent."""
        if self.datasets:
            return
        if not self.streaming and not self.tokenizer_path.is_file():
            # every module shares tokenizer_path: the first trains it on all datasets' training text
            train = [r for m in self.modules.values() for r in m.utterance_records() if r["split"] == "train"]
            next(iter(self.modules.values()))._tokenizer(train)
        for module in self.modules.values():
            module.setup(stage)
        self.tokenizer = next(iter(self.modules.values())).tokenizer  # all load the shared tokenizer_path
        for split in SPLITS:
            parts = [m.datasets[split] for m in self.modules.values()
                     if split in m.datasets and len(m.datasets[split])]
            if self.streaming and parts:  # LitData datasets are iterable: mix them with LitData
                from litdata import CombinedStreamingDataset

                self.datasets[split] = CombinedStreamingDataset(parts, seed=self.seed, iterate_over_all=True)
            else:  # an empty split stays an empty list (ConcatDataset refuses no parts)
                self.datasets[split] = ConcatDataset(parts) if parts else []
        log.info("combined splits: %s", {s: len(d) for s, d in self.datasets.items()})

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.datasets or not len(self.datasets[split]):
            raise RuntimeError(f"the combined {split} split is empty or setup() was not called")
        shuffle = shuffle and not self.streaming  # LitData shuffles chunks itself
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle, collate_fn=collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          generator=torch.Generator().manual_seed(self.seed) if shuffle else None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
