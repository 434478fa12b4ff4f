"""The end-of-campaign summary, printed for people.

Outcomes first (what happened to the rows, counted per final state, with
what each means), then the run's figures (retries, throughput, latencies,
wall time), then what to do next when some rows need attention. Printed as
rich tables: readable on a terminal and still aligned text in a log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .progress import format_duration
from .summary import CampaignSummary

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["print_summary"]

#: Display order and styles of the states; others follow alphabetically.
_ORDER: Final = (
    ("completed", "green"),
    ("unanswered", "yellow"),
    ("busy", "yellow"),
    ("cancelled", "yellow"),
    ("failed", "red"),
    ("queued", "cyan"),
    ("scheduled", "cyan"),
    ("started", "cyan"),
    ("in-progress", "cyan"),
    ("reconciled", "cyan"),
    ("redial", "cyan"),
    ("duplicate", "dim"),
    ("suppressed", "dim"),
    ("invalid", "red"),
    ("not_sent", "red"),
    ("ambiguous", "bold red"),
    ("sending", "bold red"),
    ("lost", "red"),
    ("timed_out", "red"),
    ("pending", "dim"),
)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def print_summary(console: Console, summary: CampaignSummary) -> None:
    """Print ``summary`` as two tables and, when needed, a line of advice."""
    from rich import box
    from rich.table import Table

    outcomes = Table(title="Outcomes", box=box.SIMPLE_HEAD, title_justify="left")
    outcomes.add_column("status")
    outcomes.add_column("rows", justify="right")
    outcomes.add_column("share", justify="right")
    counts = dict(summary.counts)
    total = max(summary.total, 1)
    known = [name for name, _ in _ORDER]
    styles = dict(_ORDER)
    for name in known + sorted(set(counts) - set(known)):
        n = counts.get(name, 0)
        if n:
            outcomes.add_row(name, str(n), f"{100 * n / total:.1f}%", style=styles.get(name))
    outcomes.add_row("total", str(summary.total), "", style="bold")
    console.print(outcomes)

    figures = Table(title="This run", box=box.SIMPLE_HEAD, title_justify="left", show_header=False)
    figures.add_column("figure", style="bold cyan")
    figures.add_column("value")
    figures.add_row("calls placed", str(summary.placed))
    if summary.redials:
        figures.add_row("redials", f"{summary.redials} (contacts dialed again, all runs)")
    figures.add_row(
        "trigger requests",
        f"{summary.requests} ({summary.retries} retries, {summary.rate_limited} rate-limited)",
    )
    figures.add_row("throughput", f"{summary.throughput:.1f} calls/s")
    figures.add_row(
        "trigger latency",
        f"p50 {_ms(summary.latency_p50)}  p95 {_ms(summary.latency_p95)}  "
        f"p99 {_ms(summary.latency_p99)}",
    )
    if summary.polled:
        figures.add_row(
            "queued to started",
            f"p50 {_s(summary.start_delay_p50)}  p95 {_s(summary.start_delay_p95)}",
        )
    figures.add_row("wall time", format_duration(summary.wall_time))
    figures.add_row("journal", str(summary.journal) + (" (resumed)" if summary.resumed else ""))
    if summary.results is not None:
        figures.add_row("results", str(summary.results))
    if summary.attempts is not None:
        figures.add_row("attempts", str(summary.attempts))
    console.print(figures)

    for line in advice(summary):
        console.print(line, style="yellow", highlight=False)


def advice(summary: CampaignSummary) -> list[str]:
    """What the user should do about rows that need attention."""
    lines: list[str] = []
    if summary.ambiguous:
        lines.append(
            f"{summary.ambiguous} row(s) are AMBIGUOUS: their call may have been placed. "
            "Check them in VoiceHub before dialing again (--redial-ambiguous dials them)."
        )
    if summary.not_sent:
        lines.append(
            f"{summary.not_sent} row(s) were refused or could not be sent (no call placed); "
            "see the error column. Running the same command again retries them."
        )
    if summary.invalid:
        lines.append(f"{summary.invalid} row(s) are invalid (see the error column of the results).")
    if summary.duplicates:
        lines.append(
            f"{summary.duplicates} row(s) repeat a number of an earlier row and were not "
            "dialed (see the note column; --allow-duplicates dials them)."
        )
    if summary.horizon_reached and summary.later + summary.live:
        live = f" ({summary.live} calls still live)" if summary.live else ""
        lines.append(
            f"unfinished: {summary.later + summary.live} scheduled for later{live}, "
            "run again to follow them (--max-wait)."
        )
    elif summary.unfinished:
        lines.append(
            f"{summary.unfinished} row(s) are not finished; run the same command again "
            "to resume (calls already placed are followed, never re-dialed)."
        )
    return lines
