"""Few-shot example pools and the selectors the stages share (first-N, seeded random, similar).

The record under processing is never its own example: items with the same id or the same text are
skipped, as evaluation harnesses do.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from .errors import ConfigError

PACKAGE_EXAMPLES = resources.files("mmie_pipe") / "prompts" / "examples"
_WORD = re.compile(r"[#@]?\w+", re.UNICODE)


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    entities: tuple[tuple[str, str], ...]  # (surface, type), in order of appearance
    caption: str | None = None


def _from_json(data: dict, where: str) -> Example:
    if "gold" in data:  # a converted data set line (Record with gold annotations)
        ents = [(e["text"], e["type"]) for e in sorted(data["gold"].get("entities", []), key=lambda e: e["start"])]
    elif "entities" in data:
        ents = [(e[0], e[1]) if isinstance(e, list) else (e["text"], e["type"]) for e in data["entities"]]
    else:
        raise ConfigError(f"{where}: an example needs `entities` or `gold`")
    return Example(id=str(data.get("id", where)), text=data["text"], entities=tuple(ents), caption=data.get("caption"))


def load_pool(source: str) -> list[Example]:
    """Examples from a shipped pool name (`ner_tweets.v1`) or a JSONL path (e.g. a converted train split)."""
    path = Path(source)
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
    else:
        resource = PACKAGE_EXAMPLES / f"{source}.jsonl"
        if not resource.is_file():
            raise ConfigError(f"example pool {source!r} is neither a file nor a shipped pool")
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
    return pool


def _terms(text: str) -> Counter:
    return Counter(w.lower() for w in _WORD.findall(text))


class ExampleSelector:
    def __init__(self, pool: list[Example], strategy: Literal["first", "random", "similar"], seed: int = 0):
        self.pool = pool
        self.strategy = strategy
        self.seed = seed
        if strategy == "similar":
            # TF-IDF vectors once per run; cosine against each query.
            df = Counter(t for ex in pool for t in set(_terms(ex.text)))
            n = len(pool)
            self._idf = {t: math.log((1 + n) / (1 + c)) + 1 for t, c in df.items()}
            self._vectors = [self._vector(ex.text) for ex in pool]

    def _vector(self, text: str) -> dict[str, float]:
        tf = _terms(text)
        vec = {t: c * self._idf.get(t, math.log(1 + len(self.pool)) + 1) for t, c in tf.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {t: v / norm for t, v in vec.items()}

    def select(self, record_id: str, text: str, k: int) -> list[Example]:
        candidates = [i for i, ex in enumerate(self.pool) if ex.id != record_id and ex.text != text]
        if self.strategy == "first":
            chosen = candidates[:k]
        elif self.strategy == "random":
            # Seeded by the record so a re-run picks the same shots (and hits the cache).
            digest = hashlib.sha256(f"{self.seed}:{record_id}".encode()).digest()
            chosen = random.Random(digest).sample(candidates, min(k, len(candidates)))
        else:
            query = self._vector(text)
            scored = sorted(
                candidates,
                key=lambda i: (-sum(query.get(t, 0.0) * v for t, v in self._vectors[i].items()), i),
            )
            # Most similar last, closest to the query in the prompt.
            chosen = list(reversed(scored[:k]))
        return [self.pool[i] for i in chosen]
