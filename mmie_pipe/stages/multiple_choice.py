"""Multiple-choice questions answered by one letter, shared by MQA's `choice` and `relations`.

One request per question; the answer and the distribution over every option come from that one
call (`ModelClient.choose`: the first generated token's log-probabilities on servers, one batched
likelihood pass on transformers). An answer that cannot be used (no distribution, or none of the
option letters) falls back to the none-of-the-above option, never to a random one, and is counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from ..calls import Outcome
from ..errors import ParseError
from ..model_io import Message, ModelRequest, ModelResponse, Sampling
from ..records import Record, StageError
from .base import FanOutParams, Role

LETTERINGS: dict[str, str] = {
    "upper": "ABCDEFGHIJKLMNOPQRST",
    "lower": "abcdefghijklmnopqrst",
    "digits": "123456789",
}
Lettering = Literal["upper", "lower", "digits"]
FALLBACK_COUNTER = "choice_fallbacks"


def choice_roles() -> dict[str, Role]:
    return {"llm": Role(needs=frozenset({"completion", "choice_probs"}), description="the LLM answering the questions")}


def choice_needs(mode: str) -> dict[str, frozenset[str]]:
    """A scored answer needs the first token's distribution (servers) or option likelihoods
    (transformers), on a completion or a chat prompt."""
    return {"llm": frozenset({"completion" if mode == "completion" else "chat", "choice_probs"})}


class MultipleChoiceParams(FanOutParams):
    lettering: Lettering = "upper"
    # Where the none-of-the-above option goes: MQA's published code puts it last for entities
    # and first for event triggers.
    none_position: Literal["last", "first"] = "last"
    mode: Literal["completion", "chat"] = "completion"
    context_chars: int = Field(default=400, ge=0)  # caption / visual context shown, cut to this


@dataclass(frozen=True)
class Options:
    """Lettered statements; `keys[i]` names what option `letters[i]` stands for (a type, a
    relation label, or `none_key`)."""

    letters: tuple[str, ...]
    statements: tuple[str, ...]
    keys: tuple[str, ...]
    none_key: str

    @property
    def lines(self) -> list[str]:
        return [f"{letter}. {text}" for letter, text in zip(self.letters, self.statements)]

    def letter_of(self, key: str) -> str:
        return self.letters[self.keys.index(key)]


def lay_out(
    items: list[tuple[str, str]], none: tuple[str, str] | None, lettering: Lettering, none_position: str = "last"
) -> Options:
    """(key, statement) items plus the none option (if any), lettered in order."""
    if none is None:
        ordered = list(items)
    else:
        ordered = [none, *items] if none_position == "first" else [*items, none]
    alphabet = LETTERINGS[lettering]
    if len(ordered) > len(alphabet):
        raise ValueError(f"{len(ordered)} options exceed the {len(alphabet)} {lettering} letters")
    return Options(
        letters=tuple(alphabet[: len(ordered)]),
        statements=tuple(text for _, text in ordered),
        keys=tuple(key for key, _ in ordered),
        none_key=none[0] if none is not None else "",
    )


def choice_request(prompt: str, mode: str) -> ModelRequest:
    """The prompt ends where the answer letter goes."""
    sampling = Sampling(temperature=0.0, max_tokens=1)
    if mode == "chat":
        return ModelRequest(messages=(Message(role="user", content=prompt),), sampling=sampling)
    return ModelRequest(prompt=prompt, sampling=sampling)


@dataclass(frozen=True)
class Reading:
    """A question's outcome: probability per option key (summing to 1), the chosen key, and
    whether the model's answer was usable (else the none option was taken)."""

    probs: dict[str, float]
    chosen: str
    usable: bool


def read_choice(response: ModelResponse, options: Options) -> Reading:
    scores = response.choice
    probs_by_letter = dict(scores.probs) if scores is not None else {}
    total = sum(p for p in probs_by_letter.values() if math.isfinite(p))
    usable = (
        scores is not None
        and response.text in options.letters
        and total > 0
        and all(math.isfinite(p) for p in probs_by_letter.values())
        and len(scores.unseen) < len(options.letters)
    )
    if not usable:
        return fallback_reading(options)
    probs: dict[str, float] = {}
    for letter, key in zip(options.letters, options.keys):
        probs[key] = probs.get(key, 0.0) + probs_by_letter.get(letter, 0.0) / total
    # Several options may stand for one key (verbalisations of a relation): the key with the
    # largest summed probability is the answer.
    chosen = max(probs, key=lambda k: (probs[k], -options.keys.index(k)))
    return Reading(probs, chosen, True)


def fallback_reading(options: Options) -> Reading:
    """Never a random option: the none option takes all the mass (without one, nothing does)."""
    probs = {key: 0.0 for key in options.keys}
    if options.none_key:
        probs[options.none_key] = 1.0
    return Reading(probs, options.none_key, False)


def read_outcome(outcome: Outcome[ModelResponse], options: Options) -> Reading | None:
    """A fanned-out question's reading; an answer with no option among the model's likely first
    tokens (a parse error) is the fallback; None when the call itself failed (after retries)."""
    if outcome.ok:
        return read_choice(outcome.value, options)
    if isinstance(outcome.exception, ParseError):
        return fallback_reading(options)
    return None


def report_failed(record: Record, stage: str, what: str, failed: list[Outcome], total: int) -> None:
    """Questions whose calls failed: the record says so (it is retried on resume; the answered
    questions come back from the cache) and keeps the items that were answered."""
    if failed:
        record.errors.append(StageError(
            stage=stage, line=record.line, kind="model",
            reason=f"{len(failed)} of {total} {what} questions failed; their items are left out: {failed[0].error}",
        ))


def without_none(probs: dict[str, float], none_key: str) -> tuple[dict[str, float], float]:
    """Option probabilities renormalised without the none option, and the none probability."""
    none_prob = probs.get(none_key, 0.0)
    rest = {k: p for k, p in probs.items() if k != none_key}
    mass = sum(rest.values())
    if mass <= 0:
        return {k: 1.0 / len(rest) for k in rest} if rest else {}, none_prob
    return {k: p / mass for k, p in rest.items()}, none_prob
