"""Scores of a rerank run that was stopped early: before (the tagger's predictions) and after on the
records the rerank run finished, which are the first N of its input (a run writes in input order)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gem_common import fine_scores, type_changes


def main(before: Path, after: Path) -> dict:
    done = sum(1 for _ in open(after))
    first = after.parent / f"before-first{done}.jsonl"
    first.write_text("".join(open(before).readlines()[:done]))
    attempt = json.loads((after.parent / "manifest.json").read_text())["attempts"][-1]
    return {"records": done, "before": fine_scores(first), "after": fine_scores(after),
            "changes": type_changes(first, after),
            "counts": {k: v for k, v in attempt.items() if k.startswith("rerank.")}}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2])), indent=2))
