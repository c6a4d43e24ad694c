"""Choice probabilities through `ModelClient.choose` when the runtime provides it; until then, the
same scoring done here: one request, the first generated token's top log-probabilities,
normalised over the single-letter options (the mass outside them is returned too)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..calls import ModelClient
from ..errors import ParseError
from ..model_io import Constraint, ModelRequest

TOP_LOGPROBS = 20


async def choose(client: ModelClient, request: ModelRequest, options: Sequence[str]) -> tuple[str, dict[str, float], float]:
    """(best option, probabilities over the options, probability mass outside them)."""
    native = getattr(client, "choose", None)
    if native is not None:
        response = await native(request, list(options))
        return response.text, dict(response.choice.probs), response.choice.other_mass or 0.0
    asked = request.model_copy(update={"top_logprobs": TOP_LOGPROBS, "sampling": request.sampling.model_copy(update={"max_tokens": 1})})
    response = await client.generate(asked)
    mass = dict.fromkeys(options, 0.0)
    if response.logprobs:
        for token, logprob in response.logprobs[0].top.items():
            key = token.strip()
            if key in mass:
                mass[key] += math.exp(logprob)
    total = sum(mass.values())
    if total > 0:
        probs = {o: m / total for o, m in mass.items()}
        return max(options, key=probs.__getitem__), probs, max(0.0, 1.0 - total)
    # No option among the first token's top log-probabilities: ask again constrained to the options
    # (transformers scores each option's likelihood; servers answer one of them).
    constrained = asked.model_copy(update={"constraint": Constraint(choices=tuple(options))})
    response = await client.generate(constrained)
    answer = response.text.strip()
    if answer not in options:
        raise ParseError(f"the answer {response.text!r} is none of the options {', '.join(options)}")
    top = response.logprobs[0].top if response.logprobs else {}
    scores = {o: top[o] for o in options if o in top}
    if len(scores) == len(options):
        best = max(scores.values())
        weights = {o: math.exp(v - best) for o, v in scores.items()}
        norm = sum(weights.values())
        return answer, {o: w / norm for o, w in weights.items()}, 1.0
    return answer, {o: float(o == answer) for o in options}, 1.0
