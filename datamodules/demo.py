"""DataModule of the synthetic demo corpus (``datamodules.demo_corpus``), through the preprocessing core.

``prepare_data`` builds the corpus if absent, preprocesses its clips into
``<root>/cache/<image_size>`` (:mod:`datamodules.preprocess`) and trains the BPE tokenizer on
the training transcripts (``<cache>/tokenizer.json``); ``setup`` reads the manifest and splits
by the corpus' own ``split`` field (speaker-disjoint). Batches follow :class:`~datamodules.batch.NFYBatch`.

Its samples come from :class:`~datamodules.samples.CachedClipDataset`, which is not
demo-specific: any dataset preprocessed by the core can use it with its manifest records.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from datamodules.base import NFYDataModule
from datamodules.conventions import IMAGE_SIZE, MAX_UTTERANCE_SECONDS
from datamodules.preprocess import PreprocessConfig, load_manifest, preprocess_clips
from datamodules.samples import CachedClipDataset
from datamodules.sources import ClipSource
from datamodules.splits import SPLITS

log = logging.getLogger(__name__)


class DemoDataModule(NFYDataModule):
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
        cache = Path(cache_dir) if cache_dir else Path(root) / "cache" / str(image_size)
        super().__init__(batch_size, num_workers, seed, vocab_size, cache / "tokenizer.json")
        if num_frames < 1 or motion_frames < 0:
            raise ValueError(f"num_frames must be >= 1 and motion_frames >= 0, got {num_frames}, {motion_frames}")
        self.save_hyperparameters()
        self.root, self.cache_dir = Path(root), cache
        self.image_size, self.num_frames, self.motion_frames = image_size, num_frames, motion_frames
        self.config = PreprocessConfig(image_size=image_size, max_seconds=max_seconds)

    def sources(self) -> list[ClipSource]:
        """One :class:`ClipSource` per clip of the corpus' ``metadata.jsonl``."""
        from datamodules.demo_corpus import load_metadata

        return [
            ClipSource(key=m["key"], video_path=str(self.root / "clips" / f"{m['key']}.mp4"), speaker=m["speaker"],
                       dataset="demo", split=m["split"], transcript=m["transcript"], language="en",
                       face_box=tuple(m["face_box"]), landmarks=np.asarray(m["landmarks"], np.float64),
                       extra={"voice": m.get("voice"), "face_id": m.get("face_id")})
            for m in load_metadata(self.root)
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
        self.ensure_tokenizer(lambda: [r["transcript"] for r in load_manifest(self.cache_dir) if r.get("split") == "train"])

    def setup(self, stage: Optional[str] = None) -> None:
        """Read the manifest and the tokenizer; one dataset per split (idempotent)."""
        if self.datasets:
            return
        self.tokenizer = self.read_tokenizer()  # trained by prepare_data
        records = load_manifest(self.cache_dir)
        for split in SPLITS:
            chosen = [r for r in records if r.get("split") == split]
            ids = self.encode(self.tokenizer, [r.get("transcript") or "" for r in chosen])
            self.datasets[split] = CachedClipDataset(chosen, self.cache_dir, ids, self.num_frames,
                                                     self.motion_frames, random_window=split == "train")
        log.info("demo splits: %s", {s: len(d) for s, d in self.datasets.items()})

    def describe_split(self, split: str) -> str:
        return f"the {split} split of {self.cache_dir / 'manifest.jsonl'}"
