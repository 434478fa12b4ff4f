"""Run a :class:`Simulator` on its own event loop in a daemon thread.

This is what the pytest fixtures use: the server keeps answering while a
synchronous test blocks, and it does not depend on (or interfere with) the
event loop of whatever async test framework drives the client.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType

from .calls import SimulatedCall
from .config import SimulatorConfig
from .faults import AnyFault
from .server import Simulator, TriggerRecord

__all__ = ["SimulatorThread"]

#: Real seconds to wait for the server thread to start or stop.
_THREAD_TIMEOUT = 10.0


class SimulatorThread:
    """A :class:`Simulator` served from a background thread.

    Use it as a context manager (``with SimulatorThread(config) as sim:``) or
    call :meth:`start`/:meth:`stop`. It exposes the same observations and
    controls as :class:`Simulator`; the controls (:meth:`inject`,
    :meth:`set_status`, :meth:`set_outcome`) are safe to call from the test's
    thread, and the observations are live views of state the server thread
    appends to (copy them, e.g. ``list(sim.triggers)``, to get a snapshot).
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        trigger_sink: Callable[[TriggerRecord], None] | None = None,
    ) -> None:
        #: The underlying server (its state is owned by the server thread).
        self.simulator = Simulator(
            config,
            host=host,
            port=port,
            clock=clock,
            wall_clock=wall_clock,
            trigger_sink=trigger_sink,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    # ------------------------------------------------------------------ life

    def start(self) -> SimulatorThread:
        """Start the thread and wait until the server listens; re-raises a
        failure to bind. Returns self."""
        if self._thread is not None:
            raise RuntimeError("a SimulatorThread can only be started once")
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="voicehub-simulator", daemon=True
        )
        self._thread.start()
        try:
            ready.result(timeout=_THREAD_TIMEOUT)
        except BaseException:
            self._thread.join(_THREAD_TIMEOUT)
            raise
        return self

    def _run(self, ready: Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        finally:
            loop.close()

    async def _serve(self, ready: Future[None]) -> None:
        stopped = self._stopped = asyncio.Event()
        try:
            await self.simulator.start()
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            await stopped.wait()
        finally:
            await self.simulator.stop()

    def stop(self) -> None:
        """Stop the server and join the thread (idempotent)."""
        thread, loop, stopped = self._thread, self._loop, self._stopped
        if thread is None or loop is None or stopped is None or not thread.is_alive():
            return
        # The loop may close between the check and the call if the thread
        # ended on its own; nothing is left to stop then.
        try:
            loop.call_soon_threadsafe(stopped.set)
        except RuntimeError:
            pass
        thread.join(_THREAD_TIMEOUT)

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ delegation

    @property
    def config(self) -> SimulatorConfig:
        """The simulator's configuration."""
        return self.simulator.config

    @property
    def port(self) -> int:
        """The bound port."""
        return self.simulator.port

    @property
    def base_url(self) -> str:
        """``http://host:port`` to give a client as its base URL."""
        return self.simulator.base_url

    @property
    def api_key(self) -> str:
        """The (primary) API key the simulator accepts."""
        return self.simulator.api_key

    @property
    def triggers(self) -> list[TriggerRecord]:
        """The live trigger log (see :attr:`Simulator.triggers`)."""
        return self.simulator.triggers

    @property
    def calls(self) -> dict[str, SimulatedCall]:
        """The live id → call mapping (see :attr:`Simulator.calls`)."""
        return self.simulator.calls

    @property
    def request_count(self) -> collections.Counter[str]:
        """Requests per endpoint name (see :attr:`Simulator.request_count`)."""
        return self.simulator.request_count

    @property
    def trigger_count(self) -> int:
        """Authenticated trigger requests."""
        return self.simulator.trigger_count

    @property
    def created_count(self) -> int:
        """Calls created."""
        return self.simulator.created_count

    def calls_placed_to(self, number: str) -> int:
        """How many calls were created to ``number``."""
        return self.simulator.calls_placed_to(number)

    def placed_counts(self) -> collections.Counter[str]:
        """A copy of the number → created calls counter."""
        return self.simulator.placed_counts()

    def live_calls(self, api_key: str | None = None) -> int:
        """Calls of ``api_key`` live now (see :meth:`Simulator.live_calls`)."""
        return self.simulator.live_calls(api_key)

    def max_live_seen(self, api_key: str | None = None) -> int:
        """The most live calls of ``api_key`` seen at a trigger (see
        :meth:`Simulator.max_live_seen`)."""
        return self.simulator.max_live_seen(api_key)

    def inject(self, fault: AnyFault, endpoint: str = "any", times: int | None = 1) -> None:
        """Queue a scripted fault (see :meth:`Simulator.inject`)."""
        self.simulator.inject(fault, endpoint, times)

    def clear_faults(self) -> None:
        """Forget scripted faults not consumed yet."""
        self.simulator.clear_faults()

    def set_status(self, call_id: str, status: str | None) -> None:
        """Pin a call's status (see :meth:`Simulator.set_status`)."""
        self.simulator.set_status(call_id, status)

    def set_outcome(self, call_id: str, outcome: str) -> None:
        """Change how a call will end (see :meth:`Simulator.set_outcome`)."""
        self.simulator.set_outcome(call_id, outcome)

    def status_of(self, call_id: str) -> str:
        """A call's current status."""
        return self.simulator.status_of(call_id)
