"""LitData round trip of every dataset, the streaming DataModule mode, and per-rank shards."""

from __future__ import annotations

import pytest
import torch

from datamodules.batch import collate, validate_batch
from datamodules.samples import UtteranceDataset
from datamodules.streaming import StreamingClipDataset, optimize_splits
from datamodules.tokenizer import load_tokenizer


@pytest.mark.parametrize("name", [pytest.param("voxceleb", marks=pytest.mark.slow), "fakeavceleb",
                                  pytest.param("hdtf", marks=pytest.mark.slow),
                                  pytest.param("celebvhq", marks=pytest.mark.slow)])
def test_round_trip_two_clips(prepared, tmp_path, name):
    module = prepared(name, english_only=False)
    records = [{**r, "split": "train"} for r in module.streaming_records()[:2]]
    assert optimize_splits(records, prepared.cache, str(tmp_path / "chunks"), num_workers=1) == {"train": 2}
    streamed = StreamingClipDataset(str(tmp_path / "chunks" / "train"), num_frames=None, motion_frames=0)
    cached = UtteranceDataset(records, prepared.cache, [r["text_ids"] for r in records], None, 0, False)
    assert len(streamed) == 2
    by_key = {streamed[i]["key"]: streamed[i] for i in range(2)}
    for i in range(2):
        want, got = cached[i], by_key[records[i]["key"]]
        torch.testing.assert_close(got["wav"], want["wav"], atol=1 / 32767, rtol=0)  # int16 storage
        torch.testing.assert_close(got["video"], want["video"])  # the same mp4 bytes, decoded alike
        assert torch.equal(got["text_ids"], want["text_ids"]) and got["speaker"] == want["speaker"]
        validate_batch(collate([got]))  # whole utterances differ in length: one per batch


def test_datamodule_streaming_mode_and_rank_shards(prepared, tmp_path, monkeypatch):
    module = prepared("fakeavceleb", english_only=False)
    records = [{**r, "split": "train"} for r in module.streaming_records()]
    optimize_splits(records, prepared.cache, str(tmp_path / "chunks"), num_workers=1, chunk_size=1)
    streaming = prepared("fakeavceleb", english_only=False, streaming_dir=str(tmp_path / "chunks"), num_frames=4)
    streaming.setup("fit")
    assert streaming.tokenizer.to_str() == load_tokenizer(module.tokenizer_path).to_str()  # the cache's, the chunks' ids
    batch = next(iter(streaming.train_dataloader()))
    validate_batch(batch)
    assert batch["video"].shape[1] == 6  # 2 motion + 4 frames
    with pytest.raises(RuntimeError, match="val"):
        streaming.val_dataloader()  # no val items were written
    shards = []
    for rank in range(2):  # what each DDP rank would read, without spawning processes
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("GLOBAL_RANK", str(rank))
        dataset = StreamingClipDataset(str(tmp_path / "chunks" / "train"), num_frames=2, motion_frames=0)
        shards.append({sample["key"] for sample in dataset})
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    assert len(shards[0] | shards[1]) >= len(records) - 1  # drop_last under DDP may leave one out


def test_reading_whole_utterances_leaves_the_dataset_unchanged(prepared):
    module = prepared("fakeavceleb", english_only=False)
    records = module.utterance_records()[:2]
    dataset = UtteranceDataset(records, prepared.cache, [[1, 2]] * len(records), None, 0, False)
    before = vars(dataset).copy()
    frames = [dataset[i]["video"].shape[0] for i in range(len(records))]
    assert vars(dataset) == before  # a sample is computed, never stored (DataLoader workers share nothing back)
    assert [dataset[i]["video"].shape[0] for i in reversed(range(len(records)))] == frames[::-1]
