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

from torch.utils.data import ConcatDataset

from datamodules.base import NFYDataModule
from datamodules.celebvhq import CelebVHQDataModule
from datamodules.clip_dataset import ClipDataModule, train_texts
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


class CombinedDataModule(NFYDataModule):
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
        given = {"voxceleb": voxceleb_root, "fakeavceleb": fakeavceleb_root, "hdtf": hdtf_root,
                 "celebvhq": celebvhq_root}
        roots = {name: root or os.environ.get(ENV_VARS[name]) for name, root in given.items()}
        roots = {name: root for name, root in roots.items() if root}
        if not roots:
            raise ValueError(f"CombinedDataModule: no dataset root given; set one of *_root or the environment "
                             f"variables {sorted(ENV_VARS.values())}")
        super().__init__(batch_size, num_workers, seed, vocab_size,
                         Path(tokenizer_path) if tokenizer_path else Path(cache_dir) / "tokenizer.json")
        self.save_hyperparameters()
        self.image_size, self.num_frames, self.motion_frames = image_size, num_frames, motion_frames
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

    def prepare_data(self) -> None:
        """Preprocess every dataset (resumable), then train the shared tokenizer on all their training
        text when absent. Nothing when streaming."""
        if self.streaming:
            return
        for module in self.modules.values():
            module.preprocess()
        # every module shares tokenizer_path: one tokenizer for the mix, not the first dataset's
        self.ensure_tokenizer(lambda: [t for m in self.modules.values() for t in train_texts(m.utterance_records())])

    def setup(self, stage: Optional[str] = None) -> None:
        """Set up every dataset (each reads the shared tokenizer that ``prepare_data`` trained)."""
        if self.datasets:
            return
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

    def describe_split(self, split: str) -> str:
        return f"the combined {split} split"
