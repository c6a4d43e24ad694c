"""Price tables: what a model's tokens cost, per million input and output tokens.

One YAML table per file (the shipped example, `prices/openai.yaml`, lists the OpenAI API); users
copy and edit it. Costs are estimates from token counts the backends report, never an invoice.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

SHIPPED_TABLE = resources.files("mmie_pipe") / "prices" / "openai.yaml"


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)  # per million input (prompt) tokens
    output: float = Field(ge=0)  # per million output (completion) tokens


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    currency: str = "USD"
    per_million_tokens: dict[str, Price] = Field(default_factory=dict)

    def price(self, model: str | None) -> Price | None:
        """Exact name first, then the most specific matching pattern (the longest)."""
        if not model:
            return None
        if model in self.per_million_tokens:
            return self.per_million_tokens[model]
        patterns = [p for p in self.per_million_tokens if any(c in p for c in "*?[") and fnmatch.fnmatchcase(model, p)]
        return self.per_million_tokens[max(patterns, key=len)] if patterns else None

    def cost(self, model: str | None, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self.price(model)
        if price is None:
            return None
        return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000


def load_prices(path: str | Path | None = None) -> PriceTable:
    """The table at `path`, or the shipped example table."""
    where = str(path) if path else "prices/openai.yaml"
    try:
        text = Path(path).read_text(encoding="utf-8") if path else SHIPPED_TABLE.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"price table {where}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"price table {where}: not valid YAML: {exc}") from exc
    try:
        return PriceTable.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"price table {where}: {loc}: {first['msg']}") from exc


@dataclass
class TokenBill:
    """Tokens per model and what they cost where the model has a price."""

    prompt_tokens: int
    completion_tokens: int
    cost: float | None  # None when some model with tokens has no price
    unpriced: list[str]


def bill(tokens_by_model: dict[str, dict[str, Any]], table: PriceTable, *, include_cached: bool = False) -> TokenBill:
    """Sum a run's `tokens_by_model` (see `CallStats.as_dict`); with `include_cached`, tokens that
    cache hits would have cost count too (what a fresh run pays)."""
    prompt = completion = 0
    cost = 0.0
    unpriced = []
    for model, counts in sorted(tokens_by_model.items()):
        p = counts.get("prompt", 0) + (counts.get("cached_prompt", 0) if include_cached else 0)
        c = counts.get("completion", 0) + (counts.get("cached_completion", 0) if include_cached else 0)
        prompt += p
        completion += c
        model_cost = table.cost(model, p, c)
        if model_cost is None:
            # A model without a price stays unpriced on a re-run answered from cache, so that run
            # does not claim to have cost nothing.
            if p or c or counts.get("cached_prompt", 0) or counts.get("cached_completion", 0):
                unpriced.append(model)
        else:
            cost += model_cost
    return TokenBill(prompt, completion, None if unpriced else cost, unpriced)


def format_cost(value: float | None, currency: str = "USD") -> str:
    if value is None:
        return "n/a"
    symbol = "$" if currency == "USD" else f"{currency} "
    return f"{symbol}{value:.4f}" if value < 100 else f"{symbol}{value:,.2f}"
