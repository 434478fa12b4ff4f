"""Stop early when nothing can work: the campaign's breaker.

A base URL with a typo, a service that is down or a revoked key make every
trigger fail the same way. Retrying each row's trigger a few times, row after
row, turns a 3,000-row campaign into 12,000 connection attempts and minutes
of "dialing" while nothing is placed. The breaker watches every trigger
attempt and says stop when:

* ``max_failures`` attempts in a row could not connect (default 20), or the
  service has been unreachable for ``max_silence`` seconds (default 30) with
  no answer in between: "cannot reach <host>";
* the service answers 401 or 403: the key is refused, and every other row
  would be refused the same way.

Any answer from the service (even a 429 or a 500) proves it reachable and
starts the count again. The campaign then stops dialing: rows not sent stay
pending, and a resume (once the cause is fixed) dials them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final, Literal

import attrs

from voicehub_async.errors import (
    AmbiguousTriggerError,
    APIConnectionError,
    APIStatusError,
)

__all__ = ["Breaker", "StopCause"]

_MAX_FAILURES: Final = 20
_MAX_SILENCE: Final = 30.0


@attrs.frozen
class StopCause:
    """Why a campaign stopped dialing early: ``kind`` and a one-line ``message``."""

    kind: Literal["unreachable", "refused"]
    message: str

    def __str__(self) -> str:
        return self.message


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class Breaker:
    """Counts trigger attempts that could not reach the service; see the module doc.

    ``host`` names the service in messages (the base URL's host, never a
    key). ``clock`` is monotonic seconds (tests).
    """

    def __init__(
        self,
        host: str,
        *,
        max_failures: int = _MAX_FAILURES,
        max_silence: float = _MAX_SILENCE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        if not max_silence > 0:
            raise ValueError("max_silence must be > 0 seconds")
        self.host = host
        self.max_failures = max_failures
        self.max_silence = float(max_silence)
        self._clock = clock
        self._failures = 0
        self._since: float | None = None
        self._last: str | None = None
        self.cause: StopCause | None = None

    def __repr__(self) -> str:
        return f"<Breaker host={self.host!r} failures={self._failures} tripped={self.tripped}>"

    @property
    def tripped(self) -> bool:
        return self.cause is not None

    @property
    def failures(self) -> int:
        """Attempts in a row that could not connect."""
        return self._failures

    @property
    def trouble(self) -> str | None:
        """While attempts are failing to connect: ``cannot reach <host> (<error>)``."""
        if self.cause is not None:
            return self.cause.message
        if not self._failures:
            return None
        return f"cannot reach {self.host} ({self._last})"

    def attempt(self, error: BaseException | None) -> StopCause | None:
        """Note one trigger attempt's outcome (None: it succeeded); returns the
        cause when the campaign must stop now (once: later calls return None)."""
        if self.cause is not None:
            return None
        cause = error.cause if isinstance(error, AmbiguousTriggerError) else error
        if isinstance(cause, APIConnectionError) and not cause.sent:
            now = self._clock()
            if self._failures == 0:
                self._since = now
            self._failures += 1
            self._last = _one_line(cause)
            assert self._since is not None
            silent = now - self._since
            if self._failures >= self.max_failures or silent >= self.max_silence:
                self.cause = StopCause(
                    "unreachable",
                    f"cannot reach {self.host}: {self._failures} connection attempts in a row "
                    f"failed over {silent:.0f}s ({self._last}); check --base-url and the "
                    "network, then run the same command again to resume",
                )
                return self.cause
            return None
        self._failures = 0
        self._since = None
        if isinstance(cause, APIStatusError) and cause.status in (401, 403):
            what = "refused the API key (401)" if cause.status == 401 else "refused access (403)"
            self.cause = StopCause(
                "refused",
                f"{self.host} {what}: {_one_line(cause)}; check VOICEHUB_API_KEY, then run "
                "the same command again to resume",
            )
            return self.cause
        return None
