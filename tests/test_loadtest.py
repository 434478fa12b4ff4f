"""Load tests: ramps, metrics, the report, the runner and ``voicehub loadtest``.

The pure parts (ramp arithmetic, metrics, the report) are tested directly;
the runner and the command line run against the simulator in-process, with
time scales high enough that each run takes about a second; the one test of
the defaults (``voicehub loadtest --simulate``) runs the real two-minute
simulated ramp, which must finish in well under a minute.
"""

from __future__ import annotations

import asyncio
import html.parser
import json
import logging
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicehub_async import VoiceHubClient
from voicehub_async.cli import main
from voicehub_async.loadtest import (
    LoadMetrics,
    LoadTest,
    LoadTestConfig,
    LoadTestResult,
    NumbersFileError,
    Percentiles,
    Ramp,
    ReportUnavailableError,
    RunInfo,
    check_report_support,
    parse_duration,
    parse_numbers,
    parse_rate,
    render_html,
    serve_webhooks,
    simulated_numbers,
    simulated_service,
    write_report,
)
from voicehub_async.loadtest.metrics import nice_bucket, percentile
from voicehub_async.simulator import FaultConfig, LifecycleConfig
from voicehub_async.webhooks import WebhookReceiver

NUMBERS = simulated_numbers(5)
#: Calls of about a second of real time at time scale 50.
SHORT_CALLS = LifecycleConfig(queue_delay=(1, 3), ring_time=(2, 8), talk_time=(10, 40))


# -- ramps ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("2m", 120.0), ("1.5h", 5400.0), (" 30 ", 30.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "rate"),
    [("10/s", 10.0), ("30/m", 0.5), ("30/min", 0.5), ("3600/h", 1.0), ("2.5", 2.5)],
)
def test_parse_rate(text: str, rate: float) -> None:
    assert parse_rate(text) == rate


def test_ramp_parse_and_shape() -> None:
    ramp = Ramp.parse("0:1/s, 60:10/s, 2m:10/s")
    assert str(ramp) == "0:1/s,60:10/s,120:10/s"
    assert Ramp.parse(str(ramp)) == ramp
    assert ramp.duration == 120
    assert ramp.peak_rate == 10
    assert ramp.rate_at(30) == pytest.approx(5.5)
    assert ramp.rate_at(90) == 10
    assert ramp.rate_at(121) == 0
    assert ramp.calls_by(60) == pytest.approx(330)
    assert ramp.calls_by(120) == pytest.approx(930)
    assert ramp.total_calls == 930


def test_ramp_steps_and_constant() -> None:
    step = Ramp.parse("0:1/s,10:1/s,10:5/s,20:5/s")
    assert step.rate_at(9.99) == 1
    assert step.rate_at(10) == 5
    assert step.total_calls == 60
    constant = Ramp.constant(1, 10)
    assert list(constant.send_times()) == [0.5 + i for i in range(10)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty ramp"),
        ("0:1/s", "at least two points"),
        ("5:1/s,10:1/s", "starts at time 0"),
        ("0:1/s,20:2/s,10:2/s", "point 3"),
        ("0:1/s,x:2/s", "point 2"),
        ("0:1/s,10:fast", "not a rate"),
        ("0:1/s,10", "time:rate"),
        ("0:-1/s,10:1/s", "not a rate"),
    ],
)
def test_ramp_errors_name_the_point(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Ramp.parse(text)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.0, 30.0), st.floats(0.0, 20.0)),
        min_size=1,
        max_size=5,
    ),
    st.floats(0.0, 20.0),
)
def test_send_times_follow_the_area(segments: list[tuple[float, float]], start: float) -> None:
    """Call k goes out when the area reaches k + 1/2: the count is the area
    rounded, the times are ordered, inside the ramp, and where the area says."""
    points = [(0.0, start)]
    for span, rate in segments:
        points.append((points[-1][0] + span, rate))
    if points[-1][0] <= 0:
        return
    ramp = Ramp(points)
    times = list(ramp.send_times())
    area = ramp.calls_by(ramp.duration)
    assert abs(len(times) - math.floor(area + 0.5)) <= 1
    assert times == sorted(times)
    assert all(0 <= t <= ramp.duration + 1e-9 for t in times)
    for k, t in enumerate(times[:50]):
        assert ramp.calls_by(t) == pytest.approx(k + 0.5, abs=1e-6)


# -- metrics -----------------------------------------------------------------------------------


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 95) == 95.0
    assert Percentiles.of([4.0, 1.0, 2.0, 3.0]).p50 == 2.5
    assert nice_bucket(120) == 2
    assert nice_bucket(3600) == 60


def _info(**overrides: Any) -> RunInfo:
    fields: dict[str, Any] = {
        "agent_id": "agent-1",
        "numbers": 3,
        "ramp": "0:1/s,10:1/s",
        "ramp_seconds": 10.0,
        "max_live": 2,
    }
    fields.update(overrides)
    return RunInfo(**fields)


def _scripted_metrics() -> LoadMetrics:
    """Three calls sent, one dropped at the ceiling, one ambiguous trigger."""
    m = LoadMetrics(bucket=1.0)
    for t in (0.5, 1.5, 2.5, 3.5):
        m.record_due(t)
    m.record_sent(0.5)
    m.record_placed(0.6, 0.5, 0.010)
    m.record_sent(1.5)
    m.record_placed(1.6, 1.5, 0.020)
    m.record_dropped(2.5)  # two calls live: at the ceiling
    m.record_started(0.5, 2.0)  # seen started at 2.5
    m.record_answered(3.0)
    m.record_ended(3.2, "busy", 1.5, None)
    m.record_sent(3.5)
    m.record_not_placed(3.6, "ambiguous")
    m.record_ended(6.5, "completed", 0.5, 4.0)
    return m


def test_metrics_count_and_add_up() -> None:
    result = _scripted_metrics().result(_info(), until=10.0)
    assert (result.due, result.dropped, result.sent, result.placed) == (4, 1, 3, 2)
    assert result.due == result.sent + result.dropped
    assert result.sent == result.placed + sum(result.not_placed.values())
    assert result.placed == sum(result.final_statuses.values()) + result.unfinished
    assert result.not_placed == {"ambiguous": 1}
    assert result.final_statuses == {"busy": 1, "completed": 1}
    assert (result.completed, result.failed, result.answered, result.started) == (1, 1, 1, 1)
    assert result.peak_live == 2
    assert result.time_to_started.count == 1
    assert result.time_to_started.p50 == pytest.approx(2.0, rel=0.03)
    assert result.duration.p50 == pytest.approx(4.0, rel=0.03)
    assert result.trigger_latency_ms.max == pytest.approx(20.0)

    timeline = result.timeline
    assert len(timeline) == 10  # until=10 s in 1 s buckets
    assert [p.live for p in timeline[:8]] == [1, 2, 2, 1, 1, 1, 0, 0]
    assert timeline[3].live_max == 2  # the ambiguous trigger was live for a moment
    assert sum(p.sent for p in timeline) == result.sent
    assert sum(p.ended for p in timeline) == sum(result.final_statuses.values())
    assert timeline[0].time_to_started.count == 1  # bucketed by when the call was sent
    assert timeline[2].dropped == 1
    json.dumps(result.to_dict(), allow_nan=False)  # JSON-able as it is


# -- the report -----------------------------------------------------------------------------


class _ReportParser(html.parser.HTMLParser):
    """Collects what a reader of the page sees: figures, SVGs, the JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[str] = []
        self.svg_in: dict[str, int] = {}
        self.paths = 0
        self._figure: str | None = None
        self._in_data = False
        self.data = ""
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name in ("src", "href", "xlink:href"):
            link = attributes.get(name) or ""
            if link and not link.startswith("#"):
                self.external.append(f"<{tag} {name}={link}>")
        if tag == "link":
            self.external.append("<link>")
        if tag == "figure":
            self._figure = attributes.get("id") or ""
            self.figures.append(self._figure)
        elif tag == "svg" and self._figure is not None:
            self.svg_in[self._figure] = self.svg_in.get(self._figure, 0) + 1
        elif tag == "path" and self._figure is not None:
            self.paths += 1
        elif tag == "script" and attributes.get("id") == "loadtest-data":
            self._in_data = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None
        elif tag == "script":
            self._in_data = False

    def handle_data(self, data: str) -> None:
        if self._in_data:
            self.data += data


def _check_report(page: str, result: dict[str, Any]) -> None:
    """The page shows four charts, embeds the JSON, and the figures add up."""
    parser = _ReportParser()
    parser.feed(page)
    charts = ["chart-live", "chart-rate", "chart-started", "chart-duration"]
    assert parser.figures == charts
    assert all(parser.svg_in.get(name) == 1 for name in charts)
    assert parser.paths > 40  # axes, ticks and lines were drawn
    assert parser.external == []  # self-contained: nothing to fetch
    embedded = json.loads(parser.data.replace("<\\/", "</"))
    assert embedded == result
    timeline = result["timeline"]
    assert result["due"] == result["sent"] + result["dropped"]
    assert result["sent"] == result["placed"] + sum(result["not_placed"].values())
    assert result["placed"] == sum(result["final_statuses"].values()) + result["unfinished"]
    assert sum(p["sent"] for p in timeline) == result["sent"]
    assert sum(p["placed"] for p in timeline) == result["placed"]
    assert sum(p["due"] for p in timeline) == result["due"]
    assert sum(p["ended"] for p in timeline) == sum(result["final_statuses"].values())
    assert sum(p["completed"] for p in timeline) == result["completed"]
    assert timeline[-1]["live"] == result["unfinished"]


def test_report_html_and_json(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = _scripted_metrics().result(_info(simulated=True, time_scale=20), until=10.0)
    written = write_report(result, tmp_path / "run.html")
    assert written == [tmp_path / "run.json", tmp_path / "run.html"]
    figures = json.loads((tmp_path / "run.json").read_text())
    _check_report((tmp_path / "run.html").read_text(), figures)
    assert "agent agent-1" in (tmp_path / "run.html").read_text()
    # A .json report is the figures alone.
    assert write_report(result, tmp_path / "only.json") == [tmp_path / "only.json"]


def test_report_without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    check_report_support("figures.json")  # needs nothing
    with pytest.raises(ReportUnavailableError, match=r"voicehub-async\[report\]"):
        check_report_support("report.html")
    result = _scripted_metrics().result(_info())
    with pytest.raises(ReportUnavailableError):
        render_html(result)


# -- numbers --------------------------------------------------------------------------------


def test_numbers_file_parsing() -> None:
    lines = ["# test lines", "", "+14155550123, front desk", "4155550124  # no +", "+14155550123"]
    assert parse_numbers(lines, default_region="US") == (
        "+14155550123",
        "+14155550124",
        "+14155550123",
    )
    with pytest.raises(NumbersFileError) as caught:
        parse_numbers(["+14155550123", "hello", "+1 555", "+12025550100"], source="n.txt")
    assert [line for line, _ in caught.value.problems] == [2, 3]
    assert str(caught.value).startswith("n.txt: line 2: 'hello'")
    with pytest.raises(NumbersFileError, match="no phone numbers"):
        parse_numbers(["# nothing"])


# -- the runner ---------------------------------------------------------------------------------


def _config(ramp: str, **overrides: Any) -> LoadTestConfig:
    fields: dict[str, Any] = {
        "agent_id": "agent-1",
        "numbers": NUMBERS,
        "ramp": Ramp.parse(ramp),
        "time_scale": 50.0,
        "poll_interval": 2.0,
        "max_poll_interval": 10.0,
    }
    fields.update(overrides)
    return LoadTestConfig(**fields)


def _adds_up(result: LoadTestResult) -> None:
    assert result.due == result.sent + result.dropped
    assert result.sent == result.placed + sum(result.not_placed.values())
    assert result.placed == sum(result.final_statuses.values())
    assert result.unfinished == 0


async def test_run_follows_every_call_to_its_end() -> None:
    # The ceiling is not what this test is about: on a loaded machine polls lag
    # (at time scale 50, 0.2 s of lag is 10 simulated seconds) and calls stay
    # "live" longer, so keep it far out of reach.
    # Time scale 20, not 50: 650 calls polled every 2 simulated seconds are
    # 0.1 s apart in real time, which a shared 2-core machine keeps up with.
    config = _config("0:5/s,20:20/s,40:20/s", max_live=100_000, time_scale=20.0)
    async with simulated_service(time_scale=20, lifecycle=SHORT_CALLS) as sim:
        async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
            test = LoadTest(client, config, simulated=True)
            result = await test.run()
    _adds_up(result)
    assert result.due == config.ramp.total_calls == 650
    assert result.dropped == 0
    assert result.placed == sim.created_count == sim.trigger_count  # each call placed once
    assert sum(sim.placed_counts().values()) == result.placed
    assert set(sim.placed_counts()) == set(NUMBERS)  # called in turn
    assert result.answered == result.completed > 0
    assert result.started >= result.answered
    # Simulated seconds: queueing took 1 to 3 of them, plus polling's lag
    # (generous: a loaded machine stretches the lag, never below the queueing).
    # The upper bound is an order of magnitude (seconds, not milliseconds):
    # at time scale 20 every real second the loop falls behind (4 s seen on a
    # loaded machine) adds 20 of them.
    assert result.time_to_started.p50 is not None and 1 <= result.time_to_started.p50 <= 600
    assert result.duration.p50 is not None and result.duration.p50 >= 10
    assert result.info.simulated and result.info.time_scale == 20
    assert result.info.wall_seconds < 120
    assert test.progress().live == 0 and not test.progress().placing


async def test_max_live_drops_calls_instead_of_queueing_them() -> None:
    config = _config("0:20/s,20:20/s", max_live=10)
    async with simulated_service(time_scale=50, lifecycle=SHORT_CALLS) as sim:
        async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
            result = await LoadTest(client, config).run()
    _adds_up(result)
    assert result.peak_live <= 10
    assert result.dropped > 0
    assert sim.created_count == result.placed
    assert max(p.live_max for p in result.timeline) <= 10


async def test_ambiguous_triggers_are_counted_never_resent() -> None:
    faults = FaultConfig(reset_after_create_rate=0.2, error_503_rate=0.1, error_503_retry_after=0)
    config = _config("0:20/s,10:20/s")
    async with simulated_service(time_scale=50, lifecycle=SHORT_CALLS, faults=faults) as sim:
        async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
            result = await LoadTest(client, config).run()
    _adds_up(result)
    ambiguous = result.not_placed.get("ambiguous", 0)
    assert ambiguous > 0
    # A reset after the call was created placed it: the run counted it as
    # ambiguous and did not send it again. 503s were retried (safely).
    assert sim.created_count == result.placed + ambiguous
    assert sim.trigger_count > result.sent


async def test_webhooks_feed_the_run() -> None:
    receiver = WebhookReceiver("whsec-test")
    # Deliveries share the loop with the triggers, so on a loaded machine they
    # lag by up to a second when a burst of calls starts together: 50 calls,
    # first read after 10 simulated seconds (0.2 s), reads after a push 60 s
    # apart (longer than a call), so that a poll only stands in for a late
    # delivery. Polling alone still reads each call more than twice.
    config = _config("0:5/s,10:5/s", poll_interval=10.0, max_poll_interval=20.0)
    async with serve_webhooks(receiver, "127.0.0.1", 0) as port:
        url = f"http://127.0.0.1:{port}/voicehub/events"
        async with simulated_service(
            time_scale=50, lifecycle=SHORT_CALLS, webhook_url=url, webhook_secret="whsec-test"
        ) as sim:
            async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
                result = await LoadTest(client, config, receiver=receiver).run()
    _adds_up(result)
    assert result.info.webhooks
    assert receiver.stats.accepted > result.placed  # several statuses per call
    assert receiver.stats.refused == 0
    assert receiver.poller is None  # handed back after the run
    # Pushed statuses: far fewer reads than calls times statuses.
    assert sim.request_count["status"] < 2 * result.placed


async def test_stop_ends_the_ramp_and_finishes_live_calls() -> None:
    config = _config("0:10/s,600:10/s")
    async with simulated_service(time_scale=50, lifecycle=SHORT_CALLS) as sim:
        async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
            test = LoadTest(client, config)
            run = asyncio.ensure_future(test.run())
            for _ in range(1000):  # about 20 s at most
                if test.progress().placed >= 20:
                    break
                await asyncio.sleep(0.02)
            test.stop()
            result = await asyncio.wait_for(run, 20)
    _adds_up(result)
    assert 20 <= result.due < config.ramp.total_calls
    assert sim.created_count == result.placed
    stopped = result.info.stopped_at
    assert stopped is not None and stopped < 600
    # The timeline ends with the last call, not at the planned end of the ramp.
    assert result.timeline[-1].t < 600 - 60


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="at least one test number"):
        _config("0:1/s,10:1/s", numbers=())
    with pytest.raises(TypeError):
        _config("0:1/s,10:1/s", numbers="+14155550123")
    with pytest.raises(ValueError, match="max_poll_interval"):
        _config("0:1/s,10:1/s", poll_interval=5.0, max_poll_interval=1.0)


# -- the command line ----------------------------------------------------------------------------


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_cli_simulate_defaults_finish_quickly_with_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``voicehub loadtest --simulate --report report.html`` with nothing else:
    a two-minute simulated ramp, in well under a minute of wall time."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # the figures alone: the run and its timing are still checked
        report = tmp_path / "report.json"
    else:
        report = tmp_path / "report.html"
    began = time.monotonic()
    code, out, err = _run_cli(["loadtest", "--simulate", "--report", str(report)], capsys)
    wall = time.monotonic() - began
    assert code == 0, err
    assert wall < 60, f"the simulated two-minute ramp took {wall:.1f} s of wall time"
    assert "Load test of agent-loadtest: 0:1/s,60:10/s,120:10/s" in out
    # Not a terminal: plain progress lines instead of a bar (and not silence).
    assert "loadtest ramp: due " in err and "placed " in err
    figures = json.loads((tmp_path / "report.json").read_text())
    assert figures["info"]["ramp_seconds"] == 120
    assert figures["due"] == 930
    assert figures["timeline"][-1]["t"] >= 118  # the timeline covers the whole ramp
    assert figures["placed"] == sum(figures["final_statuses"].values())
    if report.suffix == ".html":
        _check_report(report.read_text(), figures)
        _screenshot(report, tmp_path / "report.png")


def _screenshot(page: Path, png: Path) -> None:
    """Render the report once in headless Chromium, when there is one."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return  # the HTML checks above stand alone
    subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--window-size=1000,2300", f"--screenshot={png}", page.as_uri(),
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 50_000  # charts drawn, not a blank page


def test_cli_json_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("# test lines\n+12025550100\n+12025550101\n")
    code, out, err = _run_cli(
        [
            "loadtest", "--simulate", "--agent", "agent-7", "--numbers", str(numbers),
            "--rate", "20/s", "--duration", "10s", "--time-scale", "50",
            "--report", str(tmp_path / "figures.json"), "--json",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["info"]["agent_id"] == "agent-7"
    assert data["info"]["numbers"] == 2
    assert data["due"] == 200
    assert data["placed"] == sum(data["final_statuses"].values())
    assert data["report_files"] == [str(tmp_path / "figures.json")]
    assert json.loads((tmp_path / "figures.json").read_text())["due"] == 200


def test_cli_webhooks_with_simulate(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run_cli(
        [
            "loadtest", "--simulate", "--rate", "10/s", "--duration", "10s",
            "--time-scale", "50", "--webhook-port", "0", "--json",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["info"]["webhooks"] is True
    assert data["placed"] == 100 == sum(data["final_statuses"].values())


def test_cli_dry_run_needs_no_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("+14155550123\n")
    code, out, err = _run_cli(
        ["loadtest", "--agent", "a1", "--numbers", str(numbers), "--ramp", "0:1/s,60:10/s",
         "--dry-run"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "330, at most 10/s, at most 500 live" in out
    assert "nothing placed" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--numbers", "N"], "--agent AGENT_ID is required"),
        (["--agent", "a1", "--ramp", "0:1/s,10:1/s"], "--numbers FILE is required"),
        (["--agent", "a1", "--numbers", "N"], "--ramp SPEC, or --rate with --duration"),
        (["--agent", "a1", "--numbers", "N", "--ramp", "0:1/s"], "--ramp: a ramp needs"),
        (["--agent", "a1", "--numbers", "N", "--rate", "5/s"], "go together"),
        (["--simulate", "--time-scale", "0"], "must be a positive number"),
        (["--agent", "a1", "--numbers", "N", "--rate", "1/s", "--duration", "9", "--time-scale",
          "5"], "only applies with --simulate"),
        (["--agent", "a1", "--numbers", "BAD", "--rate", "1/s", "--duration", "9"], "line 2"),
        (["--simulate", "--report", "/no/such/folder/r.html"], "no such folder"),
        (["--simulate", "--report", "report.pdf"], "name an .html page"),
        (["--agent", "a1", "--numbers", "N", "--rate", "1/s", "--duration", "9",
          "--webhook-port", "8099"], "VOICEHUB_WEBHOOK_SECRET"),
        (["--agent", "a1", "--numbers", "N", "--rate", "1/s", "--duration", "9"],
         "VOICEHUB_API_KEY"),
    ],
)  # fmt: skip
def test_cli_refuses_bad_input_before_sending(
    args: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VOICEHUB_WEBHOOK_SECRET", raising=False)
    (tmp_path / "N").write_text("+14155550123\n")
    (tmp_path / "BAD").write_text("+14155550123\nnot a number\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = _run_cli(["loadtest", *args], capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_a_number_without_country_code_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("+14155550101\n+14155550102\n(415) 555-0103\n")
    monkeypatch.setenv("VOICEHUB_API_KEY", "key")
    code, _, err = _run_cli(
        ["loadtest", "--agent", "a1", "--numbers", str(numbers), "--rate", "1/s",
         "--duration", "5", "--dry-run"],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert "line 3: '(415) 555-0103': no country code" in err
    assert " is no country code" not in err  # it read "'...' is no country code"
    assert "--default-region" in err  # what to do about it
    # ... and with it, the line is fine.
    code, out, err = _run_cli(
        ["loadtest", "--agent", "a1", "--numbers", str(numbers), "--rate", "1/s",
         "--duration", "5", "--dry-run", "--default-region", "US"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "3 test number(s)" in out


@pytest.mark.parametrize(
    ("extra", "env", "target"),
    [
        ([], None, "the VoiceHub API at https://voicehub.dataqueue.ai"),
        (["--base-url", "https://staging.example.com/"], None,
         "the VoiceHub API at https://staging.example.com"),
        ([], "http://127.0.0.1:8080", "the VoiceHub API at http://127.0.0.1:8080"),
        (["--simulate"], None, "the built-in simulator"),
    ],
)  # fmt: skip
def test_plan_names_the_base_url(
    extra: list[str],
    env: str | None,
    target: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if env is None:
        monkeypatch.delenv("VOICEHUB_BASE_URL", raising=False)
    else:
        monkeypatch.setenv("VOICEHUB_BASE_URL", env)
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("+14155550101\n")
    code, out, err = _run_cli(
        ["loadtest", "--agent", "a1", "--numbers", str(numbers), "--rate", "1/s",
         "--duration", "5", "--dry-run", *extra],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert target in out
    assert "the VoiceHub API\n" not in out


def test_percentile_chart_intervals_span_several_polls() -> None:
    from voicehub_async.loadtest.metrics import chart_interval

    # The default simulated run: 2 s buckets over about 3 minutes, polled every 2 s.
    assert chart_interval(180, 2, 2) == 20  # 9 intervals, each 10 poll rounds
    assert chart_interval(3600, 60, 2) == 300  # long runs: about 15 intervals
    assert chart_interval(20, 1, 2) == 10  # short runs: still 5 poll rounds
    width = chart_interval(100, 15, 1)
    assert width % 15 == 0 and width >= 100 / 15


def test_report_percentiles_over_wide_intervals(tmp_path: Path) -> None:
    """The intervals merge the buckets' histograms: their counts add up, and
    the charts draw a p50-p95 band with p99 over it."""
    pytest.importorskip("matplotlib")
    m = LoadMetrics(bucket=1.0)
    for i in range(200):
        t = i * 0.1
        m.record_due(t)
        m.record_sent(t)
        m.record_placed(t, t, 0.01)
        m.record_started(t, 2.0 + (i % 10) / 10)
    result = m.result(_info(ramp="0:10/s,20:10/s", ramp_seconds=20.0), until=20.0)
    assert result.interval_seconds == 10
    assert [p.t for p in result.intervals] == [0.0, 10.0]
    assert [p.time_to_started.count for p in result.intervals] == [100, 100]
    assert sum(p.time_to_started.count for p in result.intervals) == result.time_to_started.count
    page = render_html(result)
    # matplotlib draws text as glyphs, each run of text after a comment naming it.
    assert "<!-- p50 to p95 -->" in page and "<!-- p99 -->" in page
    assert "10 s interval" in page
    data = result.to_dict()
    assert data["interval_seconds"] == 10 and len(data["intervals"]) == 2


async def test_a_failed_trigger_logs_no_number_above_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Rule 3: phone numbers are personal data, only at DEBUG in logs. Every
    # trigger here fails (the connection is reset after the call is made).
    faults = FaultConfig(reset_after_create_rate=1.0)
    config = _config("0:5/s,2:5/s")
    caplog.set_level(logging.INFO, logger="voicehub_async")
    async with simulated_service(time_scale=50, lifecycle=SHORT_CALLS, faults=faults) as sim:
        async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
            result = await LoadTest(client, config).run()
    assert result.not_placed.get("ambiguous", 0) > 0
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert shown  # the failures are reported, just without the number
    digits = {n.lstrip("+") for n in NUMBERS}
    assert not [m for m in shown if any(d in m for d in digits)]
