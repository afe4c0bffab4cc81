"""One background asyncio task owned by an object (state sync, secret refresh)."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class BackgroundTask:
    """Starts a coroutine once on the running loop; stop() cancels it and waits for it."""

    def __init__(self, run: Callable[[], Coroutine[Any, Any, None]], name: str):
        self._run = run
        self._name = name
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
