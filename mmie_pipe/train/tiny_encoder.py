"""A tiny random-weight BERT with a WordPiece vocabulary built from given texts, saved as a local
encoder directory. For smoke tests and CI, where no pretrained weights may be downloaded."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def wordpiece_vocab(texts: Iterable[str], max_words: int = 2000) -> list[str]:
    """Special tokens, every character (alone and as `##` continuation, so any word can be
    spelled out) and the most frequent lower-cased alphanumeric words."""
    from collections import Counter

    chars: set[str] = set()
    words: Counter[str] = Counter()
    for text in texts:
        lowered = text.lower()
        chars.update(c for c in lowered if not c.isspace())
        words.update(w for w in lowered.split() if w.isalnum())
    ordered_chars = sorted(chars)
    vocab = list(SPECIAL_TOKENS) + ordered_chars + [f"##{c}" for c in ordered_chars]
    known = set(vocab)
    vocab += [w for w, _ in words.most_common(max_words) if w not in known]
    return vocab


def save_tiny_encoder(
    directory: str | os.PathLike[str],
    texts: Iterable[str],
    *,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 2,
    seed: int = 0,
    max_positions: int = 256,
) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(wordpiece_vocab(texts)) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True, model_max_length=max_positions)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=max_positions,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
