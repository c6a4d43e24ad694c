"""The run's progress bar: tqdm on a terminal, silent otherwise (CI logs stay readable)."""

from __future__ import annotations

import os
import sys

from .summary import RunSummary


class Progress:
    def __init__(self, enabled: bool | None, summary: RunSummary, total: int | None):
        self.summary = summary
        self.bar = None
        if enabled is None:
            enabled = sys.stderr.isatty() and not os.environ.get("CI")
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="rec", dynamic_ncols=True)

    def update(self) -> None:
        if self.bar is None:
            return
        c = self.summary.calls
        self.bar.update(1)
        self.bar.set_postfix(
            hits=c.cache_hits, errors=self.summary.errors, tokens=c.usage.prompt_tokens + c.usage.completion_tokens,
            refresh=False,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
