"""Training data: records from a converted JSONL file or `dataset:split` (teammate A's loaders),
their label inventory, and their encoded model inputs with gold tag ids."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..records import Record
from .alignment import entity_token_spans, post_tokens
from .config import HEAD_FIELDS, TaggerConfig
from .encoding import EncodedInput, InputEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSource:
    """Where one split comes from: `path/to/records.jsonl` or `twitter2017:train`."""

    spec: str
    knowledge: str | None = None  # knowledge kind for `load_split` (e.g. `pgim`)
    captions: str | None = None  # caption kind for `load_split` (e.g. `blip2`)
    data_root: str | None = None
    limit: int | None = None

    def describe(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def read_records(source: DataSource) -> list[Record]:
    path = Path(source.spec)
    if path.is_file():
        if source.knowledge or source.captions:
            log.info("%s is a converted file: knowledge/captions are taken from its records", path)
        records = []
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    records.append(Record.model_validate_json(line))
                    if source.limit is not None and len(records) >= source.limit:
                        break
        return records
    dataset, sep, split = source.spec.partition(":")
    if not sep:
        raise ConfigError(f"{source.spec!r} is neither a file nor `dataset:split` (e.g. twitter2017:train)")
    from ..data import load_split

    return list(
        load_split(
            dataset, split, source.data_root, captions=source.captions, knowledge=source.knowledge, limit=source.limit
        )
    )


def label_inventory(records: Sequence[Record]) -> tuple[list[str], list[str], dict[str, str]]:
    """Coarse types, fine types and each fine type's most frequent coarse parent, from gold."""
    coarse: set[str] = set()
    parents: dict[str, Counter[str]] = defaultdict(Counter)
    for record in records:
        for entity in record.gold.entities if record.gold else []:
            if entity.type:
                coarse.add(entity.type)
                if entity.fine_type:
                    parents[entity.fine_type][entity.type] += 1
    fine_to_coarse = {fine: counts.most_common(1)[0][0] for fine, counts in parents.items()}
    return sorted(coarse), sorted(parents), fine_to_coarse


@dataclass
class EncodingStats:
    examples: int = 0
    with_context: int = 0
    context_truncated: int = 0
    context_dropped: int = 0
    entities_snapped: int = 0
    entities_dropped: int = 0
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingExample:
    record: Record
    encoded: EncodedInput
    tags: dict[str, list[int]]  # head name -> gold tag id per post word


def encode_examples(
    records: Sequence[Record], config: TaggerConfig, encoder: InputEncoder
) -> tuple[list[TrainingExample], EncodingStats]:
    """Gold tags per head; records without post tokens or without gold are skipped (counted)."""
    tag_sets = config.tag_sets()
    stats = EncodingStats()
    examples = []
    for record in records:
        tokens = post_tokens(record)
        if not tokens.words or record.gold is None:
            stats.extra["skipped"] = stats.extra.get("skipped", 0) + 1
            continue
        context = encoder.context_words([getattr(record, f, None) for f in config.context_fields])
        encoded = encoder.encode(tokens.words, context)
        tags = {}
        for head, tag_set in tag_sets.items():
            aligned = entity_token_spans(record.gold.entities, tokens.offsets, type_field=HEAD_FIELDS[head])
            if head == config.span_head:
                stats.entities_snapped += aligned.snapped
                stats.entities_dropped += aligned.dropped
            known = [s for s in aligned.spans if s.type in tag_set.types]
            index = tag_set.index
            tags[head] = [index[t] for t in tag_set.encode(len(tokens.words), known)]
        stats.examples += 1
        stats.with_context += bool(context)
        stats.context_truncated += 0 < encoded.context_words_kept < encoded.context_words_total
        stats.context_dropped += bool(context) and encoded.context_words_kept == 0
        examples.append(TrainingExample(record, encoded, tags))
    return examples, stats
