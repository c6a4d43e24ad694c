"""Record I/O for a run: the input reader, the output line writer, and the repair of a run's
predictions file. Any bytes in, a clear per-record error out; nothing here ever raises on content.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import ValidationError

from .records import Record, StageError

BOM = b"\xef\xbb\xbf"
# A JSON escape of a UTF-16 surrogate: only then can a decoded string hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
# Deeper JSON is refused on input: writing it back would exhaust the recursion limit later.
MAX_DEPTH = 100
# Key under `provenance` that ties an output to the exact input line it came from (resume check).
INPUT_PROVENANCE = "input"


@dataclass
class InputLine:
    line: int
    record: Record | None
    error: str | None = None
    raw_id: str | None = None
    sha256: str = ""

    @property
    def input_tag(self) -> str:
        return f"sha256:{self.sha256}"


def line_hash(raw: bytes) -> str:
    return hashlib.sha256(raw.rstrip(b"\r\n")).hexdigest()[:32]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_input(path: Path) -> Iterator[InputLine]:
    """Stream the input; a bad line becomes an `InputLine` with an error, never an exception."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            if not raw.strip():
                continue
            yield parse_input_line(number, raw)


def parse_input_line(number: int, raw: bytes) -> InputLine:
    digest = line_hash(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InputLine(number, None, f"invalid UTF-8 at byte {exc.start} of the line", sha256=digest)
    data, problem = _loads(text)
    if problem is not None:
        return InputLine(number, None, problem, sha256=digest)
    if not isinstance(data, dict):
        return InputLine(number, None, f"expected a JSON object, got {type(data).__name__}", sha256=digest)
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and nesting_depth(data) > MAX_DEPTH:
        return InputLine(number, None, f"malformed JSON: nested too deeply (over {MAX_DEPTH} levels)", sha256=digest)
    raw_id = _printable_id(data.get("id"))
    if _SURROGATE_ESCAPE.search(raw):
        where = find_lone_surrogate(data)
        if where is not None:
            return InputLine(number, None, f"{where}: contains a lone UTF-16 surrogate (not valid Unicode text)",
                             raw_id=raw_id, sha256=digest)
    try:
        record = Record.model_validate({**data, "line": number, "errors": []})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in exc.errors()
        )
        return InputLine(number, None, f"invalid record: {problems}", raw_id=raw_id, sha256=digest)
    except RecursionError:
        return InputLine(number, None, "invalid record: nested too deeply", raw_id=raw_id, sha256=digest)
    return InputLine(number, record, raw_id=raw_id, sha256=digest)


def _loads(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"malformed JSON: {exc.msg} at column {exc.colno}"
    except RecursionError:
        return None, "malformed JSON: nested too deeply to read"


def _printable_id(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value)
    return None if find_lone_surrogate(text) is not None else text[:200]


def nesting_depth(value: Any) -> int:
    """Depth of nested lists and dicts, computed without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def find_lone_surrogate(value: Any) -> str | None:
    """Path of the first string holding a lone surrogate, or None. Iterative: depth is unbounded."""
    stack: list[tuple[str, Any]] = [("record", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return where
        elif isinstance(item, dict):
            for key, child in item.items():
                if find_lone_surrogate_in_str(str(key)) is not None:
                    return f"{where} (a key)"
                stack.append((key if where == "record" else f"{where}.{key}", child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(item))
    return None


def find_lone_surrogate_in_str(text: str) -> int | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def error_output(item: InputLine) -> dict[str, Any]:
    return {
        "id": item.raw_id or f"line-{item.line}",
        "line": item.line,
        "errors": [StageError(stage="input", reason=item.error or "unknown", line=item.line, kind="input").model_dump()],
    }


def record_output(record: Record, item: InputLine | None = None) -> dict[str, Any]:
    data = record.model_dump(mode="json", exclude_none=True)
    if item is not None:
        data.setdefault("provenance", {})[INPUT_PROVENANCE] = item.input_tag
    return data


def output_line(data: dict[str, Any]) -> str:
    """One JSONL line. Text the UTF-8 codec cannot carry (a model echoing a lone surrogate) is
    escaped rather than allowed to crash the write."""
    text = json.dumps(data, ensure_ascii=False)
    if find_lone_surrogate_in_str(text) is not None:
        text = json.dumps(data, ensure_ascii=True)
    return text + "\n"


# -- the predictions file of a run: repair on resume ---------------------------------------------


def parse_output_line(raw: bytes) -> dict[str, Any] | None:
    """A predictions line as a dict, or None for anything else (cut short, garbage, NUL bytes)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return data if isinstance(data, dict) and isinstance(data.get("line"), int) else None


def cut_partial_tail(predictions: Path) -> None:
    """Drop a last line cut short by an interruption, so appended records start on a new line."""
    with predictions.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        chunk = 1 << 16
        pos = size
        while pos > 0:
            start = max(0, pos - chunk)
            handle.seek(start)
            block = handle.read(pos - start)
            newline = block.rfind(b"\n")
            if newline != -1:
                handle.truncate(start + newline + 1)
                return
            pos = start
        handle.truncate(0)


def finished_records(predictions: Path) -> dict[int, str]:
    """line -> input tag of records already written without error. A record written before input
    tags existed, an unreadable line or an error record is redone."""
    done: dict[int, str] = {}
    with predictions.open("rb") as handle:
        for raw in handle:
            data = parse_output_line(raw)
            if data is None or data.get("errors"):
                continue
            provenance = data.get("provenance")
            tag = provenance.get(INPUT_PROVENANCE) if isinstance(provenance, dict) else None
            if isinstance(tag, str):
                done[data["line"]] = tag
    return done


def rewrite_in_order(predictions: Path, keep: Callable[[dict[str, Any]], bool] | None = None) -> int:
    """Keep one output per input line, the newest (a retried error is replaced), in input order.
    Lines that are not records (garbage bytes) and outputs `keep` rejects (their input line
    changed) are dropped. Holds only (line, offset) pairs in memory. Returns lines dropped."""
    latest: dict[int, int] = {}
    dropped = 0
    offset = 0
    with predictions.open("rb") as handle:
        for raw in handle:
            data = parse_output_line(raw)
            if data is None or (keep is not None and not keep(data)):
                dropped += 1 if raw.strip() else 0
            else:
                latest[data["line"]] = offset
            offset += len(raw)
    tmp = predictions.with_suffix(".jsonl.tmp")
    with predictions.open("rb") as src, tmp.open("wb") as dst:
        for line in sorted(latest):
            src.seek(latest[line])
            row = src.readline()
            dst.write(row if row.endswith(b"\n") else row + b"\n")
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, predictions)
    return dropped
