"""What a run did, counted as it goes: read by the progress bar, the CLI and the manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .calls import CallStats


@dataclass
class RunSummary:
    records: int = 0
    ok: int = 0
    errors: int = 0
    skipped_done: int = 0
    errors_by_stage: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    calls: CallStats = field(default_factory=CallStats)
    # Why the run stopped before the end of its input (error budget), or None.
    stopped: str | None = None

    def count(self, data: dict[str, Any]) -> None:
        """Count one written output line."""
        self.records += 1
        if data.get("errors"):
            self.errors += 1
            for err in data["errors"]:
                self.errors_by_stage[err["stage"]] = self.errors_by_stage.get(err["stage"], 0) + 1
        else:
            self.ok += 1

    def as_dict(self) -> dict[str, Any]:
        out = {
            "records": self.records,
            "ok": self.ok,
            "errors": self.errors,
            "resumed_skipped": self.skipped_done,
            "errors_by_stage": self.errors_by_stage,
            "seconds": round(self.seconds, 3),
            **self.calls.as_dict(),
        }
        if self.stopped:
            out["stopped"] = self.stopped
        return out
