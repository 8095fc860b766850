"""Running coroutines together: all their results, or the first failure with the others cancelled
(asyncio.gather alone would leave them running; TaskGroup would wrap the error in an ExceptionGroup);
and the background tasks services run beside the server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


async def all_or_nothing(coroutines: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class Background:
    """A coroutine that runs beside the server: started with it, cancelled (and awaited) when it stops."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._task = asyncio.create_task(coroutine, name=self._name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def every(seconds: float, step: Callable[[], Awaitable[object]], what: str) -> None:
    """Run `step` now and every `seconds`, for ever; a failure (the database away for a while) is logged
    and the next round tries again."""
    while True:
        try:
            await step()
        except Exception:
            log.warning("%s failed; trying again in %.0f s", what, seconds, exc_info=True)
        await asyncio.sleep(seconds)
