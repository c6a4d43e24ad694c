"""BIO tags -> entity spans, under two explicitly named conventions.

`strict` (the default) is seqeval's `mode="strict", scheme=IOB2`: only `B-X` opens an entity and
`I-X` extends it while the type stays the same; an `I-` that does not continue an entity of its
own type (a "stray" `I-`) belongs to no entity. On Twitter-2015 test this gives 5072 gold entities.

`conlleval` is conlleval's and seqeval's default rule: a stray `I-X` opens a new entity. On
Twitter-2015 test this gives 5207 gold entities, the count behind most published numbers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    from ..records import Entity

BioRule = Literal["strict", "conlleval"]
BIO_RULES: tuple[str, ...] = ("strict", "conlleval")

_TAG = re.compile(r"(?:O|[BI]-\S+)\Z")


class TokenSpan(NamedTuple):
    """Entity over tokens `[start, end)`."""

    start: int
    end: int
    type: str


def is_bio_tag(tag: str) -> bool:
    return bool(_TAG.match(tag))


def bio_to_spans(tags: Sequence[str], rule: BioRule = "strict") -> list[TokenSpan]:
    """Token spans of the entities in one sentence's IOB2 tags.

    Raises ValueError naming the position of a tag that is not `O`, `B-X` or `I-X`.
    """
    if rule not in BIO_RULES:
        raise ValueError(f"unknown BIO rule {rule!r}; expected one of {BIO_RULES}")
    spans: list[TokenSpan] = []
    start: int | None = None
    kind = ""
    for i, tag in enumerate(tags):
        if not _TAG.match(tag):
            raise ValueError(f"tag {i} is {tag!r}, not O, B-TYPE or I-TYPE")
        prefix, label = tag[0], tag[2:]
        if prefix == "I" and start is not None and label == kind:
            continue
        if start is not None:
            spans.append(TokenSpan(start, i, kind))
            start = None
        if prefix == "B" or (prefix == "I" and rule == "conlleval"):
            start, kind = i, label
    if start is not None:
        spans.append(TokenSpan(start, len(tags), kind))
    return spans


def token_char_offsets(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Character `[start, end)` of each token in `" ".join(tokens)`."""
    offsets = []
    position = 0
    for token in tokens:
        offsets.append((position, position + len(token)))
        position += len(token) + 1
    return offsets


def bio_to_entities(tokens: Sequence[str], tags: Sequence[str], rule: BioRule = "strict") -> list["Entity"]:
    """`Entity` objects with character offsets into `" ".join(tokens)` (the toolkit's `text`)."""
    from ..records import Entity

    if len(tokens) != len(tags):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
    offsets = token_char_offsets(tokens)
    return [
        Entity(
            text=" ".join(tokens[span.start : span.end]),
            start=offsets[span.start][0],
            end=offsets[span.end - 1][1],
            type=span.type,
        )
        for span in bio_to_spans(tags, rule)
    ]
