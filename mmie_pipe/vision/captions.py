"""Precomputed captions (BLIP-2 / mPLUG-Owl files) looked up by image id.

The files are parsed by the data loaders (`mmie_pipe.data.captions`); this module only keys a
record to its image id and keeps each file parsed once per process.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import PurePosixPath, PureWindowsPath

from ..records import Record


def image_key(record: Record) -> str | None:
    """The id caption files use: `meta.image_id`, else the image file name, without extension."""
    from ..data.build import image_stem

    image_id = record.meta.get("image_id")
    if image_id:
        return image_stem(str(image_id))
    if record.image:
        name = PureWindowsPath(record.image).name if "\\" in record.image else PurePosixPath(record.image).name
        stem = name.rsplit(".", 1)[0] if "." in name else name
        return stem or None
    return None


@lru_cache(maxsize=8)
def caption_index(paths: tuple[str, ...], kind: str) -> dict[str, str]:
    from ..data.captions import read_captions

    return read_captions(list(paths), kind)
