"""The toolkit's JSONL: one `Record` per line, read with errors naming file and line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from typing import IO

from pydantic import ValidationError

from ..records import Record, StageError
from .errors import DataFormatError
from .lines import numbered_lines


def iter_jsonl_records(path: str | os.PathLike[str], *, run_errors: bool = False) -> Iterator[Record]:
    """Stream `Record`s; blank lines are skipped; a bad line raises `DataFormatError`.

    With `run_errors`, a run's error line for an unreadable input (only `id`, `line` and `errors`)
    becomes an empty record carrying its errors, so it scores as an empty prediction."""
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, number, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        if run_errors and isinstance(data, dict) and data.get("errors") and "text" not in data and "id" in data:
            errors = [StageError.model_validate(e) for e in data["errors"]]
            # Unvalidated on purpose: the input had no usable text; only id and errors matter here.
            yield Record.model_construct(id=str(data["id"]), text="", errors=errors, gold=None, entities=None, relations=None)
            continue
        try:
            yield Record.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "record"
            more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise DataFormatError(path, number, f"not a valid record: {where}: {first['msg']}{more}") from None


def iter_prediction_records(path: str | os.PathLike[str]) -> Iterator[Record]:
    """A run's predictions.jsonl, input error lines included (see `iter_jsonl_records`)."""
    return iter_jsonl_records(path, run_errors=True)


def record_json(record: Record) -> str:
    """One JSONL line for the toolkit's input: unset optional stage outputs are left out."""
    data = record.model_dump(mode="json", exclude_none=True, exclude_defaults=False)
    # Keep `image` explicit (null) and drop empty bookkeeping the input never carries.
    data["image"] = record.image
    for empty in ("errors", "provenance"):
        if not data.get(empty):
            data.pop(empty, None)
    return json.dumps(data, ensure_ascii=False)


def write_jsonl(records: Iterable[Record], out: IO[str]) -> int:
    n = 0
    for record in records:
        out.write(record_json(record))
        out.write("\n")
        n += 1
    return n
