"""Byte-level BPE text tokenizer (the paper's BPE text encoder input, XTTS-style).

Built on HF ``tokenizers``: a BPE model over bytes (GPT-2's byte-level pre-tokenizer, so any
text maps to known tokens and ``<unk>`` never appears), special tokens ``<pad>`` = 0, ``<s>`` = 1,
``</s>`` = 2, ``<unk>`` = 3, and a post-processor that wraps every encoding in ``<s> ... </s>``.
The result is a plain :class:`tokenizers.Tokenizer`, so checkpoints can store it as JSON.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Union

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from common.files import AtomicFile

log = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
"""In id order: ``<pad>`` = 0, ``<s>`` = 1, ``</s>`` = 2, ``<unk>`` = 3."""
MIN_VOCAB_SIZE: int = len(SPECIAL_TOKENS) + 256
"""Special tokens plus the 256 byte symbols."""


def train_tokenizer(texts: Iterable[str], vocab_size: int, path: Union[str, os.PathLike, None] = None) -> Tokenizer:
    """Train a byte-level BPE tokenizer on ``texts`` (and save it to ``path`` when given).

    Args:
        texts: training sentences (e.g. the training-split transcripts).
        vocab_size: upper bound on the vocabulary (at least 260); the result may be smaller
            when the texts offer fewer merges.
        path: ``tokenizer.json`` to write (atomically), or ``None``.

    Returns:
        The trained :class:`tokenizers.Tokenizer`; ``encode(text).ids`` starts with 1 and ends with 2.

    Raises:
        ValueError: ``vocab_size`` below 260 or no text.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be >= {MIN_VOCAB_SIZE} (specials + 256 bytes), got {vocab_size}")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("train_tokenizer needs at least one non-empty text")
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        special_tokens=[(BOS, tokenizer.token_to_id(BOS)), (EOS, tokenizer.token_to_id(EOS))],
    )
    tokenizer.enable_padding(pad_id=0, pad_token=PAD)
    _check_special_ids(tokenizer, "trained tokenizer")
    if path is not None:
        save_tokenizer(tokenizer, path)
    log.info("trained BPE tokenizer: %d tokens from %d texts", tokenizer.get_vocab_size(), len(texts))
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, path: Union[str, os.PathLike]) -> Path:
    """Write ``tokenizer`` as JSON to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with AtomicFile(path) as tmp:
        tokenizer.save(str(tmp))
    return path


def load_tokenizer(path: Union[str, os.PathLike]) -> Tokenizer:
    """Load a tokenizer written by :func:`train_tokenizer`.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a tokenizer with ``<pad>`` = 0, ``<s>`` = 1, ``</s>`` = 2, ``<unk>`` = 3.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer at {path}: train one with train_tokenizer(texts, vocab_size, path)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception on malformed JSON
        raise ValueError(f"{path} is not a tokenizers JSON file: {err}") from err
    _check_special_ids(tokenizer, str(path))
    return tokenizer


def _check_special_ids(tokenizer: Tokenizer, label: str) -> None:
    ids = [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS]
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise ValueError(f"{label}: special tokens {SPECIAL_TOKENS} must have ids 0-3, got {ids}")
