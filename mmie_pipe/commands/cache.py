"""`mmie-pipe cache info|clear [--stage NAME]`: inspect or empty the generation cache."""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

from ..cache import GenerationCache, default_cache_path, is_redis_url, public_location, reset_damaged
from ..errors import ConfigError, ExitCode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="inspect or clear the generation cache")
    p.add_argument("action", choices=["info", "clear"])
    p.add_argument("--stage", help="only this stage's entries (clear)")
    p.add_argument("--path", type=_location,
                   help="cache file or redis://host:port/db URL (default: $MMIE_CACHE_DIR or the user cache dir)")
    p.set_defaults(func=cache_command)


def _location(text: str) -> str | Path:
    return text if is_redis_url(text) else Path(text)


def cache_command(args: argparse.Namespace) -> int:
    """Both actions work on a damaged file: `info` says so, `clear` moves it aside and starts anew."""
    path = args.path or default_cache_path()
    shown = public_location(path)
    if args.action == "clear" and isinstance(path, Path) and path.exists() and reset_damaged(path):
        GenerationCache(path).close()
        print(f"{path} was damaged: moved aside to {path}.damaged; a new empty cache is in its place")
        return ExitCode.OK
    try:
        cache = GenerationCache(path)
    except ConfigError as exc:
        if args.action == "info":
            print(json.dumps({"path": shown, "usable": False, "problem": str(exc)}, indent=2))
        else:
            print(f"error: {exc}")
        return ExitCode.REFUSED
    try:
        if args.action == "info":
            print(json.dumps(cache.info(), indent=2))
        else:
            removed = cache.clear(args.stage)
            print(f"removed {removed} entries" + (f" of stage {args.stage}" if args.stage else ""))
    except sqlite3.DatabaseError as exc:
        print(f"error: the cache {shown} is damaged ({exc}); `mmie-pipe cache clear --path {path}` resets it")
        return ExitCode.REFUSED
    finally:
        cache.close()
    return ExitCode.OK
