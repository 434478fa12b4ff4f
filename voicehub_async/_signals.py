"""SIGINT/SIGTERM handlers on the running loop, for the long-running commands.

``voicehub campaign``, ``voicehub loadtest`` and ``voicehub simulate`` all
turn a signal into a graceful stop; what they do on it differs, how the
handler is installed and removed does not. Handlers can only be installed
from the main thread (and not at all on Windows): elsewhere nothing is
installed and the signal acts as usual (KeyboardInterrupt).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

__all__ = ["handle_signals"]


@contextlib.contextmanager
def handle_signals(
    handler: Callable[[int], None],
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[Callable[[], None]]:
    """Call ``handler(signum)`` on each of ``signals`` while inside the block.

    Yields a function that removes the handlers early (a "first Ctrl-C stops
    gracefully, the next one interrupts" handler calls it); they are removed
    on leaving the block in any case.
    """
    installed: list[signal.Signals] = []

    def restore() -> None:
        while installed:
            loop.remove_signal_handler(installed.pop())

    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    loop = asyncio.get_running_loop()
    try:
        for sig in signals:
            try:
                loop.add_signal_handler(sig, handler, int(sig))
            except (NotImplementedError, RuntimeError):  # Windows, or no signals here
                continue
            installed.append(sig)
        yield restore
    finally:
        restore()
