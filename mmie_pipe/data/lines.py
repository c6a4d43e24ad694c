"""Numbered text lines from plain files or zip members, with LF and CRLF endings both accepted."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

from .errors import DataFormatError


def numbered_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """Yield `(line_number, line)` (1-based, end-of-line stripped) from a UTF-8 text file."""
    path = Path(path)
    try:
        handle = open(path, encoding="utf-8", newline="")
    except FileNotFoundError:
        raise DataFormatError(path, None, "file not found") from None
    with handle:
        yield from _numbered(handle, path)


def numbered_zip_lines(archive: str | os.PathLike[str], member: str) -> Iterator[tuple[int, str]]:
    """Like `numbered_lines` for one member of a zip; errors name `archive!member`."""
    label = f"{os.fspath(archive)}!{member}"
    try:
        zf = zipfile.ZipFile(archive)
    except (FileNotFoundError, zipfile.BadZipFile) as exc:
        raise DataFormatError(archive, None, f"cannot open zip: {exc}") from None
    with zf:
        try:
            raw = zf.open(member)
        except KeyError:
            raise DataFormatError(label, None, f"no member {member!r} in archive") from None
        with io.TextIOWrapper(raw, encoding="utf-8", newline="") as handle:
            yield from _numbered(handle, label)


def _numbered(handle: io.TextIOBase, label: str | Path) -> Iterator[tuple[int, str]]:
    number = 0
    try:
        for number, line in enumerate(handle, 1):
            yield number, line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DataFormatError(label, number + 1, f"not valid UTF-8: {exc.reason}") from None
