"""asyncio helpers shared by the long-running loops (poller, load test).

Both park a coroutine on one future and wake it from a timer or from another
callback, whichever comes first; waking twice must be harmless.
"""

from __future__ import annotations

import asyncio

__all__ = ["wake"]


def wake(future: asyncio.Future[None]) -> None:
    """Resolve ``future`` unless something already did (a timer racing a nudge)."""
    if not future.done():
        future.set_result(None)
