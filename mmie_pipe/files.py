"""Model files: content hashes for model identities, and data files inside installed packages."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    memo = _memo_path()
    token = f"{Path(path).resolve()}:{size}:{mtime_ns}"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if token in known:
        return known[token]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    known[token] = digest.hexdigest()
    try:  # memoised on disk: hashing a GGUF of hundreds of MB at every run start is wasted time
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, memo)
    except OSError:
        pass
    return known[token]


def _memo_path() -> Path:
    base = os.environ.get("MMIE_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "mmie-pipe") / "file-hashes.json"


def file_sha256(path: str | Path) -> str:
    """Content hash of a model file, computed once per (path, size, mtime)."""
    stat = Path(path).stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def dir_sha256(path: str | Path) -> str | None:
    """Identity of a model or adapter folder: every file's relative name and content hash (each
    memoised by path, size and mtime), so a retrained adapter of the same size is a new identity.
    None when `path` is not a local folder (e.g. a hub name)."""
    root = Path(path)
    if not root.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(root).as_posix()}:{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations)), *parts)
    return candidate if candidate.is_file() else None

