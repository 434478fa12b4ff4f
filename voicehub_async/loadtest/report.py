"""The load test report: one self-contained HTML page, and the same figures as JSON.

The page has a summary table and four charts (calls live, rates, time to
``started``, call duration, all over time), drawn with matplotlib as SVG and
inlined, plus the full result as JSON in a ``<script type="application/json">``
element. Nothing is fetched from anywhere when it is opened: it can be
attached to a ticket or archived by CI.

Why matplotlib, and why optional: it is the well-kept standard for static
charts and writes clean SVG without a browser, but it is a large dependency
that only this report needs; so it lives in the ``voicehub-async[report]``
extra, and :func:`check_report_support` says how to install it *before* a
load test starts, rather than after it ran. The JSON alone (``--report
run.json``) needs nothing extra. Only :class:`matplotlib.figure.Figure` is
used, never ``pyplot``: no global figure registry, no GUI backend, safe in
any thread.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from .metrics import IntervalPoint, LoadTestResult, Percentiles
from .ramp import Ramp, format_duration

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "ReportUnavailableError",
    "check_report_support",
    "render_html",
    "render_json",
    "report_paths",
    "write_report",
]

INSTALL_HINT: Final = (
    "the HTML report draws its charts with matplotlib, which is not installed: "
    "pip install 'voicehub-async[report]' (or write the figures alone with --report FILE.json)"
)
_SVG_PROLOGUE: Final = re.compile(r"^.*?(?=<svg\b)", re.DOTALL)
_COLORS: Final = {
    "live": "#1f77b4",
    "target": "#555555",
    "sent": "#1f77b4",
    "completed": "#2ca02c",
    "failed": "#d62728",
    "dropped": "#ff7f0e",
    "p50": "#1f77b4",
    "p95": "#ff7f0e",
    "p99": "#d62728",
}


class ReportUnavailableError(RuntimeError):
    """An HTML report was asked for but matplotlib is not installed."""


def check_report_support(path: str | Path) -> None:
    """Raise :class:`ReportUnavailableError` if writing ``path`` needs matplotlib
    and it is missing. Call it before the run, so nobody waits for a report
    that cannot be written."""
    if Path(path).suffix.lower() == ".json":
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportUnavailableError(INSTALL_HINT) from None


def report_paths(path: str | Path) -> tuple[Path | None, Path]:
    """``(html, json)`` paths for ``--report path``: ``run.html`` gives
    ``run.html`` and ``run.json``; ``run.json`` gives only the JSON."""
    target = Path(path)
    if target.suffix.lower() == ".json":
        return None, target
    return target, target.with_suffix(".json")


def render_json(result: LoadTestResult) -> str:
    """The result as indented JSON (NaN-free: missing values are null)."""
    return json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"


def write_report(result: LoadTestResult, path: str | Path) -> list[Path]:
    """Write the report(s) for ``path`` (see :func:`report_paths`); returns the
    files written. The JSON is written first, so the figures survive a failure
    to draw the charts."""
    html_path, json_path = report_paths(path)
    written: list[Path] = []
    json_path.write_text(render_json(result), encoding="utf-8")
    written.append(json_path)
    if html_path is not None:
        html_path.write_text(render_html(result), encoding="utf-8")
        written.append(html_path)
    return written


# -- charts ------------------------------------------------------------------------------


def _values(points: Sequence[IntervalPoint], pick: str, q: str) -> list[float]:
    values: list[float] = []
    for point in points:
        dist: Percentiles = getattr(point, pick)
        value = getattr(dist, q)
        values.append(math.nan if value is None else float(value))
    return values


def _new_figure() -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9.0, 3.0), dpi=96, layout="constrained")
    axes = figure.add_subplot()
    axes.grid(True, color="#e5e5e5", linewidth=0.8)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    return figure, axes


def _finish(figure: Figure, axes: Axes, result: LoadTestResult, title: str, ylabel: str) -> str:
    stopped = result.info.stopped_at
    ramp_end = result.info.ramp_seconds if stopped is None else stopped
    axes.axvline(ramp_end, color="#999999", linestyle=":", linewidth=1)
    axes.annotate(
        "ramp ends" if stopped is None else "ramp stopped",
        (ramp_end, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(3, -3),
        textcoords="offset points",
        va="top",
        fontsize=8,
        color="#777777",
    )
    axes.set_title(title, loc="left", fontsize=11)
    clock = "simulated seconds" if result.info.simulated else "seconds"
    axes.set_xlabel(f"time since start ({clock})")
    axes.set_ylabel(ylabel)
    _, edges = _edges(result)
    axes.set_xlim(0, max(edges[-1], ramp_end))  # the same time axis on every chart
    axes.set_ylim(bottom=0)
    if axes.get_legend_handles_labels()[0]:
        # Above the plot, right of the title: never over the data.
        axes.legend(
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            fontsize=8,
            frameon=False,
            ncols=5,
            borderaxespad=0.2,
        )
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    # Inline SVG in HTML needs neither the XML declaration nor the DOCTYPE.
    return _SVG_PROLOGUE.sub("", buffer.getvalue(), count=1).strip()


def _edges(result: LoadTestResult) -> tuple[list[float], list[float]]:
    """Bucket starts, and the same extended by one bucket for step plots."""
    starts = [p.t for p in result.timeline]
    end = (starts[-1] + result.bucket_seconds) if starts else result.bucket_seconds
    return starts, [*starts, end]


def _live_chart(result: LoadTestResult) -> str:
    figure, axes = _new_figure()
    points = result.timeline
    _, edges = _edges(result)
    live_max = [p.live_max for p in points]
    live = [p.live for p in points]
    if points:
        axes.stairs(
            live_max,
            edges,
            fill=True,
            color=_COLORS["live"],
            alpha=0.25,
            label="most live in the interval",
        )
        axes.stairs(
            live, edges, color=_COLORS["live"], linewidth=1.5, label="live at the interval's end"
        )
    axes.axhline(
        result.info.max_live,
        color=_COLORS["failed"],
        linestyle="--",
        linewidth=1,
        label=f"--max-live {result.info.max_live}",
    )
    return _finish(figure, axes, result, "Calls live", "calls")


def _rate_chart(result: LoadTestResult) -> str:
    figure, axes = _new_figure()
    points = result.timeline
    _, edges = _edges(result)
    width = result.bucket_seconds
    try:
        ramp = Ramp.parse(result.info.ramp)
    except ValueError:
        ramp = None
    if ramp is not None:
        axes.plot(
            [p.time for p in ramp.points],
            [p.rate for p in ramp.points],
            color=_COLORS["target"],
            linestyle="--",
            linewidth=1.2,
            label="ramp (target)",
        )
    if points:
        axes.stairs(
            [p.sent / width for p in points],
            edges,
            color=_COLORS["sent"],
            linewidth=1.5,
            label="sent",
        )
        axes.stairs(
            [p.completed / width for p in points],
            edges,
            color=_COLORS["completed"],
            linewidth=1.2,
            label="completed",
        )
        axes.stairs(
            [p.failed / width for p in points],
            edges,
            color=_COLORS["failed"],
            linewidth=1.2,
            label="ended otherwise",
        )
        if any(p.dropped for p in points):
            axes.stairs(
                [p.dropped / width for p in points],
                edges,
                color=_COLORS["dropped"],
                linewidth=1.2,
                label="dropped (--max-live)",
            )
    return _finish(figure, axes, result, "Rate", "calls per second")


#: Fewer samples than this in an interval: its p99 is only its maximum, not drawn.
_MIN_FOR_P99: Final = 20


def _percentile_chart(result: LoadTestResult, pick: str, title: str) -> str:
    """p50 as a line over a shaded p50-p95 band, p99 dashed above, per interval.

    Steps, not points joined by lines: each value is an interval's (calls
    sent in it), several poll rounds wide so that polling's granularity
    averages out. The band keeps p95 visible when it meets p99, and a p99 of
    a handful of calls (which is just their maximum) is left out.
    """
    figure, axes = _new_figure()
    points = result.intervals
    width = result.interval_seconds
    if points:
        edges = [p.t for p in points] + [points[-1].t + width]
        p50, p95, p99 = (_values(points, pick, q) for q in ("p50", "p95", "p99"))
        counts = [getattr(p, pick).count for p in points]
        p99 = [v if n >= _MIN_FOR_P99 else math.nan for v, n in zip(p99, counts, strict=True)]
        if any(not math.isnan(v) for v in p95):
            axes.fill_between(
                edges,
                [*p50, p50[-1]],
                [*p95, p95[-1]],
                step="post",
                color=_COLORS["p95"],
                alpha=0.25,
                linewidth=0,
                label="p50 to p95",
            )
            axes.stairs(p50, edges, baseline=None, color=_COLORS["p50"], linewidth=1.8, label="p50")
            axes.stairs(p95, edges, baseline=None, color=_COLORS["p95"], linewidth=0.8)
        if any(not math.isnan(v) for v in p99):
            axes.stairs(
                p99,
                edges,
                baseline=None,
                color=_COLORS["p99"],
                linewidth=1.2,
                linestyle="--",
                label="p99",
            )
    unit = "simulated seconds" if result.info.simulated else "seconds"
    return _finish(figure, axes, result, title, unit)


# -- the page ------------------------------------------------------------------------------


def _fmt(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "-"
    return f"{value:.1f} {unit}" if value >= 10 else f"{value:.2f} {unit}"


def _row(label: str, value: object, note: str = "") -> str:
    note_cell = f'<td class="note">{html.escape(note)}</td>' if note else "<td></td>"
    return f"<tr><th>{html.escape(label)}</th><td>{html.escape(str(value))}</td>{note_cell}</tr>"


def _percentile_row(label: str, dist: Percentiles, unit: str) -> str:
    cells = "".join(
        f"<td>{html.escape(_fmt(getattr(dist, q), unit))}</td>" for q in ("p50", "p95", "p99")
    )
    return (
        f"<tr><th>{html.escape(label)}</th>{cells}"
        f"<td>{html.escape(_fmt(dist.max, unit))}</td><td>{dist.count}</td></tr>"
    )


def _summary(result: LoadTestResult) -> str:
    info = result.info
    rows = [
        _row("agent", info.agent_id),
        _row(
            "ramp",
            info.ramp,
            format_duration(info.ramp_seconds)
            + ("" if info.stopped_at is None else f", stopped at {info.stopped_at:.0f} s"),
        ),
        _row("test numbers", info.numbers),
        _row("--max-live", info.max_live, f"peak live: {result.peak_live}"),
        _row("calls due", result.due, "asked for by the ramp"),
        _row("dropped", result.dropped, "due while --max-live calls were live"),
        _row("sent", result.sent),
        _row("placed", result.placed, "the service accepted the trigger"),
    ]
    for kind, count in result.not_placed.items():
        note = (
            "outcome unknown: the call may exist (never retried)"
            if kind == "ambiguous"
            else "trigger failed"
        )
        rows.append(_row(f"not placed: {kind}", count, note))
    rows += [
        _row("started", result.started, "seen started (connected)"),
        _row("answered", result.answered, "seen in-progress or completed"),
        _row("completed", result.completed),
    ]
    for status, count in result.final_statuses.items():
        if status != "completed":
            rows.append(_row(f"ended {status}", count))
    if result.unfinished:
        rows.append(_row("unfinished", result.unfinished, "still live when the run stopped"))
    clock = "simulated" if info.simulated else "real"
    latencies = "".join(
        [
            _percentile_row(f"time to started ({clock} s)", result.time_to_started, "s"),
            _percentile_row(f"call duration ({clock} s)", result.duration, "s"),
            _percentile_row("trigger latency (real ms)", result.trigger_latency_ms, "ms"),
        ]
    )
    return (
        _thresholds(result) + '<table class="summary">' + "".join(rows) + "</table>"
        '<table class="latency"><tr><th></th><th>p50</th><th>p95</th><th>p99</th>'
        "<th>max</th><th>calls</th></tr>" + latencies + "</table>"
    )


def _thresholds(result: LoadTestResult) -> str:
    """The thresholds with a pass/fail mark each (nothing without thresholds)."""
    if not result.verdicts:
        return ""
    rows = []
    for verdict in result.verdicts:
        passed = verdict.passed
        note = (
            "could not hold any more: it stopped the ramp"
            if result.info.aborted_by == verdict.threshold.expression
            else ""
        )
        rows.append(
            f'<tr class="{"pass" if passed else "fail"}">'
            f'<td class="mark">{"✓ pass" if passed else "✗ fail"}</td>'
            f"<th><code>{html.escape(verdict.threshold.expression)}</code></th>"
            f'<td>{html.escape(verdict.shown)}</td><td class="note">{html.escape(note)}</td></tr>'
        )
    failed = sum(not v.passed for v in result.verdicts)
    heading = (
        f"Thresholds: {failed} of {len(result.verdicts)} failed"
        if failed
        else f"Thresholds: all {len(result.verdicts)} passed"
    )
    return (
        f'<h2 class="{"fail" if failed else "pass"}">{html.escape(heading)}</h2>'
        '<table class="thresholds">' + "".join(rows) + "</table>"
    )


_CSS: Final = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 960px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } .sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 12px 0 20px; }
th, td { padding: 3px 12px 3px 0; text-align: left; vertical-align: top; }
.summary th { font-weight: 600; } .note { color: #777; }
.latency td, .latency th { text-align: right; } .latency th:first-child { text-align: left; }
figure { margin: 8px 0 24px; } figure svg { width: 100%; height: auto; }
figcaption { color: #666; font-size: 12px; }
h2 { font-size: 17px; margin: 16px 0 4px; } h2.pass, tr.pass .mark { color: #2ca02c; }
h2.fail, tr.fail .mark { color: #d62728; } .mark { font-weight: 600; white-space: nowrap; }
"""


def render_html(result: LoadTestResult) -> str:
    """The report page: summary, charts (inline SVG) and the JSON figures.

    Raises :class:`ReportUnavailableError` when matplotlib is missing.
    """
    check_report_support("report.html")
    info = result.info
    precision = (
        "precise to the webhook's delivery"
        if info.webhooks
        else f"polled, so precise to about {info.poll_interval:g} s (webhooks are precise)"
    )
    charts = [
        (
            "chart-live",
            _live_chart(result),
            "Calls live: triggers sent and not yet in a final status.",
        ),
        (
            "chart-rate",
            _rate_chart(result),
            "Calls per second: the ramp's target, triggers sent, calls ending.",
        ),
        (
            "chart-started",
            _percentile_chart(result, "time_to_started", "Time to started"),
            "From the trigger to the first sight of 'started', for calls sent in each "
            f"{result.interval_seconds:g} s interval: {precision}.",
        ),
        (
            "chart-duration",
            _percentile_chart(result, "duration", "Call duration"),
            "From 'started' to 'completed', for completed calls sent in each "
            f"{result.interval_seconds:g} s interval.",
        ),
    ]
    figures = "".join(
        f'<figure id="{name}">{svg}<figcaption>{html.escape(caption)}</figcaption></figure>'
        for name, svg, caption in charts
    )
    data = render_json(result).replace("</", "<\\/")
    mode = f"simulated, time scale {info.time_scale:g}" if info.simulated else "live service"
    followed = "polling and webhooks" if info.webhooks else "polling"
    subtitle = (
        f"{info.started_at} · {mode} · followed by {followed} · "
        f"{info.wall_seconds:.1f} s of wall time · intervals of {result.bucket_seconds:g} s"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>VoiceHub load test: {html.escape(info.agent_id)}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>VoiceHub load test: agent {html.escape(info.agent_id)}</h1>"
        f'<p class="sub">{html.escape(subtitle)}</p>'
        f"{_summary(result)}{figures}"
        f'<script type="application/json" id="loadtest-data">{data}</script>'
        "</body></html>\n"
    )
