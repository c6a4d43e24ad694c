"""The datasets under the data root: where each split lives, and `load_split` to stream it."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..metrics.bio import BioRule
from ..records import Record
from .captions import read_captions
from .build import image_stem
from .fmnerg import load_fmnerg
from .knowledge import KnowledgeIndex, iter_pgim_knowledge
from .mnre import load_mnre
from .paths import DataRoot, resolve_data_root
from .twitter import load_gmner, load_twitter

log = logging.getLogger(__name__)

OWL_FILES = tuple(f"captions/mplug_owl_gmner_{s}.txt" for s in ("train", "dev", "test"))
BLIP2_FILES = ("captions/blip2_twitter2015.txt", "captions/blip2_twitter2017.txt")
CAPTION_KINDS = ("blip2", "owl")
KNOWLEDGE_KINDS = ("pgim",)
DATASET_NAMES = ("twitter2015", "twitter2017", "gmner", "mnre", "fmnerg")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    splits: dict[str, str]  # canonical split name -> file relative to the data root
    expected_counts: dict[str, int]  # records per split, from the data README
    captions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # knowledge kind -> (zips, {split: member})
    knowledge: dict[str, tuple[tuple[str, ...], dict[str, str]]] = field(default_factory=dict)
    types: tuple[str, ...] = ()


_TWITTER_SPLITS = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
_PGIM_MEMBERS = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
_PGIM_ZIPS = ("knowledge/pgim_twitter2015.zip", "knowledge/pgim_twitter2017.zip")

DATASETS: dict[str, DatasetSpec] = {
    "twitter2015": DatasetSpec(
        "twitter2015",
        {s: f"twitter2015/{f}" for s, f in _TWITTER_SPLITS.items()},
        {"train": 4000, "valid": 1000, "test": 3257},
        captions={"blip2": BLIP2_FILES[:1], "owl": OWL_FILES},
        knowledge={"pgim": (_PGIM_ZIPS[:1], _PGIM_MEMBERS)},
        types=("PER", "LOC", "ORG", "OTHER"),
    ),
    "twitter2017": DatasetSpec(
        "twitter2017",
        {s: f"twitter2017/{f}" for s, f in _TWITTER_SPLITS.items()},
        {"train": 3373, "valid": 723, "test": 723},
        captions={"blip2": BLIP2_FILES[1:], "owl": OWL_FILES},
        knowledge={"pgim": (_PGIM_ZIPS[1:], _PGIM_MEMBERS)},
        types=("PER", "LOC", "ORG", "MISC"),
    ),
    "gmner": DatasetSpec(
        "gmner",
        {"train": "gmner/train.txt", "dev": "gmner/dev.txt", "test": "gmner/test.txt"},
        {"train": 7000, "dev": 1500, "test": 1500},
        captions={"blip2": BLIP2_FILES, "owl": OWL_FILES},
        # No PGIM knowledge: GMNER v2.0 re-edited the tweets, and only ~45% of them still match a
        # PGIM tweet token for token, so offering it would silently leave most records without.
        types=("PER", "LOC", "ORG", "OTHER"),
    ),
    "mnre": DatasetSpec(
        "mnre",
        {"train": "mnre/train.txt", "val": "mnre/val.txt", "test": "mnre/test.txt"},
        {"train": 12247, "val": 1624, "test": 1614},
    ),
    "fmnerg": DatasetSpec(
        "fmnerg",
        {"train": "fmnerg/train.txt", "dev": "fmnerg/dev.txt", "test": "fmnerg/test.txt"},
        {"train": 7000, "dev": 1500, "test": 1500},
        captions={"blip2": BLIP2_FILES, "owl": OWL_FILES},
        # Coarse types; the fine ones and their parents are in `mmie_pipe/data/fmnerg_types.json`.
        types=("person", "organization", "location", "building", "event", "art", "product", "other"),
    ),
}

# Other names people use for the same split.
_SPLIT_ALIASES = {"dev": ("valid", "val"), "valid": ("dev", "val"), "val": ("dev", "valid")}


def canonical_split(dataset: str, split: str) -> str:
    """The dataset's own name for `split` (`dev`, `valid` and `val` are interchangeable)."""
    spec = dataset_spec(dataset)
    if split in spec.splits:
        return split
    for alias in _SPLIT_ALIASES.get(split, ()):
        if alias in spec.splits:
            return alias
    raise ValueError(f"{dataset} has no split {split!r}; splits: {', '.join(spec.splits)}")


def dataset_spec(dataset: str) -> DatasetSpec:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}") from None


def split_path(dataset: str, split: str, data_root: DataRoot | str | os.PathLike[str] | None = None) -> Path:
    root = _root(data_root)
    return root / dataset_spec(dataset).splits[canonical_split(dataset, split)]


def load_split(
    dataset: str,
    split: str,
    data_root: DataRoot | str | os.PathLike[str] | None = None,
    captions: str | None = None,
    knowledge: str | None = None,
    *,
    rule: BioRule = "strict",
    path: str | os.PathLike[str] | None = None,
    xml_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> Iterator[Record]:
    """Stream one split as input `Record`s (gold inside), optionally with captions and knowledge.

    `rule` is the BIO convention (see `mmie_pipe.metrics.bio`); `path` overrides the split file;
    `xml_dir` the VOC xml folder of GMNER and FMNERG boxes (default `<root>/gmner/xml`).
    Records without a caption / knowledge entry keep `None` there; a warning gives the count.
    """
    spec = dataset_spec(dataset)
    split = canonical_split(dataset, split)
    if captions is not None and captions not in spec.captions:
        raise ValueError(f"no {captions!r} captions for {dataset}; available: {', '.join(spec.captions) or 'none'}")
    if knowledge is not None and knowledge not in spec.knowledge:
        raise ValueError(f"no {knowledge!r} knowledge for {dataset}; available: {', '.join(spec.knowledge) or 'none'}")
    # An explicit file needs the data root only for captions, knowledge or default boxes.
    root = _root(data_root) if (path is None or captions or knowledge or (dataset == "gmner" and not xml_dir)) else None
    source = Path(path) if path is not None else root / spec.splits[split]

    if dataset == "mnre":
        records = load_mnre(source, split=split)
    elif dataset == "gmner":
        records = load_gmner(source, Path(xml_dir) if xml_dir else root / "gmner" / "xml", split=split, rule=rule)
    elif dataset == "fmnerg":
        if xml_dir is None and root is not None and (root / "gmner" / "xml").is_dir():
            xml_dir = root / "gmner" / "xml"  # FMNERG's boxes are GMNER's
        records = load_fmnerg(source, split=split, rule=rule, xml_dir=xml_dir)
    else:
        records = load_twitter(source, dataset=dataset, split=split, rule=rule)
    if limit is not None:
        records = itertools.islice(records, limit)
    if captions is None and knowledge is None:
        return records
    caption_map = read_captions([root / f for f in spec.captions[captions]], captions) if captions else None
    knowledge_index = _knowledge_index(root, spec, knowledge, split) if knowledge else None
    return _enrich(records, caption_map, captions, knowledge_index, knowledge)


def _enrich(records, caption_map, caption_kind, knowledge_index, knowledge_kind) -> Iterator[Record]:
    total = no_caption = no_knowledge = 0
    for record in records:
        total += 1
        if caption_map is not None:
            caption = caption_map.get(image_stem(record.meta.get("image_id", record.id)))
            if caption:
                record.caption = caption
                record.provenance["caption"] = caption_kind
            else:
                no_caption += 1
        if knowledge_index is not None:
            text = knowledge_index.take(record.tokens or record.text.split(" "))
            if text:
                record.knowledge = text
                record.provenance["knowledge"] = knowledge_kind
            else:
                no_knowledge += 1
        yield record
    if no_caption:
        log.warning("%d of %d records have no %s caption", no_caption, total, caption_kind)
    if no_knowledge:
        log.warning("%d of %d records have no %s knowledge (matched by tokens)", no_knowledge, total, knowledge_kind)


def _knowledge_index(root: Path, spec: DatasetSpec, kind: str, split: str) -> KnowledgeIndex:
    zips, members = spec.knowledge[kind]
    return KnowledgeIndex(
        itertools.chain.from_iterable(iter_pgim_knowledge(root / archive, members[split]) for archive in zips)
    )


def _root(data_root) -> Path:
    if isinstance(data_root, DataRoot):
        return data_root.path
    return resolve_data_root(data_root).path
