"""Showing a running campaign: a rich live panel on a terminal, plain lines
otherwise.

Both read :meth:`Campaign.progress` snapshots on a timer; the campaign never
calls into the display, so a slow terminal cannot slow the dialing. On a
terminal the panel is redrawn a few times a second; when the output is a
file or a pipe (CI logs, ``| tee``), one self-contained line is printed every
``interval`` seconds instead, because cursor tricks would fill a log with
garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import IO, TYPE_CHECKING, Final

from .._time import format_duration
from .summary import CampaignProgress

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

__all__ = ["format_duration", "plain_line", "show_progress"]

_RICH_REFRESH: Final = 0.25


def _total(p: CampaignProgress) -> int:
    """The bar's end: the estimate while reading (it counts lines), never
    below the rows dealt with; the campaign puts the real total in at the end."""
    return max(p.total or 0, p.processed)


def _of_total(p: CampaignProgress) -> str:
    return f"{p.processed}/{_total(p)}" if p.total else str(p.processed)


def _pace(p: CampaignProgress, sep: str = ", ") -> str:
    """The rate and ETA, or why nothing can be dialed (no connection): a rate
    would say nothing true then. With a live-call cap, how full it is."""
    if p.waiting is not None and p.phase in ("dialing", "stopping"):
        return f"waiting: {p.waiting}"
    eta = format_duration(p.eta) if p.phase == "dialing" else "-"
    live = ""
    if p.live is not None and p.live_limit is not None:
        live = f"{sep}live {p.live}/{p.live_limit}"
    return f"{p.rate:.1f} calls/s{sep}ETA {eta}{live}"


def _redials(p: CampaignProgress) -> str:
    """``, 12 redials due (next in 4m10s)`` while redials wait; else nothing."""
    if not p.redials_waiting:
        return ""
    return f", {p.redials_waiting} redials due (next in {format_duration(p.next_redial)})"


def plain_line(p: CampaignProgress) -> str:
    """One line describing ``p``, for logs."""
    return (
        f"campaign [{format_duration(p.elapsed)}] {p.phase}: rows {_of_total(p)}, "
        f"sent {p.sent}, queued {p.queued}, in progress {p.in_progress}, "
        f"completed {p.completed}, not completed {p.failed} "
        f"(invalid {p.invalid}, ambiguous {p.ambiguous}), retries {p.retries}, "
        f"{_pace(p)}{_redials(p)}"
    )


def _panel(p: CampaignProgress) -> RenderableType:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    top = Table.grid(padding=(0, 2))
    top.add_column()
    top.add_column()
    total = max(_total(p), 1)
    top.add_row(
        ProgressBar(total=total, completed=min(p.processed, total), width=30),
        Text(f"{_of_total(p)} rows  {_pace(p, '  ')}"),
    )
    counts = Text.assemble(
        ("sent ", "bold"), str(p.sent), "  ",
        ("queued ", "bold"), str(p.queued), "  ",
        ("in progress ", "bold cyan"), str(p.in_progress), "  ",
        ("completed ", "bold green"), str(p.completed), "  ",
        ("not completed ", "bold red"), str(p.failed),
    )  # fmt: skip
    details = Text(
        f"invalid {p.invalid}  ambiguous {p.ambiguous}  retries {p.retries}{_redials(p)}  "
        f"[{p.phase}, {format_duration(p.elapsed)}]",
        style="dim",
    )
    return Group(top, counts, details)


@contextlib.asynccontextmanager
async def show_progress(
    snapshot: Callable[[], CampaignProgress],
    *,
    console: Console | None = None,
    stream: IO[str] | None = None,
    interval: float = 5.0,
    rich: bool | None = None,
) -> AsyncIterator[None]:
    """Show ``snapshot()`` while the block runs.

    ``rich`` (default: whether ``console`` is a terminal) picks the live panel;
    otherwise a plain line goes to ``stream`` (default: the console's file)
    every ``interval`` seconds, and once more at the end.
    """
    from rich.console import Console
    from rich.live import Live

    console = console or Console()
    live_mode = console.is_terminal if rich is None else rich
    if live_mode:
        with Live(
            _panel(snapshot()), console=console, refresh_per_second=1 / _RICH_REFRESH,
            transient=False,
        ) as live:  # fmt: skip
            task = asyncio.get_running_loop().create_task(_refresh(live, snapshot))
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                live.update(_panel(snapshot()), refresh=True)
        return
    out = stream if stream is not None else console.file
    task = asyncio.get_running_loop().create_task(_lines(out, snapshot, interval))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        _write(out, plain_line(snapshot()))


async def _refresh(live: object, snapshot: Callable[[], CampaignProgress]) -> None:
    from rich.live import Live

    assert isinstance(live, Live)
    while True:
        await asyncio.sleep(_RICH_REFRESH)
        live.update(_panel(snapshot()))


async def _lines(out: IO[str], snapshot: Callable[[], CampaignProgress], interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        _write(out, plain_line(snapshot()))


def _write(out: IO[str], line: str) -> None:
    try:
        out.write(line + "\n")
        out.flush()
    except (OSError, ValueError):  # a closed pipe must not stop the campaign
        pass
