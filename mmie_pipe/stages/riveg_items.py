"""What RiVEG's three stages share: yes/no probabilities, entity bookkeeping, example files.

Every question about one entity is one request; a record's requests run concurrently through the
call path (`calls.fan_out`), and a failed question becomes an error on the record naming its entity
while the other entities keep their answers.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Literal

from ..calls import Outcome
from ..errors import ConfigError
from ..model_io import ModelRequest
from ..records import Entity, Record, StageError

PACKAGE_EXAMPLES = resources.files("mmie_pipe") / "prompts" / "examples"
QueryStyle = Literal["description", "name", "both"]
YES_NO = ("yes", "no")


async def yes_probability(client: Any, request: ModelRequest) -> float:
    """P(yes) of a yes/no question, normalised over the two answers (`ModelClient.choose`: one
    request, first-token probabilities on servers, one likelihood pass in transformers)."""
    response = await client.choose(request, YES_NO)
    return float(response.choice.probs["yes"]) if response.choice else float(response.text == "yes")


def entity_label(entity: Entity) -> str:
    return f"{entity.text!r} [{entity.start}:{entity.end}]"


def record_item_error(record: Record, stage: str, entity: Entity, outcome: Outcome, kind: str = "model") -> None:
    """A failed question marks its entity on the record; the stage and the record go on."""
    exc = outcome.exception
    text = str(exc) if exc is not None and str(exc) else (outcome.error or type(exc).__name__)
    reason = text.splitlines()[0][:300]
    record.errors.append(StageError(stage=stage, reason=f"entity {entity_label(entity)}: {reason}", line=record.line, kind=kind))


def mark(entity: Entity, source: str, *fields: str) -> None:
    """Say which stage and model set these fields of the entity."""
    entity.provenance = {**entity.provenance, **{f: source for f in fields}}


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
