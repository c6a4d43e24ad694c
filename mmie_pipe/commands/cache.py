"""`mmie-pipe cache info|clear [--stage NAME]`: inspect or empty the generation cache."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..cache import GenerationCache


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="inspect or clear the generation cache")
    p.add_argument("action", choices=["info", "clear"])
    p.add_argument("--stage", help="only this stage's entries (clear)")
    p.add_argument("--path", type=Path, help="cache file (default: $MMIE_CACHE_DIR or the user cache dir)")
    p.set_defaults(func=cache_command)


def cache_command(args: argparse.Namespace) -> int:
    cache = GenerationCache(args.path)
    if args.action == "info":
        print(json.dumps(cache.info(), indent=2))
    else:
        removed = cache.clear(args.stage)
        print(f"removed {removed} entries" + (f" of stage {args.stage}" if args.stage else ""))
    return 0
