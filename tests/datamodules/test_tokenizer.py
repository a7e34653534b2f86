"""Byte-level BPE tokenizer: round trip, special ids, BOS/EOS, save/load, errors."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from datamodules.tokenizer import SPECIAL_TOKENS, load_tokenizer, train_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A quiet river runs past the old stone bridge.",
    "She sells sea shells by the sea shore, every morning.",
] * 4


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Tokenizer:
    return train_tokenizer(TEXTS, vocab_size=300, path=tmp_path_factory.mktemp("tok") / "tokenizer.json")


def test_special_ids_and_bos_eos(tokenizer: Tokenizer) -> None:
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    ids = tokenizer.encode("the sea").ids
    assert ids[0] == 1 and ids[-1] == 2 and 0 not in ids and 3 not in ids


@pytest.mark.parametrize("text", ["The quick brown fox.", "Unseen wörds, digits 42 & emoji ✓!", "  two  spaces "])
def test_round_trip(tokenizer: Tokenizer, text: str) -> None:
    encoding = tokenizer.encode(text)
    assert tokenizer.token_to_id("<unk>") not in encoding.ids  # byte level: every character is known
    assert tokenizer.decode(encoding.ids) == text


def test_merges_learned_and_vocab_bounded(tokenizer: Tokenizer) -> None:
    assert 260 < tokenizer.get_vocab_size() <= 300
    # a frequent training word is one token plus BOS/EOS, not one per byte
    assert len(tokenizer.encode("the").ids) < len("the") + 2


def test_batch_pads_with_zero(tokenizer: Tokenizer) -> None:
    short, long = tokenizer.encode_batch(["sea", "the quick brown fox"])
    assert len(short.ids) == len(long.ids)
    assert short.ids[-1] == 0 and short.attention_mask[-1] == 0


def test_saved_and_loaded(tokenizer: Tokenizer, tmp_path) -> None:
    path = tmp_path / "t.json"
    train_tokenizer(TEXTS, vocab_size=300, path=path)
    loaded = load_tokenizer(path)
    assert loaded.encode("the old stone bridge").ids == tokenizer.encode("the old stone bridge").ids
    assert Tokenizer.from_str(loaded.to_str()).get_vocab_size() == tokenizer.get_vocab_size()


def test_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="vocab_size must be >= 260"):
        train_tokenizer(TEXTS, vocab_size=100)
    with pytest.raises(ValueError, match="non-empty"):
        train_tokenizer(["", "  "], vocab_size=300)
    with pytest.raises(FileNotFoundError, match="no tokenizer at"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_tokenizer(tmp_path / "bad.json")
