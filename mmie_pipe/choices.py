"""Multiple-choice answers with a probability for every option, the same meaning on every backend.

A choice request is one prompt that ends where the answer goes, plus a closed set of options
(usually letters: `letters(4)` -> A, B, C, D). Servers (llama.cpp, `vllm serve`, the OpenAI API)
and the in-process vLLM engine answer it with ONE generated token: the first token's top
log-probabilities are mapped onto the options (`scores_from_top_logprobs`). The transformers
backend scores every option's full log-likelihood in one batched forward pass instead.

Either way `ChoiceScores.probs` is normalised over the options and `other_mass` keeps what the model
put elsewhere. Servers return at most `top_logprobs` (<= 20) alternatives: an option outside them gets
probability 0 and is listed in `unseen`. Larger label sets (FMNERG's 51 fine types) are asked in
pages (`pages`) or scored by the transformers backend; see docs/runtime.md.
"""

from __future__ import annotations

import math
import string
from typing import Iterable, Sequence

from .errors import ParseError
from .model_io import ChoiceScores, ModelRequest, Sampling

# Upper then lower case: 52 single-character options, each one token for the usual tokenizers.
LETTERS = string.ascii_uppercase + string.ascii_lowercase
# What may follow an option inside one token ("A." or "B)") without making it another answer.
_TRAILING = set(".):,;]>")
MAX_TOP_LOGPROBS = 20


def letters(n: int) -> list[str]:
    if not 0 < n <= len(LETTERS):
        raise ValueError(f"cannot letter {n} options (1 to {len(LETTERS)})")
    return list(LETTERS[:n])


def _same(option: str, text: str) -> bool:
    # Single letters are case-sensitive (" a" is the English article, not option A); words are not.
    return option == text if len(option) == 1 else option.casefold() == text.casefold()


def _prefix(option: str, text: str) -> bool:
    return option.startswith(text) if len(option) == 1 else option.casefold().startswith(text.casefold())


def check_options(options: Sequence[str]) -> None:
    """Options must be distinct, non-blank, and none may begin another (their first tokens could
    collide, and then one generated token cannot tell them apart: letter them instead)."""
    if not options:
        raise ValueError("a choice request needs at least one option")
    stripped = [o.strip() for o in options]
    if any(not o for o in stripped):
        raise ValueError("choice options must not be blank")
    for i, a in enumerate(stripped):
        for b in stripped[i + 1 :]:
            if _same(a, b):
                raise ValueError(f"choice options {a!r} and {b!r} are the same answer")
            if _prefix(a, b) or _prefix(b, a):
                raise ValueError(
                    f"choice options {a!r} and {b!r} may share their first token, so one generated token "
                    "cannot tell them apart; use lettered options (mmie_pipe.choices.letters)"
                )


def option_of_token(token: str, options: Sequence[str]) -> str | None:
    """The option a first generated token stands for: the option itself, the first piece of a
    longer option, or the option followed by punctuation. None for anything else."""
    text = token.strip()
    if not text:
        return None
    exact = [o for o in options if _same(o.strip(), text)]
    if exact:
        return exact[0]
    longer = [o for o in options if len(text) < len(o.strip()) and _prefix(o.strip(), text)]
    if len(longer) == 1:
        return longer[0]
    if not longer and text[-1] in _TRAILING:
        return option_of_token(text.rstrip("".join(_TRAILING)), options)
    return None  # several options begin this way (check_options prevents it), or no option does


def scores_from_top_logprobs(top: dict[str, float], options: Sequence[str]) -> ChoiceScores:
    """Map a first token's top log-probabilities onto the options; tokens that spell the same option
    (" A" and "A") add up. Raises ParseError when no option is among them."""
    mass = {o: 0.0 for o in options}
    for token, logprob in top.items():
        option = option_of_token(token, options)
        if option is not None:
            mass[option] += math.exp(logprob)
    total = sum(mass.values())
    if total <= 0:
        shown = ", ".join(repr(t) for t in list(top)[:5])
        raise ParseError(f"no option ({', '.join(options)}) among the model's top first tokens ({shown})")
    return ChoiceScores(
        probs={o: m / total for o, m in mass.items()},
        other_mass=max(0.0, 1.0 - total),
        method="first_token",
        unseen=[o for o, m in mass.items() if m == 0.0],
    )


def scores_from_likelihoods(logliks: Sequence[float], options: Sequence[str]) -> ChoiceScores:
    """Normalise options' total log-likelihoods (log-sum-exp); what is left of 1 is `other_mass`."""
    peak = max(logliks)
    weights = [math.exp(v - peak) for v in logliks]
    norm = sum(weights)
    total = math.exp(peak) * norm
    return ChoiceScores(
        probs={o: w / norm for o, w in zip(options, weights)},
        other_mass=max(0.0, 1.0 - total),
        method="likelihood",
    )


def first_token_request(request: ModelRequest, top_logprobs: int = MAX_TOP_LOGPROBS) -> ModelRequest:
    """The plain request a server gets for a scored choice: one greedy token, its top alternatives,
    and no constraint (a grammar would hide the mass the model puts outside the options)."""
    return request.model_copy(
        update={
            "constraint": None,
            "score_choices": False,
            "top_logprobs": top_logprobs,
            "sampling": Sampling(temperature=0.0, max_tokens=1, seed=request.sampling.seed),
        }
    )


def pages(options: Sequence[str], size: int) -> list[list[str]]:
    """Split a long label list into pages of at most `size` for paged questions."""
    if size < 2:
        raise ValueError("a page holds at least two options")
    items = list(options)
    return [items[i : i + size] for i in range(0, len(items), size)]


def combine_pages(page_scores: Iterable[dict[str, float]], final: dict[str, float], winners: Sequence[str]) -> dict[str, float]:
    """Paged question: P(label) = P(label | its page) x P(its page's winner wins the final round)."""
    combined: dict[str, float] = {}
    for probs, winner in zip(page_scores, winners):
        for label, p in probs.items():
            combined[label] = p * final.get(winner, 0.0)
    total = sum(combined.values()) or 1.0
    return {label: p / total for label, p in combined.items()}
