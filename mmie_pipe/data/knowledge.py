"""PGIM "auxiliary refined knowledge" zips, aligned to tweets by their tokens.

Each member (`train.txt`, `valid.txt`, `test.txt`) holds CRLF CoNLL blocks: the tweet's
`token<TAB>tag` lines, a `<EOS><TAB>X` line, then the knowledge tokens tagged `X`. There are no
IMGID lines, and the 2015 zip lacks the last tweet of each split, so aligning by position would
shift every later tweet; we align by the token sequence instead (repeats are consumed in order).
"""

from __future__ import annotations

import os
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import DataFormatError
from .lines import numbered_zip_lines

EOS = "<EOS>"


@dataclass(frozen=True)
class PgimKnowledge:
    tokens: tuple[str, ...]
    knowledge: str
    line: int


def iter_pgim_knowledge(archive: str | os.PathLike[str], member: str) -> Iterator[PgimKnowledge]:
    """Stream `(tweet tokens, knowledge text)` from one member of a PGIM zip."""
    label = f"{os.fspath(archive)}!{member}"
    tweet: list[str] = []
    knowledge: list[str] | None = None
    first = 0

    def finished() -> PgimKnowledge:
        if knowledge is None:
            raise DataFormatError(label, first, f"block has no {EOS} line")
        return PgimKnowledge(tuple(tweet), " ".join(knowledge), first)

    for number, line in numbered_zip_lines(archive, member):
        if not line.strip():
            if tweet or knowledge is not None:
                yield finished()
            tweet, knowledge = [], None
            continue
        token, sep, tag = line.partition("\t")
        if not sep:
            raise DataFormatError(label, number, f"expected 'token<TAB>tag', got {line[:80]!r}")
        if not tweet and knowledge is None:
            first = number
        if knowledge is not None:
            knowledge.append(token)
        elif token == EOS:
            knowledge = []
        else:
            tweet.append(token)
    if tweet or knowledge is not None:
        yield finished()


class KnowledgeIndex:
    """Token sequence -> knowledge texts in file order; `take` hands them out first come, first served."""

    def __init__(self, items: Iterable[PgimKnowledge]) -> None:
        self._by_tokens: dict[tuple[str, ...], deque[str]] = defaultdict(deque)
        for item in items:
            self._by_tokens[item.tokens].append(item.knowledge)

    def take(self, tokens: Iterable[str]) -> str | None:
        queue = self._by_tokens.get(tuple(tokens))
        if not queue:
            return None
        return queue.popleft() if len(queue) > 1 else queue[0]
