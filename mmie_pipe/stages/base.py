"""What a stage is: a name, a version, typed parameters, the record fields it reads and writes.

A stage works on one record at a time (`process`), awaiting model calls through its `ModelClient`;
the runner keeps many records in flight, so a stage never manages concurrency itself.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..cache import GenerationCache
from ..calls import CallStats, ModelClient
from ..records import Record

log = logging.getLogger("mmie_pipe.stages")


class StageParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FanOutParams(StageParams):
    """For stages that ask one record several questions sharing a prompt prefix."""

    # Ask the first question alone, then the rest, so they reuse its prefix from the server's
    # prompt cache (see `calls.fan_out`; measured in docs/benchmarks.md).
    warm_prefix: bool = True


@dataclass(frozen=True)
class Role:
    """A model a stage uses, bound by name to one of the pipeline's backends (`llm`, `vlm`...).

    `needs` are backend capabilities (see `adapters.base.CAPABILITIES`) that `validate` checks
    against the bound backend before anything loads."""

    needs: frozenset[str] = frozenset()
    required: bool = True
    description: str = ""


@dataclass
class StageContext:
    """Run-wide facts a stage may use. `notes` collects one-time messages for the log and manifest."""

    run_dir: Path | None = None
    # Folder of the input file: relative image paths resolve against it, and by default local
    # images must stay inside it.
    input_dir: Path | None = None
    seed: int = 0
    # The run's generation cache and counters, for non-LLM tools (detector, OCR) that cache per
    # image hash, so their hits and runs show in the run summary like model calls.
    cache: GenerationCache | None = None
    stats: CallStats | None = None
    notes: list[str] = field(default_factory=list)

    def note_once(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)
            log.info(message)


class Stage(ABC):
    name: ClassVar[str]
    version: ClassVar[int] = 1
    Params: ClassVar[type[StageParams]] = StageParams
    reads: ClassVar[tuple[str, ...]] = ()
    optional_reads: ClassVar[tuple[str, ...]] = ()  # used when present, never required
    writes: ClassVar[tuple[str, ...]] = ()
    # The models this stage calls, by role; the first role is the one `backend:` binds in YAML.
    roles: ClassVar[dict[str, Role]] = {}
    @classmethod
    def role_needs(cls, params: StageParams) -> dict[str, frozenset[str]]:
        """Capabilities each role needs with these parameters (a stage may need more in some modes)."""
        return {name: role.needs for name, role in cls.roles.items()}

    @classmethod
    def primary_role(cls) -> str | None:
        return next(iter(cls.roles), None)

    def __init__(self, params: StageParams, model: ModelClient | None, context: StageContext):
        self.params = params
        self.model = model
        self.context = context
        # Every bound role's client; the runner fills it. `model` is the primary role's client.
        primary = self.primary_role()
        self.models: dict[str, ModelClient | None] = {name: None for name in self.roles}
        if primary is not None:
            self.models[primary] = model

    def bind_models(self, clients: dict[str, ModelClient]) -> None:
        self.models.update(clients)
        primary = self.primary_role()
        if primary is not None:
            self.model = self.models.get(primary)

    @property
    def qualified_name(self) -> str:
        return f"{self.name}.v{self.version}"

    async def setup(self) -> None:
        """Load resources once per run (after backends have started)."""

    async def teardown(self) -> None:
        """Release what `setup` loaded."""

    def describe(self) -> dict[str, Any]:
        return {"stage": self.qualified_name, "params": self.params.model_dump(mode="json")}

    @abstractmethod
    async def process(self, record: Record) -> None:
        """Read `reads` from the record and set `writes` on it. Raise to report a per-record error."""
