"""Where the benchmark data lives: `--data-root`, else `$MMIE_DATA_ROOT`, else `../shared/data`
relative to the working directory, then relative to the repository root."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "MMIE_DATA_ROOT"
RELATIVE_DEFAULT = Path("..") / "shared" / "data"
# The repository root is the parent of the `mmie_pipe` package directory.
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DataRoot:
    path: Path
    how: str  # human-readable: which rule chose it

    def __fspath__(self) -> str:
        return os.fspath(self.path)


class DataRootNotFound(FileNotFoundError):
    pass


def resolve_data_root(explicit: str | os.PathLike[str] | None = None) -> DataRoot:
    """The first existing candidate, with how it was chosen. Raises `DataRootNotFound` listing
    everything it tried. An explicit or environment root that does not exist is an error (no
    silent fallback to another copy)."""
    if explicit is not None:
        return _existing(Path(explicit), "--data-root")
    env = os.environ.get(ENV_VAR)
    if env:
        return _existing(Path(env), f"${ENV_VAR}")
    tried = []
    for base, how in ((Path.cwd(), "../shared/data from the working directory"), (REPO_ROOT, "../shared/data from the repository root")):
        candidate = (base / RELATIVE_DEFAULT).resolve()
        tried.append(str(candidate))
        if candidate.is_dir():
            return DataRoot(candidate, how)
    raise DataRootNotFound(
        f"no data root: pass --data-root or set ${ENV_VAR}; tried {', '.join(tried)}"
    )


def _existing(path: Path, how: str) -> DataRoot:
    if not path.is_dir():
        raise DataRootNotFound(f"data root {path} (from {how}) is not a directory")
    return DataRoot(path.resolve(), how)
