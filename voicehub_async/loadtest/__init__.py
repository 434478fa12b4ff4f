"""Load tests of a VoiceHub agent: a ramp of calls to test numbers, measured.

``voicehub loadtest`` is the command line; this package is the library under
it, for a test written in Python::

    from voicehub_async import VoiceHubClient
    from voicehub_async.loadtest import LoadTest, LoadTestConfig, Ramp, Threshold, write_report

    async with VoiceHubClient() as client:
        config = LoadTestConfig(
            "agent-1", ["+14155550123"], Ramp.parse("0:1/s,60:5/s"),
            thresholds=[Threshold.parse("time_to_started.p95<5s")],
        )
        result = await LoadTest(client, config).run()
    write_report(result, "report.html")    # + report.json; charts need [report]
    assert result.thresholds_passed, result.verdicts

Modules: :mod:`.ramp` (rates over time and send times), :mod:`.runner`
(placing, following, the ceiling), :mod:`.metrics` (counters, percentiles and
the timeline), :mod:`.thresholds` (k6-style pass/fail criteria),
:mod:`.report` (HTML and JSON), :mod:`.junit` (verdicts for CI),
:mod:`.numbers` (the numbers file), :mod:`.simulated` (the ``--simulate`` defaults) and
:mod:`.webhook_server`. Importing the package imports neither matplotlib nor
aiohttp.web.
"""

from __future__ import annotations

from .junit import render_junit, write_junit
from .metrics import (
    IntervalPoint,
    LoadMetrics,
    LoadTestResult,
    Percentiles,
    RunInfo,
    TimelinePoint,
)
from .numbers import NumbersFileError, parse_numbers, read_numbers
from .ramp import Ramp, RampPoint, parse_duration, parse_rate
from .report import ReportUnavailableError, check_report_support, render_html, write_report
from .runner import LoadTest, LoadTestConfig, LoadTestProgress
from .simulated import simulated_numbers, simulated_service
from .thresholds import Threshold, Verdict, run_problem
from .webhook_server import serve_webhooks

__all__ = [
    "IntervalPoint",
    "LoadMetrics",
    "LoadTest",
    "LoadTestConfig",
    "LoadTestProgress",
    "LoadTestResult",
    "NumbersFileError",
    "Percentiles",
    "Ramp",
    "RampPoint",
    "ReportUnavailableError",
    "RunInfo",
    "Threshold",
    "TimelinePoint",
    "Verdict",
    "check_report_support",
    "parse_duration",
    "parse_numbers",
    "parse_rate",
    "read_numbers",
    "render_html",
    "render_junit",
    "run_problem",
    "serve_webhooks",
    "simulated_numbers",
    "simulated_service",
    "write_junit",
    "write_report",
]
