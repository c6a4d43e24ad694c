"""GEM's reranking question, shared by the `rerank` stage and `mmie-pipe finetune reranker`, so that
what a reranker is trained on and what it is asked at run time cannot drift apart.

- The gate: an entity's type distribution is uncertain when its *normalised entropy*
  H(p) / log(n) (n = the number of types in the distribution) exceeds gamma. It is 0 for a one-hot
  distribution and 1 for a uniform one, whatever n is, so one gamma (GEM: 0.2) suits a 4-type and a
  51-type label set alike.
- The candidates: the top-K types of the distribution (fewer when the label set is smaller), in
  fine-grained mode only among the fine types of the entity's coarse type.
- The question: a versioned template (`prompts/rerank.choice.v*.jinja`) with lettered options,
  the image as an image part for a VLM or the caption as text for a text LLM. The request ends
  where the answer letter goes; the answer's distribution comes from the runtime's choice scoring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .choices import letters
from .model_io import ImagePart, Message, ModelRequest, Sampling, TextPart
from .prompts import render

TEMPLATE = "rerank.choice.v1.jinja"
# Readable names for the usual coarse labels; other types (FMNERG's `sports_team`...) are spelled
# out with spaces.
TYPE_WORDS = {
    "PER": "person",
    "LOC": "location",
    "ORG": "organization",
    "MISC": "miscellaneous (another named thing)",
    "OTHER": "other (another named thing)",
}
MAX_OPTIONS = 26  # upper-case letters


def option_letters(n: int) -> list[str]:
    if n > MAX_OPTIONS:
        raise ValueError(f"a rerank question takes at most {MAX_OPTIONS} options, not {n}")
    return letters(n)


def type_label(entity_type: str, words: Mapping[str, str] | None = None) -> str:
    """How an option names a type: `words` first, then `TYPE_WORDS`, else the name with spaces."""
    return (words or {}).get(entity_type) or TYPE_WORDS.get(entity_type) or entity_type.replace("_", " ")


def normalized_entropy(probs: Mapping[str, float]) -> float:
    """H(p) / log(n) over the n types of the distribution (renormalised first); 0 when n <= 1."""
    n = len(probs)
    if n <= 1:
        return 0.0
    total = sum(max(p, 0.0) for p in probs.values())
    if total <= 0:
        raise ValueError("a type distribution needs some positive probability")
    h = -sum((p / total) * math.log(p / total) for p in probs.values() if p > 0)
    return min(1.0, max(0.0, h / math.log(n)))


def top_types(probs: Mapping[str, float], k: int, allowed: Sequence[str] | None = None) -> list[str]:
    """The k most probable types (ties keep the distribution's order), only among `allowed` if given."""
    keep = set(allowed) if allowed is not None else None
    ranked = [t for t in probs if keep is None or t in keep]
    order = {t: i for i, t in enumerate(ranked)}
    return sorted(ranked, key=lambda t: (-probs[t], order[t]))[:k]


@dataclass(frozen=True)
class Question:
    """One multiple-choice question about one entity of one post."""

    text: str
    entity: str
    options: tuple[str, ...]  # candidate types, in the order they are lettered
    caption: str | None = None
    image: ImagePart | None = None

    @property
    def letters(self) -> list[str]:
        return option_letters(len(self.options))

    def letter_of(self, entity_type: str) -> str:
        return self.letters[self.options.index(entity_type)]

    def type_of(self, letter: str) -> str:
        return self.options[self.letters.index(letter)]


def question_request(
    question: Question,
    *,
    template: str = TEMPLATE,
    words: Mapping[str, str] | None = None,
    lora: str | None = None,
) -> ModelRequest:
    """The chat request for a question: the image part (if any) then the rendered text. It never
    contains the answer: training appends the gold letter after it."""
    body = render(
        template,
        text=question.text,
        entity=question.entity,
        options=[(letter, type_label(t, words)) for letter, t in zip(question.letters, question.options)],
        caption=question.caption,
        image=question.image is not None,
    )
    content: str | tuple[ImagePart | TextPart, ...] = body if question.image is None else (question.image, TextPart(text=body))
    return ModelRequest(
        messages=(Message(role="user", content=content),),
        sampling=Sampling(max_tokens=1, temperature=0.0),
        lora=lora,
    )
