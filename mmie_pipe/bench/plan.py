"""How many model calls a cell still needs, and roughly how many tokens: for `--dry-run` and
`--budget`, before any backend starts.

A stage is planned when it builds its request from the input alone (it has `build_request` and no
earlier stage writes what it reads): its request for every record is built exactly as the run will
build it, and a call is needed when its cache key is not in the cache (identical requests count
once). Stages that decide their requests while running (per-item questions after a first answer)
cannot be counted ahead; the plan names them. Token counts are estimates: input tokens from the
prompt's characters (3 per token until a cell of the same model has run, then the ratio observed
there), and each call's `max_tokens` as its output (an upper bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..model_io import ModelRequest
from ..pricing import PriceTable
from ..runner import Runner, read_input

# Conservative for English text (BPE vocabularies average about 4); replaced by observed ratios.
CHARS_PER_TOKEN = 3.0


@dataclass
class CellPlan:
    records: int = 0
    calls: int = 0  # needed calls of the planned stages
    cached: int = 0  # planned requests already in the cache
    prompt_tokens: int = 0  # estimated, needed calls only
    completion_tokens: int = 0
    by_model: dict[str, list[int]] = field(default_factory=dict)  # model -> [prompt, completion] estimates
    chars_by_model: dict[str, int] = field(default_factory=dict)  # prompt characters of the needed calls
    # Token usage the cache holds for the planned requests already answered (exact, per model).
    cached_usage: dict[str, dict[str, int]] = field(default_factory=dict)
    unplanned: list[str] = field(default_factory=list)  # stages whose calls are decided while running

    @property
    def exact(self) -> bool:
        return not self.unplanned

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def cost(self, prices: PriceTable) -> float | None:
        total = 0.0
        for model, (prompt, completion) in self.by_model.items():
            cost = prices.cost(model, prompt, completion)
            if cost is None:
                if prompt or completion:
                    return None
                continue
            total += cost
        return total


def request_chars(request: ModelRequest) -> int:
    if request.prompt is not None:
        return len(request.prompt)
    total = 0
    for message in request.messages or ():
        if isinstance(message.content, str):
            total += len(message.content)
        else:
            total += sum(len(part.text) for part in message.content if getattr(part, "text", None))
    return total


def plan_cell(
    runner: Runner, input_path: Path, chars_per_token: dict[str, float] | None = None, seen: set[str] | None = None
) -> CellPlan:
    """`chars_per_token`: observed ratios per model name (from cells already run). `seen`: keys of
    requests that cells planned before this one will make (they will be in the cache by then)."""
    plan = CellPlan()
    ratios = chars_per_token or {}
    stages = runner.build_stages()
    written: set[str] = set()
    planned = []
    for stage in stages:
        needs = set(stage.reads) | set(getattr(stage, "optional_reads", ()))
        if stage.model is not None:
            if hasattr(stage, "build_request") and not (needs & written):
                planned.append(stage)
            else:
                plan.unplanned.append(stage.qualified_name)
        written |= set(stage.writes)
    seen = set() if seen is None else seen
    for item in read_input(input_path):
        plan.records += 1
        if item.record is None:
            continue
        for stage in planned:
            try:
                request = stage.build_request(item.record.model_copy(deep=True))
            except Exception:  # noqa: BLE001 - the run reports this record's error; it makes no call
                continue
            key = stage.model.key(request)
            if key in seen:
                plan.cached += 1
                continue
            stored = runner.cache.get(key)
            if stored is not None:
                seen.add(key)
                plan.cached += 1
                usage = stored.get("usage") or {}
                book = plan.cached_usage.setdefault(stage.model.model_name, {"prompt": 0, "completion": 0})
                book["prompt"] += int(usage.get("prompt_tokens", 0))
                book["completion"] += int(usage.get("completion_tokens", 0))
                continue
            seen.add(key)
            plan.calls += 1
            model = stage.model.model_name
            chars = request_chars(request)
            prompt = math.ceil(chars / ratios.get(model, CHARS_PER_TOKEN))
            completion = request.sampling.max_tokens
            plan.prompt_tokens += prompt
            plan.completion_tokens += completion
            book = plan.by_model.setdefault(model, [0, 0])
            book[0] += prompt
            book[1] += completion
            plan.chars_by_model[model] = plan.chars_by_model.get(model, 0) + chars
    return plan
