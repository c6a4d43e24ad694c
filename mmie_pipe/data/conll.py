"""CoNLL-style tweet blocks: optional `IMGID:<id>` line, then one `token<TAB>tag[<TAB>tag...]` per line.

Used by Twitter-2015/2017, GMNER (two columns) and FMNERG (three: token, coarse tag, fine tag).
Blocks end at a blank line, at the next `IMGID:` line, or at end of file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..metrics.bio import is_bio_tag
from .errors import DataFormatError
from .lines import numbered_lines

IMGID_PREFIX = "IMGID:"


@dataclass
class TaggedBlock:
    """One tweet: its tokens, one tag column per annotation layer, and where each token was read."""

    image_id: str | None
    first_line: int
    tokens: list[str] = field(default_factory=list)
    columns: list[list[str]] = field(default_factory=list)
    token_lines: list[int] = field(default_factory=list)


def read_conll_blocks(
    path: str | os.PathLike[str],
    n_tag_columns: int = 1,
    require_imgid: bool = True,
    lines: Iterator[tuple[int, str]] | None = None,
) -> Iterator[TaggedBlock]:
    """Stream the tweet blocks of a CoNLL file, validating every tag as IOB2.

    `lines` lets a caller feed numbered lines from elsewhere (a zip member); `path` then only
    labels errors.
    """
    source = lines if lines is not None else numbered_lines(path)
    block: TaggedBlock | None = None
    valid_tags: set[str] = set()  # tags already checked: a set lookup beats the regex per line

    def finished(b: TaggedBlock) -> TaggedBlock:
        if not b.tokens:
            raise DataFormatError(path, b.first_line, f"tweet {b.image_id!r} has no tokens")
        return b

    for number, line in source:
        if line.startswith(IMGID_PREFIX):
            if block is not None:
                yield finished(block)
            image_id = line[len(IMGID_PREFIX) :].strip()
            if not image_id:
                raise DataFormatError(path, number, "empty image id after IMGID:")
            block = TaggedBlock(image_id, number, columns=[[] for _ in range(n_tag_columns)])
            continue
        if not line.strip():
            if block is not None:
                yield finished(block)
            block = None
            continue
        if block is None:
            if require_imgid:
                raise DataFormatError(path, number, f"token line before any {IMGID_PREFIX} line: {line[:60]!r}")
            block = TaggedBlock(None, number, columns=[[] for _ in range(n_tag_columns)])
        fields = line.split("\t")
        if len(fields) != n_tag_columns + 1:
            fields = line.split()
        if len(fields) != n_tag_columns + 1 or not fields[0]:
            raise DataFormatError(
                path, number, f"expected a token and {n_tag_columns} tag column(s), got {line[:80]!r}"
            )
        for column, tag in zip(block.columns, fields[1:]):
            if tag not in valid_tags:
                if not is_bio_tag(tag):
                    raise DataFormatError(path, number, f"unknown tag {tag!r} (expected O, B-TYPE or I-TYPE)")
                valid_tags.add(tag)
            column.append(tag)
        block.tokens.append(fields[0])
        block.token_lines.append(number)
    if block is not None:
        yield finished(block)
