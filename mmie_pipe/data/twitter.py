"""Twitter-2015 / Twitter-2017 MNER and Twitter-GMNER v2.0 (the same CoNLL format, plus boxes)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..metrics.bio import BioRule, bio_to_spans
from ..records import Record
from .build import UniqueIds, image_file_name, make_record, span_entities
from .conll import read_conll_blocks
from .errors import DataFormatError
from .voc import VocIndex


def load_conll_tweets(
    path: str | os.PathLike[str],
    *,
    dataset: str,
    split: str | None = None,
    rule: BioRule = "strict",
    voc: VocIndex | None = None,
) -> Iterator[Record]:
    """Stream one CoNLL split as `Record`s with gold entities (character offsets into `text`).

    With `voc` (GMNER), each entity gets the boxes whose `<name>` equals its surface string and
    `groundable` = whether it has any; tweets without an xml file have only ungroundable entities.
    """
    next_id = UniqueIds()
    for block in read_conll_blocks(path):
        spans = bio_to_spans(block.columns[0], rule)
        assert block.image_id is not None  # read_conll_blocks requires IMGID lines
        meta: dict = {
            "dataset": dataset,
            "split": split,
            "image_id": image_file_name(block.image_id),
            "source": os.fspath(path),
            "source_line": block.first_line,
        }
        annotation = voc.get(block.image_id) if voc is not None else None
        boxes = None if voc is None else annotation.boxes if annotation else {}
        entities = span_entities(block.tokens, spans, boxes)
        if annotation:
            meta["image_size"] = [annotation.width, annotation.height]
            unmatched = sorted(set(annotation.boxes) - {e.text for e in entities})
            if unmatched:  # boxes whose name is no entity of the tweet: keep them visible
                meta["unmatched_box_names"] = unmatched
        yield make_record(
            record_id=next_id(block.image_id), tokens=block.tokens, entities=entities, meta=meta
        )


def load_twitter(
    path: str | os.PathLike[str], *, dataset: str = "twitter2015", split: str | None = None, rule: BioRule = "strict"
) -> Iterator[Record]:
    """Twitter-2015 or Twitter-2017 MNER split."""
    return load_conll_tweets(path, dataset=dataset, split=split, rule=rule)


def load_gmner(
    path: str | os.PathLike[str],
    xml_dir: str | os.PathLike[str],
    *,
    split: str | None = None,
    rule: BioRule = "strict",
) -> Iterator[Record]:
    """Twitter-GMNER v2.0 split with boxes from `xml_dir` (indexed once per call)."""
    if not os.path.isdir(xml_dir):
        raise DataFormatError(xml_dir, None, "GMNER xml folder not found")
    return load_conll_tweets(path, dataset="gmner", split=split, rule=rule, voc=VocIndex(xml_dir))
