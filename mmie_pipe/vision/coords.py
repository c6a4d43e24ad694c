"""Box coordinate conventions of vision-language models, converted to image pixels.

VLMs answer boxes in different frames: plain pixels of the image they were sent, fractions (0-1),
a 0-1000 grid (Qwen-VL, Qwen2-VL, CogVLM, Florence-style models), or Qwen2.5-VL's absolute pixels
of the image *after its processor resized it* (sides rounded to multiples of 28 and the area kept
within [min_pixels, max_pixels]). Everything here maps an answer back to the original image's
pixels and clips it, so `Box` always means Pascal-VOC pixels of the post's image.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

from ..records import Box
from .boxes import clip_box

Convention = Literal["pixels", "0-1", "0-1000", "qwen2.5-vl"]
CONVENTIONS: tuple[str, ...] = ("pixels", "0-1", "0-1000", "qwen2.5-vl")

# Qwen2.5-VL's image processor defaults (preprocessor_config.json of the released checkpoints).
QWEN_FACTOR = 28
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 28 * 28 * 16384


def qwen_resized(width: int, height: int, *, factor: int = QWEN_FACTOR, min_pixels: int = QWEN_MIN_PIXELS,
                 max_pixels: int = QWEN_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) the Qwen2.5-VL processor gives the model: each side a multiple of `factor`,
    aspect ratio kept as closely as that allows, area scaled into [min_pixels, max_pixels]."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        shrink = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / shrink / factor) * factor)
        w = max(factor, math.floor(width / shrink / factor) * factor)
    elif h * w < min_pixels:
        grow = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * grow / factor) * factor
        w = math.ceil(width * grow / factor) * factor
    return w, h


def to_pixels(
    coords: Sequence[float],
    convention: Convention,
    width: int,
    height: int,
    *,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
) -> Box | None:
    """A model's [x0, y0, x1, y1] in `convention` -> a clipped pixel box of the width x height
    image, or None when nothing of the box lies inside the image. Corners given in the wrong order
    are sorted."""
    if len(coords) != 4:
        raise ValueError(f"a box needs 4 numbers (x0, y0, x1, y1), got {len(coords)}")
    x0, y0, x1, y1 = (float(v) for v in coords)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError("box coordinates must be finite numbers")
    if convention == "pixels":
        sx, sy = 1.0, 1.0
    elif convention == "0-1":
        sx, sy = float(width), float(height)
    elif convention == "0-1000":
        sx, sy = width / 1000.0, height / 1000.0
    elif convention == "qwen2.5-vl":
        rw, rh = qwen_resized(width, height, min_pixels=min_pixels, max_pixels=max_pixels)
        sx, sy = width / rw, height / rh
    else:
        raise ValueError(f"unknown box convention {convention!r} (known: {', '.join(CONVENTIONS)})")
    return clip_box(x0 * sx, y0 * sy, x1 * sx, y1 * sy, width, height)
