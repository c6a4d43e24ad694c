"""asyncio primitives bound to the loop that uses them: a backend outlives one `asyncio.run`
(benchmarks and notebooks run many), and a Semaphore or Lock from a finished loop refuses to work
in the next one."""

from __future__ import annotations

import asyncio
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class LoopLocal(Generic[T]):
    """`get()` returns the object made for the running loop, making a new one for a new loop."""

    def __init__(self, factory: Callable[[], T]):
        self._factory = factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._value: T | None = None

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._value is None:
            self._loop, self._value = loop, self._factory()
        return self._value
