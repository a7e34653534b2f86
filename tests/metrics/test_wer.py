"""WER: equal to jiwer on Whisper-normalised text; recogniser plumbing (PocketSphinx, Whisper)."""

from __future__ import annotations

import json
from pathlib import Path

import jiwer
import numpy as np
import pytest
import torch

from metrics.asr import PocketSphinxRecognizer, WhisperRecognizer
from metrics.errors import MetricInputError
from metrics.functional.wer import (
    normalize_transcript,
    normalized_word_error_rate,
    normalized_word_error_rate_per_utterance,
)
from metrics.wer import NormalizedWER
from tests.metrics.tester import check_metric_contract

REFS = [
    "Sometimes, the best thing you can do is to let go.",
    "I've seen it over and over, and people will say: well, we're doing this!",
    "Be the change you want to see in the world, brothers and sisters.",
    "There were 20 unanswered questions in the district court.",
]
HYPS = [
    "sometimes the best team you can do is to let",
    "i have seen it over and over and people will say well we are doing this",
    "be the change you want to see in the world brother and sister",
    "there were twenty unanswered question in a district court case",
]


def test_normaliser_makes_formatting_free() -> None:
    assert float(normalized_word_error_rate(["Hello, World!"], ["hello world"])) == 0.0
    assert jiwer.wer("Hello world.", "hello world") == 1.0  # why we normalise at all
    assert normalize_transcript("I'VE seen Mr. Smith") == "i have seen mister smith"


def test_corpus_and_per_utterance_equal_jiwer_on_normalised_text() -> None:
    refs = [normalize_transcript(t) for t in REFS]
    hyps = [normalize_transcript(t) for t in HYPS]
    corpus = normalized_word_error_rate(HYPS, REFS)
    per_utt = normalized_word_error_rate_per_utterance(HYPS, REFS)
    assert float(corpus) == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12)
    np.testing.assert_allclose(per_utt.numpy(), [jiwer.wer(r, h) for r, h in zip(refs, hyps)], atol=1e-12)
    # pooled and mean-of-utterances differ here, so the docs must say which one is reported
    assert abs(float(corpus) - float(per_utt.mean())) > 1e-3
    assert 0.0 < float(corpus) < 1.0


def test_metric_contract_reports_corpus_wer() -> None:
    batches = [(HYPS[:2], REFS[:2]), (HYPS[2:3], REFS[2:3]), (HYPS[3:], REFS[3:])]
    refs = [normalize_transcript(t) for t in REFS]
    expected = jiwer.wer(refs, [normalize_transcript(t) for t in HYPS])
    check_metric_contract(NormalizedWER, batches, atol=1e-12, expected=expected)
    metric = NormalizedWER()
    metric.update(HYPS, REFS)
    np.testing.assert_allclose(
        metric.per_clip().numpy(), normalized_word_error_rate_per_utterance(HYPS, REFS).numpy(), atol=1e-12
    )


def test_empty_texts() -> None:
    # empty hypothesis: every reference word is deleted
    assert float(normalized_word_error_rate([""], ["let it go"])) == 1.0
    metric = NormalizedWER()
    with pytest.warns(UserWarning, match="utterance 1 excluded: reference 'uh, um!' is empty"):
        metric.update(["let it go", "anything"], ["let it go", "uh, um!"])
    assert int(metric.num_excluded) == 1 and float(metric.compute()) == 0.0
    with pytest.raises(MetricInputError, match="got 2 hypotheses but 1 references"):
        normalized_word_error_rate(["a", "b"], ["a"])
    with pytest.raises(MetricInputError, match="preds must be a list of strings"):
        normalized_word_error_rate("a b", ["a b"])


def test_pocketsphinx_plumbing_on_silence_and_rates() -> None:
    recognizer = PocketSphinxRecognizer()
    assert recognizer(torch.zeros(2, 8_000)) == ["", ""]
    with pytest.raises(MetricInputError, match="sample_rate=44100"):
        PocketSphinxRecognizer(sample_rate=44_100)(torch.zeros(8_000))
    with pytest.raises(MetricInputError, match="clip 0: audio contains 1 non-finite"):
        recognizer(torch.tensor([0.1, float("nan"), 0.2]))


def _tiny_whisper(folder: Path):
    """A random 1-layer Whisper and a byte-level tokenizer, saved like a hub checkpoint."""
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}  # 256 byte tokens
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    eot = "<|endoftext|>"
    tokenizer = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token=eot, bos_token=eot, eos_token=eot)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|startoftranscript|>"]})
    eot_id, sot_id = tokenizer.convert_tokens_to_ids([eot, "<|startoftranscript|>"])
    config = WhisperConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16,
        num_mel_bins=80, max_source_positions=1500, max_target_positions=32,
        pad_token_id=eot_id, bos_token_id=eot_id, eos_token_id=eot_id, decoder_start_token_id=sot_id,
    )
    model = WhisperForConditionalGeneration(config).eval()
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer)
    model.save_pretrained(folder / "tiny")
    processor.save_pretrained(folder / "tiny")
    return model, processor


def test_whisper_recognizer_plumbing_with_tiny_random_model(tmp_path: Path) -> None:
    model, processor = _tiny_whisper(tmp_path)
    audio = (0.3 * torch.randn(3, 8_000)).clamp(-1, 1)  # (B, S) at 16 kHz
    recognizer = WhisperRecognizer(str(tmp_path / "tiny"), batch_size=2, max_new_tokens=4)
    texts = recognizer(audio)
    # the same features and greedy decoding by hand, in one batch
    features = processor.feature_extractor(list(audio.numpy()), sampling_rate=16_000, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(features.input_features, max_new_tokens=4, do_sample=False, num_beams=1)
    assert texts == [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
    assert WhisperRecognizer(model, processor, max_new_tokens=4)(audio[0]) == texts[:1]


def test_whisper_recognizer_missing_model_says_where(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cannot load Whisper from"):
        WhisperRecognizer(str(tmp_path / "no_such_model"))
