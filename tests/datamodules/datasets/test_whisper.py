"""Whisper plumbing on a tiny random model and a processor built offline (no download)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

SPECIAL = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|fr|>", "<|translate|>", "<|transcribe|>",
           "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
TIMES = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A 1-layer Whisper with a byte-level vocabulary, saved to a local folder like a real checkpoint."""
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer)
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {t: i for i, t in enumerate(list(bytes_to_unicode().values()) + SPECIAL + TIMES)}
    # timestamps follow the last special token, as in the released vocabularies
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[], additional_special_tokens=SPECIAL)
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer)
    eot, sot = vocab["<|endoftext|>"], vocab["<|startoftranscript|>"]
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_target_positions=64,
        decoder_start_token_id=sot, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot))
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot, bos_token_id=eot, is_multilingual=True,
        lang_to_id={"<|en|>": vocab["<|en|>"], "<|fr|>": vocab["<|fr|>"]},
        task_to_id={"transcribe": vocab["<|transcribe|>"], "translate": vocab["<|translate|>"]},
        no_timestamps_token_id=vocab["<|notimestamps|>"], max_initial_timestamp_index=50, max_length=64)
    folder = tmp_path_factory.mktemp("tiny-whisper")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, vocab


def test_language_id_matches_transformers(tiny_whisper):
    from datamodules.transcribe import WhisperTranscriber

    folder, _ = tiny_whisper
    transcriber = WhisperTranscriber(str(folder), device="cpu", batch_size=2, max_new_tokens=8)  # the real loader
    rng = np.random.default_rng(0)
    wavs = [rng.standard_normal(32000).astype(np.float32) * 0.1, np.zeros(48000, np.float32), rng.random(20000).astype(np.float32)]
    results = transcriber(wavs)
    assert len(results) == 3 and all(isinstance(r.text, str) for r in results)
    features = transcriber._features(wavs)
    reference = transcriber.model.detect_language(features)  # transformers' own language ID (token ids)
    id_to_code = {v: k.strip("<|>") for k, v in transcriber.model.generation_config.lang_to_id.items()}
    assert [r.language for r in results] == [id_to_code[int(i)] for i in reference]
    assert all(0.5 <= r.language_prob <= 1.0 for r in results)  # the argmax of two languages


def test_timestamps_become_segments(tiny_whisper):
    from datamodules.transcribe import WhisperTranscriber

    folder, vocab = tiny_whisper
    transcriber = WhisperTranscriber(str(folder), device="cpu")
    ids = [vocab[t] for t in ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|0.00|>")]
    ids += [vocab[c] for c in "hi"] + [vocab["<|1.00|>"], vocab["<|1.00|>"]] + [vocab[c] for c in "yo"]
    ids += [vocab["<|3.00|>"], vocab["<|endoftext|>"]]
    text, segments = transcriber.decode(torch.tensor(ids), duration=2.5)
    assert text.replace(" ", "") == "hiyo"
    assert segments == [{"start": 0.0, "end": 1.0, "text": "hi"}, {"start": 1.0, "end": 2.5, "text": "yo"}]


def test_missing_model_is_a_clear_error(tmp_path):
    from datamodules.transcribe import WhisperTranscriber

    with pytest.raises(OSError, match="cannot load Whisper"):
        WhisperTranscriber(str(tmp_path / "nowhere"))
