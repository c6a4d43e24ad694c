"""Few-shot example pools: shipped files, a user's JSONL, or PGIM's curated pools.

An example is a solved post: its text, optionally a caption, the gold entities, and optionally a
written answer (PGIM-style auxiliary knowledge). Which examples a record gets is `selection.py`'s
job.

Pool sources:
- a shipped pool name (`ner_tweets.v1`, `knowledge_tweets.v1`, files in `prompts/examples/`);
- a JSONL path: lines with `id`, `text`, `entities` ([surface, type] pairs or objects) or `gold`
  (a converted data set line), optionally `caption` and `answer` (or `knowledge`);
- `pgim:2015` / `pgim:2017`: PGIM's hand-edited pools under the data root
  (`knowledge/pgim_examples/<year>`), read by `data.examples`; the tweets' text and BLIP-2 captions
  come from the data set's train split (every pool id is a train tweet).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .errors import ConfigError

PACKAGE_EXAMPLES = resources.files("mmie_pipe") / "prompts" / "examples"
PGIM_POOLS = {"2015": "twitter2015", "2017": "twitter2017"}


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    entities: tuple[tuple[str, str], ...]  # (surface, type), in order of appearance
    caption: str | None = None
    answer: str | None = None  # a written answer (PGIM knowledge: entities, kinds, reasoning)


def _from_json(data: dict, where: str) -> Example:
    if "gold" in data:  # a converted data set line (Record with gold annotations)
        ents = [(e["text"], e["type"]) for e in sorted(data["gold"].get("entities", []), key=lambda e: e["start"])]
    elif "entities" in data:
        ents = [(e[0], e[1]) if isinstance(e, list) else (e["text"], e["type"]) for e in data["entities"]]
    else:
        raise ConfigError(f"{where}: an example needs `entities` or `gold`")
    return Example(
        id=str(data.get("id", where)),
        text=data["text"],
        entities=tuple(ents),
        caption=data.get("caption"),
        answer=data.get("answer") or data.get("knowledge"),
    )


@lru_cache(maxsize=8)
def load_pool(source: str) -> tuple[Example, ...]:
    """The examples of a pool source (see the module doc). Read once per process."""
    if source.startswith("pgim:"):
        return _pgim_pool(source.split(":", 1)[1])
    path = Path(source)
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
    else:
        resource = PACKAGE_EXAMPLES / f"{source}.jsonl"
        if not resource.is_file():
            raise ConfigError(f"example pool {source!r} is neither a file, a shipped pool, nor pgim:2015|2017")
        lines = resource.read_text(encoding="utf-8").splitlines()
    pool = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                pool.append(_from_json(json.loads(line), f"{source}:{number}"))
            except (json.JSONDecodeError, KeyError) as exc:
                raise ConfigError(f"{source}:{number}: bad example line: {exc}") from exc
    if not pool:
        raise ConfigError(f"example pool {source!r} is empty")
    return tuple(pool)


def _pgim_pool(year: str) -> tuple[Example, ...]:
    from .data import DataFormatError, DataRootNotFound, image_stem, load_pgim_examples, load_split, resolve_data_root

    if year not in PGIM_POOLS:
        raise ConfigError(f"pgim:{year}: PGIM's pools are pgim:2015 and pgim:2017")
    try:
        root = resolve_data_root().path
        folder = root / "knowledge" / "pgim_examples" / year
        curated = list(load_pgim_examples(folder / "pool_answers.txt", folder / "pool_labels.txt"))
        tweets = {image_stem(r.meta["image_id"]): r for r in load_split(PGIM_POOLS[year], "train", root, captions="blip2")}
    except (DataRootNotFound, DataFormatError, OSError) as exc:
        raise ConfigError(f"pgim:{year}: cannot read PGIM's example pool: {exc}") from exc
    pool = []
    for item in curated:
        tweet = tweets.get(item.image_id)
        if tweet is None:
            raise ConfigError(f"pgim:{year}: example {item.image_id} is not a {PGIM_POOLS[year]} train tweet")
        pool.append(Example(id=item.image_id, text=tweet.text, entities=tuple(item.labels), caption=tweet.caption, answer=item.answer))
    return tuple(pool)
