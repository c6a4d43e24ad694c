"""Local image tools (detectors, OCR engines, OFA) on the one read-through cache path.

A `ToolClient` is to a local tool what `ModelClient` is to a model backend: bound to a stage's name
and version, it keys each call by the tool's identity, the image's content hash and the request
(e.g. a detector's text queries), and only decodes the image on a miss. Hits and runs are counted
in the run's `CallStats`, so they show in the summary like model calls.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable

from .cache import GenerationCache, cache_key
from .calls import CallStats, through_cache
from .images import ImageOptions, decode_image, read_image_bytes

if TYPE_CHECKING:
    from PIL.Image import Image

    from .adapters.tools import LocalTool


class ToolClient:
    def __init__(
        self,
        tool: "LocalTool",
        cache: GenerationCache | None,
        *,
        stage: str,
        stage_version: int | str,
        stats: CallStats | None = None,
    ):
        self.tool = tool
        self.cache = cache
        self.stage = stage
        self.stage_version = stage_version
        self.stats = stats
        self._identity: dict[str, Any] | None = None

    def key(self, image_sha256: str, request: dict[str, Any]) -> str:
        if self._identity is None:
            self._identity = self.tool.identity()
        return cache_key(
            backend_kind=self.tool.kind,
            model_identity=self._identity,
            request={"image": image_sha256, **request},
            stage=self.stage,
            stage_version=self.stage_version,
        )

    async def run(
        self,
        image_ref: str,
        options: ImageOptions,
        request: dict[str, Any],
        compute: Callable[["Image"], dict[str, Any]],
    ) -> dict[str, Any]:
        """`compute(image)` runs in a worker thread on a miss and returns a JSON-able dict."""
        raw = await asyncio.to_thread(read_image_bytes, image_ref, options)

        async def on_miss() -> dict[str, Any]:
            loaded = await asyncio.to_thread(decode_image, raw, options)
            return await asyncio.to_thread(compute, loaded.image)

        value, _ = await through_cache(self.cache, self.key(raw.sha256, request), self.stage, self.stats, on_miss)
        return value
