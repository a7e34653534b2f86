"""Transcripts: pocketsphinx on the real clips, the sidecar, utterance cutting, the English filter."""

from __future__ import annotations

import json

import pytest

from datamodules.transcribe import (PocketSphinxTranscriber, Transcript, is_english, load_transcripts,
                                    transcribe_cache, utterances)


def test_pocketsphinx_real_transcript(shared_data, shared_transcripts):
    import jiwer

    from datamodules.media import read_audio

    wav = read_audio(shared_data / "clips" / "man.mp4")
    result = PocketSphinxTranscriber()([wav])[0]
    truth = shared_transcripts["man.mp4"]["text"].lower()
    assert jiwer.wer(truth, result.text) < 0.3
    assert result.language == "en" and result.segments
    starts = [s["start"] for s in result.segments]
    assert starts == sorted(starts) and result.segments[-1]["end"] <= len(wav) / 16000 + 0.05
    cuts = utterances(len(wav) / 16000, {"text": result.text, "segments": result.segments}, max_seconds=4.0)
    assert all(end - start <= 4.0 + 1e-6 for start, end, _ in cuts)
    assert " ".join(t for _, _, t in cuts).split() == result.text.split()  # cut at segments, no word lost


def test_utterances_without_segments():
    assert utterances(25.0, None) == [(0.0, 25.0 / 3, ""), (25.0 / 3, 50.0 / 3, ""), (50.0 / 3, 25.0, "")]
    assert utterances(8.0, {"text": "hello"}) == [(0.0, 8.0, "hello")]


@pytest.mark.parametrize("metadata, transcript, keep", [
    ("en", None, True), ("de", {"language": "en", "language_prob": 0.99}, False),
    (None, {"language": "en", "language_prob": 0.95}, True), (None, {"language": "en", "language_prob": 0.5}, False),
    (None, {"language": "fr", "language_prob": 0.99}, False), (None, None, False)])
def test_english_filter(metadata, transcript, keep):
    assert is_english(metadata, transcript, threshold=0.8)[0] is keep


class StubLID:
    """A backend whose language depends on the clip (stands in for Whisper's language ID)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, wavs):
        self.calls += len(wavs)
        return [Transcript("hello there", "en" if len(w) % 2 == 0 else "fr", 0.9,
                           [{"start": 0.0, "end": len(w) / 16000, "text": "hello there"}]) for w in wavs]


def test_sidecar_drives_the_datamodule(prepared, tmp_path):
    import shutil

    prepared("fakeavceleb")  # make sure the clips are cached
    cache = tmp_path / "cache"
    shutil.copytree(prepared.cache, cache)
    (cache / "transcripts.jsonl").unlink(missing_ok=True)
    stub = StubLID()
    records = [r for r in json.loads("[" + ",".join((cache / "manifest.jsonl").read_text().split("\n")[:-1]) + "]")
               if r["dataset"] == "fakeavceleb"]
    assert transcribe_cache(cache, stub, records, batch_size=2, progress=False) == len(records)
    assert transcribe_cache(cache, stub, records, progress=False) == 0 and stub.calls == len(records)  # resumable
    sidecar = load_transcripts(cache)
    english = {k for (d, k), r in sidecar.items() if d == "fakeavceleb" and r["language"] == "en"}
    module = prepared("fakeavceleb", cache_dir=str(cache), english_only=True)
    module.setup("fit")
    kept = {r["key"] for d in module.datasets.values() for r in d.records}
    assert kept == english and len(module.excluded) == len(records) - len(english)
    texts = {r["utterance"][2] for d in module.datasets.values() for r in d.records}
    assert texts <= {"hello there"}
