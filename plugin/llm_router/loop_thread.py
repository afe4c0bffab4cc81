"""An asyncio event loop in a daemon thread: servers that tests and the demo run inside their own process."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any


def new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop where uvloop is installed, else the stdlib one."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopThread:
    """Runs `up()` on a fresh loop in a thread, serves until stop(), then runs `down()` there."""

    def __init__(self, name: str):
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, up: Callable[[], Awaitable[Any]], down: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> None:
        """Returns once `up()` has finished; re-raises what it raised; fails naming the thread after `timeout`."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = self._loop = new_loop()
            asyncio.set_event_loop(loop)

            async def main() -> None:
                self._stopped = asyncio.Event()
                try:
                    await up()
                except BaseException as exc:
                    errors.append(exc)
                    ready.set()
                    return
                ready.set()
                await self._stopped.wait()
                await down()

            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"{self.name} did not start within {timeout:g}s")
        if errors:
            self._thread = None
            raise errors[0]

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        """Run a coroutine on the loop from another thread; its result (or what it raised)."""
        if self._loop is None:
            raise RuntimeError(f"{self.name} is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to run `down()` and end; wait for the thread (no-op when not running)."""
        if self._thread is None or self._loop is None or self._stopped is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._stopped.set)
        except RuntimeError:  # the loop has already closed
            pass
        self._thread.join(timeout)
        self._thread = None
