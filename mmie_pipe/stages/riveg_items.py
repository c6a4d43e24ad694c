"""What RiVEG's three stages share: per-entity fan-out, yes/no probabilities, entity bookkeeping.

Every question about one entity is one request; a record's requests run concurrently through the
call path (`ModelClient.fan_out` where the runtime offers it), and a failed question becomes an error
on the record naming its entity while the other entities keep their answers.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Iterable, Literal

from ..errors import ConfigError
from ..model_io import ModelRequest, ModelResponse
from ..records import Entity, Record, StageError

PACKAGE_EXAMPLES = resources.files("mmie_pipe") / "prompts" / "examples"
QueryStyle = Literal["description", "name", "both"]


@dataclass
class Outcome:
    """One item's result: a value, or the exception that stopped it."""

    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


async def fan_out(client: Any, jobs: list[Awaitable[Any]]) -> list[Any]:
    """Run one record's per-item jobs concurrently; one result (`.ok`, `.value`, `.error`) per job."""
    if client is not None and hasattr(client, "fan_out"):
        return await client.fan_out(jobs)
    results = await asyncio.gather(*jobs, return_exceptions=True)
    return [Outcome(error=r) if isinstance(r, BaseException) else Outcome(value=r) for r in results]


async def choose(client: Any, request: ModelRequest, options: tuple[str, ...]) -> tuple[str, dict[str, float]]:
    """The most probable option and the probabilities of all options (summing to 1).

    Uses the runtime's `ModelClient.choose` where present. Otherwise: one request for a single
    token with the top log-probabilities, each option's mass summed over the tokens that spell it
    (case and surrounding spaces ignored); when none of them is in the top list, the generated
    token decides with probability 1.
    """
    if hasattr(client, "choose"):
        response: ModelResponse = await client.choose(request, list(options))
        probs = dict(response.choice.probs) if response.choice else {response.text: 1.0}
        return max(probs, key=probs.get), probs
    sampling = request.sampling.model_copy(update={"max_tokens": 1, "temperature": 0.0})
    response = await client.generate(request.model_copy(update={"sampling": sampling, "top_logprobs": 20, "constraint": None}))
    top = response.logprobs[0].top if response.logprobs else {}
    mass = {o: sum(math.exp(lp) for tok, lp in top.items() if tok.strip().lower() == o.lower()) for o in options}
    total = sum(mass.values())
    if total <= 0:
        said = response.text.strip().lower()
        picked = next((o for o in options if said.startswith(o.lower())), None)
        if picked is None:
            raise ValueError(f"the model answered {response.text!r}, none of {', '.join(options)}")
        return picked, {o: 1.0 if o == picked else 0.0 for o in options}
    probs = {o: m / total for o, m in mass.items()}
    return max(probs, key=probs.get), probs


def entity_label(entity: Entity) -> str:
    return f"{entity.text!r} [{entity.start}:{entity.end}]"


def record_item_error(record: Record, stage: str, entity: Entity, exc: BaseException, kind: str = "model") -> None:
    """A failed question marks its entity on the record; the stage and the record go on."""
    reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    record.errors.append(StageError(stage=stage, reason=f"entity {entity_label(entity)}: {reason}", line=record.line, kind=kind))


def mark(entity: Entity, source: str, *fields: str) -> None:
    """Say which stage and model set these fields of the entity."""
    entity.provenance = {**(entity.provenance or {}), **{f: source for f in fields}}


def query_text(entity: Entity, style: QueryStyle) -> str:
    """What to look for: the description from `expand`, the name, or both."""
    if style == "name" or not entity.description:
        return entity.text
    if style == "description":
        return entity.description
    return f"{entity.text}, {entity.description}"


def visual_text(record: Record, fields: Iterable[str], limit: int) -> str | None:
    """The first non-empty text view of the image (caption, visual context) the record carries."""
    for name in fields:
        value = getattr(record, name, None)
        if value and str(value).strip():
            return " ".join(str(value).split())[:limit]
    return None


def load_examples(source: str, needs: tuple[str, ...]) -> list[dict[str, Any]]:
    """Solved examples: a shipped pool name (`riveg_expand.v1`) or a JSONL path."""
    path = Path(source)
    if path.is_file():
        text, where = path.read_text(encoding="utf-8"), str(path)
    else:
        resource = PACKAGE_EXAMPLES / f"{source}.jsonl"
        if not resource.is_file():
            raise ConfigError(f"unknown example pool {source!r} (a shipped name or a JSONL path)")
        text, where = resource.read_text(encoding="utf-8"), f"prompts/examples/{source}.jsonl"
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}:{number}: not JSON: {exc.msg}") from exc
        missing = [k for k in needs if not item.get(k)]
        if missing:
            raise ConfigError(f"{where}:{number}: missing {', '.join(missing)}")
        out.append(item)
    return out


def one_line(text: str, limit: int = 200) -> str:
    """A model's description: first line, trimmed, without wrapping quotes."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first.strip().strip("\"'").strip()[:limit]
