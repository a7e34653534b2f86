"""What every nfy DataModule shares: one dataset per split, the three loaders, and the tokenizer.

Work that writes to the cache happens once per cache, in ``prepare_data``: preprocessing and
training the tokenizer (:meth:`NFYDataModule.ensure_tokenizer`). Lightning calls ``prepare_data``
on local rank 0 of each node only, then ``setup`` on every rank after a barrier. A subclass's
``setup`` therefore only reads: it fills :attr:`NFYDataModule.datasets` and sets ``tokenizer``
with :meth:`NFYDataModule.read_tokenizer`; the loaders follow from them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from lightning.pytorch import LightningDataModule
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset, IterableDataset

from datamodules.batch import collate
from datamodules.tokenizer import MIN_VOCAB_SIZE, load_tokenizer, train_tokenizer

log = logging.getLogger(__name__)

BYTE_ALPHABET: str = "".join(chr(c) for c in range(32, 127))
"""What the tokenizer is trained on when there is no training transcript at all."""


class NFYDataModule(LightningDataModule):
    """Base of the DataModules: loaders over :attr:`datasets`, the tokenizer at ``tokenizer_path``.

    Args:
        batch_size: samples per batch.
        num_workers: DataLoader workers (0 loads in the main process).
        seed: seeds the training shuffle.
        vocab_size: upper bound of the tokenizer's size (the model's text embedding); at least
            :data:`~datamodules.tokenizer.MIN_VOCAB_SIZE`.
        tokenizer_path: the tokenizer JSON, trained there by :meth:`ensure_tokenizer` when absent.

    Attributes:
        tokenizer: the ``tokenizers.Tokenizer`` that encodes ``text_ids``, set by ``setup``
            (``None`` before); the LightningModule stores it in every checkpoint
            (:mod:`datamodules.batch`).
        datasets: one dataset per split (``train``, ``val``, ``test``), filled by ``setup``.

    Raises:
        ValueError: ``vocab_size`` below the minimum, ``batch_size`` < 1 or ``num_workers`` < 0.
    """

    def __init__(self, batch_size: int, num_workers: int, seed: int, vocab_size: int, tokenizer_path: Path) -> None:
        super().__init__()
        if vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(f"vocab_size must be >= {MIN_VOCAB_SIZE} (BPE specials + 256 bytes), got {vocab_size}")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        self.batch_size, self.num_workers, self.seed, self.vocab_size = batch_size, num_workers, seed, vocab_size
        self.tokenizer_path = Path(tokenizer_path)
        self.tokenizer: Optional[Tokenizer] = None
        self.datasets: dict[str, Dataset] = {}

    # -- tokenizer -------------------------------------------------------------------------
    def ensure_tokenizer(self, texts: Callable[[], Sequence[str]]) -> Tokenizer:
        """The tokenizer at ``tokenizer_path``, trained first on ``texts()`` when the file is absent.

        For ``prepare_data`` (one process per cache): an existing file is kept, never retrained, so
        every rank and every later run encodes text with the same ids. ``texts`` is called only when
        a tokenizer must be trained (reading transcripts can be slow). Without any non-empty text it
        is trained on the printable ASCII alphabet, with a warning. The file is written atomically:
        a rank reading it sees either nothing or the whole tokenizer.

        Raises:
            ValueError: the tokenizer has more tokens than ``vocab_size``.
        """
        if not self.tokenizer_path.is_file():
            found = [text for text in texts() if text]
            if not found:
                log.warning("no training transcript to train the tokenizer on; run datamodules.transcribe first. "
                            "Training it on the byte alphabet only")
                found = [BYTE_ALPHABET]
            train_tokenizer(found, self.vocab_size, self.tokenizer_path)
        return self.read_tokenizer()

    def read_tokenizer(self) -> Tokenizer:
        """The tokenizer at ``tokenizer_path`` (what ``setup`` uses on every rank; it never trains one).

        Raises:
            FileNotFoundError: there is none (``prepare_data`` has not run on this cache).
            ValueError: it has more tokens than ``vocab_size``.
        """
        if not self.tokenizer_path.is_file():
            raise FileNotFoundError(
                f"{type(self).__name__}: no tokenizer at {self.tokenizer_path}; prepare_data() trains it on the "
                "training transcripts (the Trainer calls it on local rank 0 before setup; outside a Trainer call "
                "datamodule.prepare_data() first). Nodes that do not share the cache each run prepare_data")
        tokenizer = load_tokenizer(self.tokenizer_path)
        if tokenizer.get_vocab_size() > self.vocab_size:
            raise ValueError(f"{self.tokenizer_path} has {tokenizer.get_vocab_size()} tokens, more than "
                             f"vocab_size={self.vocab_size}: delete it or raise vocab_size")
        return tokenizer

    @staticmethod
    def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
        """BPE ids of each text without padding (``encode_batch`` pads; ``collate`` pads again)."""
        return [[i for i in encoding.ids if i != 0] for encoding in tokenizer.encode_batch(list(texts))]

    # -- loaders ---------------------------------------------------------------------------
    def describe_split(self, split: str) -> str:
        """Where ``split`` comes from, for the empty-split error (subclasses name their files)."""
        return f"{type(self).__name__}: the {split} split"

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"call setup() before asking for the {split} dataloader")
        dataset = self.datasets[split]
        if len(dataset) == 0:
            raise RuntimeError(f"{self.describe_split(split)} is empty")
        shuffle = shuffle and not isinstance(dataset, IterableDataset)  # LitData shuffles its chunks itself
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          collate_fn=collate, persistent_workers=self.num_workers > 0,
                          generator=torch.Generator().manual_seed(self.seed) if shuffle else None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
