"""Keeping many records in flight while writing them in input order.

The window slides on completions, not on the head: up to `width` records are being processed at
any moment, whatever the oldest one is doing. Finished records wait (in memory, at most
`buffer` of them) only for their turn to be written.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Awaitable, Callable, Generic, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[R]):
    __slots__ = ("task", "value", "done")

    def __init__(self, task: "asyncio.Task[R] | None" = None, value: Any = None):
        self.task = task
        self.value = value
        self.done = task is None


class OrderedWindow(Generic[T, R]):
    def __init__(self, width: int, buffer: int | None = None):
        self.width = max(1, width)
        self.buffer = max(self.width, buffer if buffer is not None else 16 * self.width)
        self.out_of_order = False  # set when `stop` wrote finished records past an unfinished one

    async def run(
        self,
        items: Iterable[T],
        start: Callable[[T], Awaitable[R] | R],
        emit: Callable[[R], None],
        *,
        flush: Callable[[], None] = lambda: None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Process `items`; `start(item)` returns a result or an awaitable for one. `emit` gets
        results in input order. Returns False if `should_stop` ended the run early; then the
        finished results are still emitted (out of order) and the unfinished are cancelled."""
        window: deque[_Slot[R]] = deque()
        running: dict[asyncio.Task[R], _Slot[R]] = {}
        source = iter(items)
        exhausted = False
        try:
            while True:
                while not exhausted and len(running) < self.width and len(window) < self.buffer and not should_stop():
                    item = next(source, _END)
                    if item is _END:
                        exhausted = True
                        break
                    result = start(item)
                    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                        task = asyncio.ensure_future(result)
                        running[task] = slot = _Slot(task)
                        window.append(slot)
                    else:
                        window.append(_Slot(value=result))
                while window and window[0].done:
                    emit(window.popleft().value)
                flush()
                if should_stop():
                    self._emit_finished(window, emit)
                    flush()
                    return False
                if not running:
                    if exhausted and not window:
                        return True
                    continue
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    slot = running.pop(task)
                    slot.value = task.result()  # a stage failure is already on the record
                    slot.done = True
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _emit_finished(self, window: "deque[_Slot[R]]", emit: Callable[[R], None]) -> None:
        skipped = False
        for slot in window:
            if slot.done:
                self.out_of_order |= skipped
                emit(slot.value)
            else:
                skipped = True
        window.clear()


_END: Any = object()
