"""Tag schemes (BIO, BIOES): the tag inventory, spans <-> tags, and which tag transitions are legal.

The CRF is only allowed legal transitions (see `allowed_transitions`), so every decoded sequence
is a well-formed BIO/BIOES sequence and decoding back to spans never has to guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..metrics.bio import TokenSpan, bio_to_spans

Scheme = Literal["BIO", "BIOES"]
SCHEMES: tuple[str, ...] = ("BIO", "BIOES")
OUTSIDE = "O"


@dataclass(frozen=True)
class TagSet:
    """The tags of one scheme over one list of entity types, in a fixed order (`O` first)."""

    scheme: Scheme
    types: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown tag scheme {self.scheme!r}; expected one of {SCHEMES}")
        if len(set(self.types)) != len(self.types) or not self.types:
            raise ValueError(f"entity types must be distinct and non-empty, got {self.types}")

    @property
    def prefixes(self) -> str:
        return "BI" if self.scheme == "BIO" else "BIES"

    @property
    def tags(self) -> list[str]:
        return [OUTSIDE] + [f"{p}-{t}" for t in self.types for p in self.prefixes]

    @property
    def index(self) -> dict[str, int]:
        return {tag: i for i, tag in enumerate(self.tags)}

    def __len__(self) -> int:
        return 1 + len(self.types) * len(self.prefixes)

    # -- spans <-> tags ---------------------------------------------------------------------------
    def encode(self, n_tokens: int, spans: Sequence[TokenSpan]) -> list[str]:
        """Tags for `n_tokens` tokens holding non-overlapping `spans` (types must be known)."""
        tags = [OUTSIDE] * n_tokens
        for span in spans:
            if span.type not in self.types:
                raise ValueError(f"entity type {span.type!r} is not one of {self.types}")
            if any(tags[i] != OUTSIDE for i in range(span.start, span.end)):
                raise ValueError(f"span {span} overlaps another entity")
            for i in range(span.start, span.end):
                tags[i] = f"{self.span_prefix(i - span.start, span.end - span.start)}-{span.type}"
        return tags

    def span_prefix(self, position: int, length: int) -> str:
        """The prefix of the token at `position` in an entity of `length` tokens."""
        if self.scheme == "BIO":
            return "B" if position == 0 else "I"
        if length == 1:
            return "S"
        return "B" if position == 0 else "E" if position == length - 1 else "I"

    def decode(self, tags: Sequence[str]) -> list[TokenSpan]:
        """Entity spans of a tag sequence (BIOES is read as BIO, then the strict IOB2 rule applies)."""
        as_bio = [t if t == OUTSIDE else ("B" if t[0] == "S" else "I" if t[0] == "E" else t[0]) + t[1:] for t in tags]
        return bio_to_spans(as_bio, "strict")

    # -- CRF constraints --------------------------------------------------------------------------
    def allowed_transitions(self) -> tuple[list[list[bool]], list[bool], list[bool]]:
        """`(allowed[from][to], allowed_start[to], allowed_end[from])` for this scheme."""
        tags = self.tags
        inside = {"I", "E"} if self.scheme == "BIOES" else {"I"}
        # Tags after which an entity is still open (the next tag must continue it in BIOES).
        opening = {"B", "I"}

        def parts(tag: str) -> tuple[str, str | None]:
            return (OUTSIDE, None) if tag == OUTSIDE else (tag[0], tag[2:])

        def ok(prev: str, nxt: str) -> bool:
            p_prefix, p_type = parts(prev)
            n_prefix, n_type = parts(nxt)
            if n_prefix in inside:
                return p_prefix in opening and p_type == n_type
            # O, B or S may follow anything in BIO; in BIOES only a closed entity (or O).
            return self.scheme == "BIO" or p_prefix not in opening

        allowed = [[ok(a, b) for b in tags] for a in tags]
        start = [parts(t)[0] not in inside for t in tags]
        end = [self.scheme == "BIO" or parts(t)[0] not in opening for t in tags]
        return allowed, start, end

    def is_valid(self, tags: Sequence[str]) -> bool:
        allowed, start, end = self.allowed_transitions()
        index = self.index
        ids = [index[t] for t in tags]
        if not ids:
            return True
        return start[ids[0]] and end[ids[-1]] and all(allowed[a][b] for a, b in zip(ids, ids[1:]))
