"""The trigger log as a file: one JSON line per trigger received, as it comes.

``voicehub simulate --trigger-log FILE`` gives command-line users what
``Simulator.triggers`` gives Python tests: how many triggers (and calls) each
number got. Each line is written and flushed when the trigger is answered (or
its connection dropped), so another process can follow the file while the
simulator runs, and a crash loses nothing already answered.

A line holds what a count needs: the number, agent, schedule and source
fields as sent, whether a call was created and its id, the HTTP status
answered, the key's live calls at that trigger and the wall time. The call
``context`` is left out: it is the callee's personal data and counting needs
none of it. The API key is never written.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import TriggerRecord

__all__ = ["TriggerLogFile", "format_summary"]


def _line(record: TriggerRecord, wall: float) -> dict[str, Any]:
    return {
        "time": datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="milliseconds"),
        "to": record.to,
        "agent_id": record.agent_id,
        "scheduled_at": record.scheduled_at,
        "from": record.from_number,
        "created": record.created,
        "call_id": record.call_id,
        "answered_status": record.answered_status,
        "live_calls": record.live_calls,
    }


class TriggerLogFile:
    """Writes each :class:`TriggerRecord` handed to it as a JSON line, flushed.

    Use it as the simulator's ``trigger_sink``. It counts as it writes
    (:attr:`triggers` and :attr:`calls` per number), so the summary printed at
    the end agrees with the file by construction. The file is truncated when
    opened: one run, one log.
    """

    def __init__(self, path: str | Path, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._wall_clock = wall_clock
        self._file: IO[str] | None = self.path.open("w", encoding="utf-8")
        #: Triggers received per number (``to`` as sent; None when absent).
        self.triggers: collections.Counter[str | None] = collections.Counter()
        #: Calls created per number.
        self.calls: collections.Counter[str | None] = collections.Counter()

    def __call__(self, record: TriggerRecord) -> None:
        file = self._file
        if file is None:
            return
        file.write(json.dumps(_line(record, self._wall_clock())) + "\n")
        file.flush()
        self.triggers[record.to] += 1
        if record.created:
            self.calls[record.to] += 1

    def close(self) -> None:
        """Close the file (idempotent); later records are ignored."""
        file, self._file = self._file, None
        if file is not None:
            file.close()

    def __enter__(self) -> TriggerLogFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def summary(self, limit: int = 50) -> str:
        """The per-number summary (see :func:`format_summary`)."""
        return format_summary(self.triggers, self.calls, self.path, limit=limit)


def format_summary(
    triggers: collections.Counter[str | None],
    calls: collections.Counter[str | None],
    path: Path | None = None,
    *,
    limit: int = 50,
) -> str:
    """A few lines: totals, then calls and triggers per number, most called
    first, at most ``limit`` numbers (the file has them all)."""
    total_calls = sum(calls.values())
    where = f" (log: {path})" if path is not None else ""
    lines = [
        f"trigger log: {sum(triggers.values())} trigger(s), {total_calls} call(s) placed, "
        f"{len(triggers)} number(s){where}"
    ]
    if not triggers:
        return lines[0]
    ordered = sorted(triggers, key=lambda n: (-calls[n], -triggers[n], n or ""))
    width = max(len(n or "(no 'to')") for n in ordered[:limit])
    width = max(width, len("number"))
    lines.append(f"  {'number':<{width}}  calls  triggers")
    for number in ordered[:limit]:
        shown = "(no 'to')" if number is None else number
        lines.append(f"  {shown:<{width}}  {calls[number]:>5}  {triggers[number]:>8}")
    if len(ordered) > limit:
        lines.append(f"  ... and {len(ordered) - limit} more number(s)")
    return "\n".join(lines)
