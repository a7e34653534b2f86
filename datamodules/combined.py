"""The paper's training mix: VoxCeleb, FakeAVCeleb, HDTF and CelebV-HQ in one DataModule.

Each dataset's root comes from the config or its environment variable (:data:`ENV_VARS`); a
dataset with neither is left out (at least one is required). The four DataModules share one
cache (clips land in ``clips/<dataset>/``) and one tokenizer; each split is the concatenation of
the datasets' splits, so splits stay speaker-disjoint (datasets share no speaker ids).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import ConcatDataset, DataLoader

from datamodules.batch import collate
from datamodules.celebvhq import CelebVHQDataModule
from datamodules.clip_dataset import ClipDataModule
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

    Args:
        voxceleb_root, fakeavceleb_root, hdtf_root, celebvhq_root: dataset folders; ``None`` reads
            ``NFY_VOXCELEB`` / ``NFY_FAKEAVCELEB`` / ``NFY_HDTF`` / ``NFY_CELEBVHQ``.
        cache_dir: the shared preprocessing cache.
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        seed: split and shuffle seed.
        **kwargs: any other :class:`~datamodules.clip_dataset.ClipDataModule` argument, given to all four.

    Raises:
        ValueError: no dataset root at all.
    """

    def __init__(self, voxceleb_root: Optional[str] = None, fakeavceleb_root: Optional[str] = None,
                 hdtf_root: Optional[str] = None, celebvhq_root: Optional[str] = None, cache_dir: str = "cache",
                 batch_size: int = 8, num_workers: int = 2, seed: int = 0, **kwargs: Any) -> None:
        super().__init__()
        given = {"voxceleb": voxceleb_root, "fakeavceleb": fakeavceleb_root, "hdtf": hdtf_root,
                 "celebvhq": celebvhq_root}
        roots = {name: root or os.environ.get(ENV_VARS[name]) for name, root in given.items()}
        roots = {name: root for name, root in roots.items() if root}
        if not roots:
            raise ValueError(f"CombinedDataModule: no dataset root given; set one of *_root or the environment "
                             f"variables {sorted(ENV_VARS.values())}")
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.modules: dict[str, ClipDataModule] = {
            name: MODULES[name](root=root, cache_dir=cache_dir, batch_size=batch_size, num_workers=0, seed=seed, **kwargs)
            for name, root in roots.items()}
        self.datasets: dict[str, ConcatDataset] = {}

    def prepare_data(self) -> None:
        """Preprocess every dataset (resumable)."""
        for module in self.modules.values():
            module.prepare_data()

    def setup(self, stage: Optional[str] = None) -> None:
        """Set up every dataset; the shared tokenizer is trained on the first one's training text if absent."""
        if self.datasets:
            return
        for module in self.modules.values():
            module.setup(stage)
        for split in SPLITS:
            parts = [m.datasets[split] for m in self.modules.values() if len(m.datasets[split])]
            self.datasets[split] = ConcatDataset(parts) if parts else ConcatDataset([])
        log.info("combined splits: %s", {s: len(d) for s, d in self.datasets.items()})

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.datasets or not len(self.datasets[split]):
            raise RuntimeError(f"the combined {split} split is empty or setup() was not called")
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle, collate_fn=collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          generator=torch.Generator().manual_seed(self.seed) if shuffle else None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
