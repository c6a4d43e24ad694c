"""Post words + context -> subword ids for the encoder, and batches of them -> padded tensors.

The input is the pair `(post, context)`; the tokenizer adds the model's own special tokens
(`[CLS] post [SEP] context [SEP]` for BERT, `<s> post </s></s> context </s>` for XLM-R).
The context (knowledge, caption...) is cut first when the pair is too long; the post is never
cut: when it alone does not fit `max_length`, the context is dropped and the post is encoded up
to the model's own limit. Tags are predicted on each post word's first subword only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import StageInputError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class EncodedInput:
    input_ids: list[int]
    token_type_ids: list[int] | None
    word_starts: list[int]  # position of each post word's first subword in input_ids
    context_words_kept: int
    context_words_total: int


class InputEncoder:
    def __init__(self, tokenizer: Any, max_length: int, context_separator: str | None = None):
        self.tokenizer = tokenizer
        self.max_length = max_length
        # Joins several context fields; the model's separator token marks the boundary.
        self.context_separator = context_separator or tokenizer.sep_token or "|"
        model_limit = getattr(tokenizer, "model_max_length", None) or 512
        self.model_limit = model_limit if model_limit < 100_000 else 512  # "unbounded" sentinel
        self.uses_token_types = "token_type_ids" in tokenizer.model_input_names

    def context_words(self, parts: Sequence[str | None]) -> list[str]:
        words: list[str] = []
        for part in parts:
            if part and part.strip():
                if words:
                    words.append(self.context_separator)
                words.extend(part.split())
        return words

    def _printable(self, words: Sequence[str]) -> tuple[list[str], int]:
        """Words the tokenizer maps to no subword at all (e.g. a lone variation selector) become
        the unknown token, so that every post word has a position to tag; also the subword count."""
        pieces = self.tokenizer(list(words), add_special_tokens=False)["input_ids"]
        return [w if ids else self.tokenizer.unk_token for w, ids in zip(words, pieces)], sum(
            max(1, len(ids)) for ids in pieces
        )

    def encode(self, words: Sequence[str], context: Sequence[str] = ()) -> EncodedInput:
        if not words:
            raise StageInputError("the post has no tokens to tag")
        words, post_pieces = self._printable(words)
        context = list(context)
        budget = self.max_length
        if context and post_pieces + self.tokenizer.num_special_tokens_to_add(pair=True) >= budget:
            context = []  # no room left for any context: keep the whole post, drop the context
        if not context:
            budget = max(budget, post_pieces + self.tokenizer.num_special_tokens_to_add(pair=False))
            if budget > self.model_limit:
                raise StageInputError(
                    f"the post has {post_pieces} subwords, more than the encoder's limit of {self.model_limit}"
                )
            enc = self.tokenizer(words, is_split_into_words=True, truncation=False)
        else:
            try:
                enc = self.tokenizer(
                    words, context, is_split_into_words=True, truncation="only_second", max_length=budget
                )
            except Exception:  # noqa: BLE001 - the post's in-context pieces outgrew the estimate
                return self.encode(words, ())
        sequence_ids = enc.sequence_ids()
        word_ids = enc.word_ids()
        starts: list[int] = []
        kept_context: set[int] = set()
        for position, (seq, word) in enumerate(zip(sequence_ids, word_ids)):
            if seq == 0 and word is not None and word == len(starts):
                starts.append(position)
            elif seq == 1 and word is not None:
                kept_context.add(word)
        if len(starts) != len(words):  # cannot happen after `_printable`; guard the invariant
            raise StageInputError(f"only {len(starts)} of {len(words)} post words survived tokenization")
        return EncodedInput(
            input_ids=list(enc["input_ids"]),
            token_type_ids=list(enc["token_type_ids"]) if self.uses_token_types and "token_type_ids" in enc else None,
            word_starts=starts,
            context_words_kept=len(kept_context),
            context_words_total=len(context),
        )


def collate(
    items: Sequence[EncodedInput], pad_id: int, tags: dict[str, Sequence[Sequence[int]]] | None = None
) -> dict[str, "torch.Tensor"]:
    """Right-padded tensors; `word_mask` marks real post words in the `[batch, words]` layout.
    `tags` maps a head name to each item's tag ids; they come back as `tags_<head>`."""
    import torch

    n = len(items)
    seq_len = max(len(it.input_ids) for it in items)
    n_words = max(len(it.word_starts) for it in items)
    input_ids = torch.full((n, seq_len), pad_id, dtype=torch.long)
    attention = torch.zeros((n, seq_len), dtype=torch.long)
    word_index = torch.zeros((n, n_words), dtype=torch.long)
    word_mask = torch.zeros((n, n_words), dtype=torch.bool)
    batch: dict[str, torch.Tensor] = {}
    types = None
    if all(it.token_type_ids is not None for it in items):
        types = torch.zeros((n, seq_len), dtype=torch.long)
    for i, it in enumerate(items):
        length = len(it.input_ids)
        input_ids[i, :length] = torch.tensor(it.input_ids)
        attention[i, :length] = 1
        if types is not None:
            types[i, :length] = torch.tensor(it.token_type_ids)
        word_index[i, : len(it.word_starts)] = torch.tensor(it.word_starts)
        word_mask[i, : len(it.word_starts)] = True
    batch.update(input_ids=input_ids, attention_mask=attention, word_index=word_index, word_mask=word_mask)
    if types is not None:
        batch["token_type_ids"] = types
    for head, rows in (tags or {}).items():
        padded = torch.zeros((n, n_words), dtype=torch.long)
        for i, row in enumerate(rows):
            padded[i, : len(row)] = torch.tensor(row)
        batch[f"tags_{head}"] = padded
    return batch
