"""Caption files, keyed by image id without extension (`71044`, `16_05_01_127`)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from .build import image_stem
from .errors import DataFormatError
from .lines import numbered_lines

OWL_PREFIX = "imgid:"
OWL_SEPARATOR = "###"


def iter_blip2_captions(path: str | os.PathLike[str]) -> Iterator[tuple[str, str]]:
    """`(image id, caption)` from BLIP-2 lines `<id>.jpg :<caption>`."""
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        name, sep, caption = line.partition(" :")
        if not sep or not name.strip():
            raise DataFormatError(path, number, f"expected '<id>.jpg :<caption>', got {line[:80]!r}")
        yield image_stem(name.strip()), caption.strip()


def iter_owl_captions(path: str | os.PathLike[str]) -> Iterator[tuple[str, str]]:
    """`(image id, caption)` from mPLUG-Owl `imgid:<id>###<caption>` blocks spanning several lines."""
    image_id: str | None = None
    parts: list[str] = []
    for number, line in numbered_lines(path):
        if line.startswith(OWL_PREFIX):
            if image_id is not None:
                yield image_id, "\n".join(parts).strip()
            head, sep, first = line[len(OWL_PREFIX) :].partition(OWL_SEPARATOR)
            if not sep or not head.strip():
                raise DataFormatError(path, number, f"expected 'imgid:<id>###<caption>', got {line[:80]!r}")
            image_id, parts = image_stem(head.strip()), [first]
        elif image_id is None:
            if line.strip():
                raise DataFormatError(path, number, "caption text before the first 'imgid:' line")
        else:
            parts.append(line)
    if image_id is not None:
        yield image_id, "\n".join(parts).strip()


def read_captions(paths: list[str | os.PathLike[str]], kind: str) -> dict[str, str]:
    """Union of caption files of one captioner (`blip2` or `owl`); a later file wins on a clash."""
    reader = {"blip2": iter_blip2_captions, "owl": iter_owl_captions}.get(kind)
    if reader is None:
        raise ValueError(f"unknown caption kind {kind!r}; expected blip2 or owl")
    captions: dict[str, str] = {}
    for path in paths:
        captions.update(reader(path))
    return captions
