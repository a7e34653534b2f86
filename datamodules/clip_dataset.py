"""What the four real-dataset DataModules share: one DataModule over the utterances of cached clips.

Every dataset module (``voxceleb``, ``fakeavceleb``, ``hdtf``, ``celebvhq``) only *discovers*
clips (a pure ``discover(root, ...) -> list[ClipSource]``); :class:`ClipDataModule` does the rest:

1. ``prepare_data``: preprocess the discovered clips with the core (:mod:`datamodules.preprocess`:
   first 20 s, ``image_size``², 25 fps, 16 kHz), resumable; rejects go to ``rejects.jsonl``; then
   train the tokenizer on the training transcripts when there is none (once per cache: Lightning
   runs ``prepare_data`` on local rank 0 only).
2. ``setup`` (every rank): read the tokenizer, read the manifest and the transcript sidecar (:mod:`datamodules.transcribe`),
   keep English clips (metadata language, else Whisper language ID), cut them into utterances of
   at most ``max_utterance_seconds`` at segment boundaries, split by speaker
   (:mod:`datamodules.splits`, files in ``<cache>/splits/<dataset>/``) and serve
   :class:`~datamodules.samples.UtteranceDataset` samples collated into :class:`~datamodules.batch.NFYBatch`.
3. With ``streaming_dir`` set, samples come from LitData chunks instead (:mod:`datamodules.streaming`).

Excluded clips (not English, no language) are written to ``<cache>/splits/<dataset>/excluded.jsonl``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence

from tokenizers import Tokenizer

from common.files import write_text_atomic
from datamodules.base import NFYDataModule
from datamodules.conventions import IMAGE_SIZE, MAX_UTTERANCE_SECONDS
from datamodules.preprocess import PreprocessConfig, load_manifest, preprocess_clips
from datamodules.samples import UtteranceDataset
from datamodules.sources import ClipSource
from datamodules.splits import SPLITS, SplitConfig, assign_splits, write_split_files
from datamodules.transcribe import is_english, load_transcripts, utterances

log = logging.getLogger(__name__)


class ClipDataModule(NFYDataModule):
    """Base of the real-dataset DataModules; subclasses implement :meth:`sources`.

    Args:
        root: the dataset folder as the user has it (see the subclass).
        cache_dir: where preprocessed clips, sidecars, splits and the tokenizer live.
        image_size: side of the face crop (paper: 512).
        num_frames: F, frames per video window; ``None`` = the whole utterance.
        motion_frames: motion-context frames before the window.
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        preprocess_workers: processes for preprocessing in ``prepare_data``.
        max_source_seconds: preprocess only the first this many seconds of each video (paper: 20).
        max_utterance_seconds: utterances are cut at segment boundaries to at most this long.
        english_only: keep only English clips (metadata, else language ID from the sidecar).
        language_threshold: minimum language-ID probability for English.
        seed: split seed, shuffle seed.
        split_config: the split protocol (``seed`` here wins over its seed).
        vocab_size: tokenizer size bound (trained on training transcripts when absent).
        tokenizer_path: a tokenizer JSON; default ``<cache>/tokenizer.json``.
        streaming_dir: LitData output (local path or ``s3://``...) with ``train/``, ``val/``, ``test/``;
            when set, batches stream from it and the cache is not read.
        max_clips: discover at most this many clips (quick runs).

    Attributes:
        tokenizer: the ``tokenizers.Tokenizer`` of ``tokenizer_path`` that encodes ``text_ids``, set
            by :meth:`setup` (``None`` before, and when streaming without a tokenizer file); the
            LightningModule stores it in every checkpoint (:mod:`datamodules.batch`).
    """

    dataset_name: str = "clips"

    def __init__(self, root: Optional[str] = None, cache_dir: str = "cache", image_size: int = IMAGE_SIZE,
                 num_frames: Optional[int] = 16, motion_frames: int = 2, batch_size: int = 8, num_workers: int = 2,
                 preprocess_workers: int = 0, max_source_seconds: float = 20.0,
                 max_utterance_seconds: float = MAX_UTTERANCE_SECONDS, english_only: bool = True,
                 language_threshold: float = 0.8, seed: int = 0, split_config: Optional[SplitConfig] = None,
                 vocab_size: int = 512, tokenizer_path: Optional[str] = None, streaming_dir: Optional[str] = None,
                 max_clips: Optional[int] = None) -> None:
        super().__init__(batch_size, num_workers, seed, vocab_size,
                         Path(tokenizer_path) if tokenizer_path else Path(cache_dir) / "tokenizer.json")
        if (num_frames is not None and num_frames < 1) or motion_frames < 0:
            raise ValueError(f"num_frames must be >= 1 and motion_frames >= 0, got {num_frames}, {motion_frames}")
        self.save_hyperparameters(ignore=["split_config"])
        self.root = Path(root) if root else None
        self.cache_dir = Path(cache_dir)
        self.num_frames, self.motion_frames = num_frames, motion_frames
        self.preprocess_workers, self.max_clips = preprocess_workers, max_clips
        self.max_utterance_seconds = max_utterance_seconds
        self.english_only, self.language_threshold = english_only, language_threshold
        self.split_config = split_config or SplitConfig()
        self.split_config.seed = seed
        self.streaming_dir = streaming_dir
        self.config = PreprocessConfig(image_size=image_size, max_seconds=max_source_seconds)
        self.excluded: list[dict] = []

    # -- discovery -------------------------------------------------------------------------
    def sources(self) -> list[ClipSource]:
        """The dataset's clips (subclasses call their module's ``discover``)."""
        raise NotImplementedError

    def discover_sources(self) -> list[ClipSource]:
        """:meth:`sources`, capped at ``max_clips``; a clear error when ``root`` is unset."""
        if self.root is None:
            raise ValueError(f"{type(self).__name__}: root is not set (config 'root' or the dataset's environment "
                             "variable)")
        found = self.sources()
        return found[: self.max_clips] if self.max_clips else found

    def prepare_data(self) -> None:
        """Preprocess every discovered clip into the cache (resumable; rejects recorded), then train the
        tokenizer on the training transcripts when ``tokenizer_path`` is absent. Nothing when streaming."""
        if self.streaming_dir:
            return
        self.preprocess()
        self.ensure_tokenizer(lambda: train_texts(self.utterance_records()))

    def preprocess(self) -> None:
        """Preprocess every discovered clip into the cache (resumable; rejects recorded)."""
        report = preprocess_clips(self.discover_sources(), self.cache_dir, self.config, num_workers=self.preprocess_workers)
        log.info("%s: %s", self.dataset_name, report)

    # -- setup -----------------------------------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        """Filter, cut into utterances, split by speaker, build one dataset per split (idempotent)."""
        if self.datasets:
            return
        if self.streaming_dir:
            from datamodules.streaming import StreamingClipDataset

            self.tokenizer = self._streaming_tokenizer()
            for split in SPLITS:
                try:
                    self.datasets[split] = StreamingClipDataset(
                        f"{self.streaming_dir.rstrip('/')}/{split}", num_frames=self.num_frames,
                        motion_frames=self.motion_frames, random_window=split == "train", seed=self.seed)
                except FileNotFoundError as err:  # a split without items was not written
                    log.warning("%s: no %s split in %s (%s)", self.dataset_name, split, self.streaming_dir, err)
            return
        items = self.utterance_records()
        self.tokenizer = self.read_tokenizer()  # trained by prepare_data, once per cache
        for split in SPLITS:
            chosen = [r for r in items if r["split"] == split]
            ids = self.encode(self.tokenizer, [r["utterance"][2] for r in chosen])
            self.datasets[split] = UtteranceDataset(chosen, self.cache_dir, ids, self.num_frames,
                                                    self.motion_frames, random_window=split == "train")
        log.info("%s splits: %s", self.dataset_name, {s: len(d) for s, d in self.datasets.items()})

    def clip_records(self) -> list[dict]:
        """Manifest records of this dataset that pass the English filter, each with its ``split``."""
        records = [r for r in load_manifest(self.cache_dir) if r["dataset"] == self.dataset_name]
        transcripts = load_transcripts(self.cache_dir)
        kept, self.excluded = [], []
        for record in records:
            transcript = transcripts.get((record["dataset"], record["key"]))
            keep, why = is_english(record.get("language"), transcript, self.language_threshold)
            if keep or not self.english_only:
                kept.append({**record, "transcript_record": transcript})
            else:
                self.excluded.append({"key": record["key"], "dataset": record["dataset"], "reason": why})
        if self.excluded:
            log.warning("%s: %d of %d clips excluded as not English (see %s)", self.dataset_name, len(self.excluded),
                        len(records), self._split_dir() / "excluded.jsonl")
        splits = assign_splits([(r["key"], r["speaker"], r.get("split")) for r in kept], self.split_config)
        write_split_files(self.cache_dir / "splits", self.dataset_name, [(r["key"], r["speaker"]) for r in kept], splits)
        _write_jsonl(self._split_dir() / "excluded.jsonl", self.excluded)
        return [{**r, "split": splits[r["key"]]} for r in kept]

    def utterance_records(self) -> list[dict]:
        """One record per utterance (``utterance = (start_s, end_s, text)``) of the kept clips."""
        out = []
        for record in self.clip_records():
            transcript = record.pop("transcript_record")
            if transcript is None and record.get("transcript"):
                transcript = {"text": record["transcript"]}
            for n, utt in enumerate(utterances(record["duration"], transcript, self.max_utterance_seconds)):
                out.append({**record, "utterance": utt, "utterance_index": n})
        return out

    def streaming_records(self) -> list[dict]:
        """Utterance records with ``text_ids``, ready for :func:`datamodules.streaming.optimize_splits`."""
        items = self.utterance_records()
        tokenizer = self.ensure_tokenizer(lambda: train_texts(items))
        encoded = self.encode(tokenizer, [r["utterance"][2] for r in items])
        return [{**r, "text_ids": ids} for r, ids in zip(items, encoded)]

    def _split_dir(self) -> Path:
        return self.cache_dir / "splits" / self.dataset_name

    def _streaming_tokenizer(self) -> Optional[Tokenizer]:
        """The tokenizer the chunks were encoded with: ``tokenizer_path``, when that file exists."""
        if self.tokenizer_path.is_file():
            return self.read_tokenizer()
        log.warning("%s: streaming from %s without a tokenizer file (tokenizer_path %s does not exist): checkpoints "
                    "will hold no tokenizer and cannot generate; set tokenizer_path to the tokenizer.json of the "
                    "cache the chunks were written from", self.dataset_name, self.streaming_dir, self.tokenizer_path)
        return None

    def describe_split(self, split: str) -> str:
        return f"{self.dataset_name}: the {split} split ({self._split_dir()})"


def train_texts(records: Sequence[dict]) -> list[str]:
    """Transcripts of the training utterances among ``records`` (what the tokenizer is trained on)."""
    return [r["utterance"][2] for r in records if r["split"] == "train" and r["utterance"][2]]


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
