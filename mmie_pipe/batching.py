"""Collect items submitted by concurrent coroutines into batches for one blocking call.

The runner keeps many records in flight, each awaiting `submit(item)`. Items are flushed as one
batch when `max_batch` are waiting or `max_wait_s` after the first arrived; the batch function
runs in a worker thread (the event loop stays free), one batch at a time, so a model is never
called from two threads at once and records arriving meanwhile form the next batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from .loop_local import LoopLocal

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(self, fn: Callable[[list[T]], Sequence[R]], *, max_batch: int = 32, max_wait_s: float = 0.005):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.batch_sizes: list[int] = []  # for tests and diagnostics
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._lock: LoopLocal[asyncio.Lock] = LoopLocal(asyncio.Lock)
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            task = asyncio.ensure_future(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        async with self._lock.get():
            live = [(item, future) for item, future in batch if not future.done()]  # skip cancelled
            if not live:
                return
            self.batch_sizes.append(len(live))
            try:
                results = await asyncio.to_thread(self.fn, [item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} items")
            except Exception as exc:  # noqa: BLE001 - every waiting record receives the failure
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                return
        for (_, future), result in zip(live, results):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        self._flush()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
