"""Post tokens with their character offsets, and gold entities mapped onto token spans.

The tagger works on tokens and reports character offsets into `record.text`, so both directions
go through one table of `(start, end)` per token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import StageInputError
from ..metrics.bio import TokenSpan
from ..records import Entity, Record

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class PostTokens:
    words: list[str]
    offsets: list[tuple[int, int]]  # [start, end) of each word in the record's text


def post_tokens(record: Record) -> PostTokens:
    """`record.tokens` located in `record.text` (in order), else the text's whitespace-separated words."""
    text = record.text
    if not record.tokens:
        matches = list(_WORD.finditer(text))
        return PostTokens([m.group() for m in matches], [m.span() for m in matches])
    offsets = []
    position = 0
    for i, token in enumerate(record.tokens):
        start = text.find(token, position)
        if start < 0 or text[position:start].strip():
            raise StageInputError(f"record {record.id}: token {i} ({token!r}) is not found in text after offset {position}")
        offsets.append((start, start + len(token)))
        position = start + len(token)
    return PostTokens(list(record.tokens), offsets)


@dataclass(frozen=True)
class AlignedSpans:
    spans: list[TokenSpan]
    fine_types: list[str | None]
    snapped: int  # entities whose boundary fell inside a token and was widened to whole tokens
    dropped: int  # entities that overlap an earlier one (a tag sequence holds one entity per token)


def entity_token_spans(
    entities: Sequence[Entity], offsets: Sequence[tuple[int, int]], *, type_field: str = "type"
) -> AlignedSpans:
    """Token spans covering each entity's characters, in text order."""
    spans: list[TokenSpan] = []
    fine: list[str | None] = []
    snapped = dropped = 0
    taken: set[int] = set()
    for entity in sorted(entities, key=lambda e: (e.start, e.end)):
        covered = [i for i, (s, e) in enumerate(offsets) if s < entity.end and e > entity.start]
        label = getattr(entity, type_field)
        if not covered or label is None:
            dropped += 1
            continue
        first, last = covered[0], covered[-1]
        if offsets[first][0] != entity.start or offsets[last][1] != entity.end:
            snapped += 1
        if taken & set(range(first, last + 1)):
            dropped += 1
            continue
        taken |= set(range(first, last + 1))
        spans.append(TokenSpan(first, last + 1, label))
        fine.append(entity.fine_type)
    return AlignedSpans(spans, fine, snapped, dropped)


def span_entity(text: str, offsets: Sequence[tuple[int, int]], span: TokenSpan) -> Entity:
    """The entity a token span denotes, with character offsets into `text`."""
    start, end = offsets[span.start][0], offsets[span.end - 1][1]
    return Entity(text=text[start:end], start=start, end=end, type=span.type)
