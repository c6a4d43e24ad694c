"""The one exception every loader raises for bad input, so callers can point at the exact line."""

from __future__ import annotations

import os


class DataFormatError(ValueError):
    """A malformed line in a data file. `str()` reads `FILE:LINE: message` like a compiler error."""

    def __init__(self, file: str | os.PathLike[str], line: int | None, message: str) -> None:
        self.file = os.fspath(file)
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"
