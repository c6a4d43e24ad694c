"""Twitter-FMNERG: three columns per token (token, coarse IOB2 tag, fine IOB2 tag).

FMNERG re-annotates GMNER with 8 coarse and 51 fine types; boxes come from GMNER-style VOC xml
when `xml_dir` is given. Blocks may start with `IMGID:` lines (ids are then image ids) or not
(ids are then `fmnerg-<n>`). Coarse and fine layers must mark the same spans.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..metrics.bio import BioRule, bio_to_spans
from ..records import Record
from .build import UniqueIds, image_file_name, make_record, span_entities
from .conll import read_conll_blocks
from .errors import DataFormatError
from .voc import VocIndex


def load_fmnerg(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    rule: BioRule = "strict",
    xml_dir: str | os.PathLike[str] | None = None,
) -> Iterator[Record]:
    voc = VocIndex(xml_dir) if xml_dir is not None else None
    return _records(path, split, rule, voc)


def _records(path, split, rule, voc: VocIndex | None) -> Iterator[Record]:
    next_id = UniqueIds()
    for n, block in enumerate(read_conll_blocks(path, n_tag_columns=2, require_imgid=False), 1):
        coarse_tags, fine_tags = block.columns
        coarse_spans = bio_to_spans(coarse_tags, rule)
        fine_spans = bio_to_spans(fine_tags, rule)
        if [(s.start, s.end) for s in coarse_spans] != [(s.start, s.end) for s in fine_spans]:
            first_diff = next(
                (c, f) for c, f in zip(coarse_spans + [None], fine_spans + [None]) if c is None or f is None or c[:2] != f[:2]
            )
            token = min(s.start for s in first_diff if s is not None)
            raise DataFormatError(
                path, block.token_lines[token], "coarse and fine tag columns mark different entity spans"
            )
        meta: dict = {"dataset": "fmnerg", "split": split, "source": os.fspath(path), "source_line": block.first_line}
        base_id = block.image_id or f"fmnerg-{n}"
        if block.image_id:
            meta["image_id"] = image_file_name(block.image_id)
        boxes = None
        if voc is not None and block.image_id:
            annotation = voc.get(block.image_id)
            boxes = annotation.boxes if annotation else {}
        entities = span_entities(block.tokens, coarse_spans, boxes, [s.type for s in fine_spans])
        yield make_record(record_id=next_id(base_id), tokens=block.tokens, entities=entities, meta=meta)
