"""Load-test thresholds (k6-style), exit statuses and the JUnit file.

Parsing and judging are tested on scripted metrics; the exit statuses run the
real ``voicehub loadtest`` against the simulator (in-process with
``--simulate``, or the thread-served one for failing answers), so what CI
sees is what is tested.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import attrs
import pytest
from test_loadtest import _info, _scripted_metrics  # the same scripted run

from voicehub_async import VoiceHubClient
from voicehub_async.cli import main
from voicehub_async.loadtest import (
    LoadMetrics,
    LoadTest,
    LoadTestConfig,
    Ramp,
    simulated_numbers,
    simulated_service,
)
from voicehub_async.loadtest.junit import render_junit
from voicehub_async.loadtest.thresholds import Threshold, check_all, run_problem
from voicehub_async.simulator import Fault, LifecycleConfig, SimulatorThread

SHORT_CALLS = LifecycleConfig(queue_delay=(1, 3), ring_time=(2, 8), talk_time=(10, 40))


def _scripted() -> LoadMetrics:
    """Four due: one dropped, one ambiguous, one busy (unanswered), one completed."""
    return _scripted_metrics()


# -- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "metric", "op", "limit"),
    [
        ("time_to_started.p95<5s", "time_to_started.p95", "<", 5.0),
        ("trigger_latency.p99<800ms", "trigger_latency.p99", "<", 0.8),
        ("ambiguous==0", "ambiguous", "==", 0.0),
        ("answered_rate>=0.9", "answered_rate", ">=", 0.9),
        ("dropped_rate<1%", "dropped_rate", "<", 0.01),
        (" duration.p(99) <= 2m ", "duration.p99", "<=", 120.0),  # k6's p(99)
        ("send_lag.avg<250ms", "send_lag.mean", "<", 0.25),
        ("ended.timed_out!=3", "ended.timed_out", "!=", 3.0),
        ("not_placed.http_500>0", "not_placed.http_500", ">", 0.0),
        ("peak_live<=200", "peak_live", "<=", 200.0),
    ],
)
def test_thresholds_parse_into_metric_op_and_limit(
    text: str, metric: str, op: str, limit: float
) -> None:
    threshold = Threshold.parse(text)
    assert (threshold.metric, threshold.op) == (metric, op)
    assert threshold.limit == pytest.approx(limit)
    assert threshold.expression == text.strip()
    assert Threshold.parse(text) == threshold  # a value: equal when parsed twice


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time_to_start.p95<5s", "did you mean 'time_to_started.p95'"),
        ("answerd_rate>=0.9", "did you mean 'answered_rate'"),
        ("trigger_latency_ms.p99<1s", "did you mean 'trigger_latency.p99'"),
        ("latency<1s", "the metrics are due, dropped"),
        ("duration<5s", "needs one of .p50"),
        ("time_to_started.p95<5", "write its unit, e.g. 5s or 5ms"),
        ("answered_rate>=90", "a fraction between 0 and 1: write e.g. 0.9 or 90%, not 90"),
        ("answered_rate>=9x", "a fraction: write e.g. 0.9 or 90%"),
        ("ambiguous==0s", "a count: write a plain number"),
        ("ambiguous", "write METRIC OP LIMIT"),
        ("ambiguous==", "not a number"),
        ("ended.ringing<1", "no metric 'ended.ringing'"),
    ],
)
def test_bad_thresholds_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Threshold.parse(text)
    assert message in str(caught.value)


# -- judging ------------------------------------------------------------------------------


def test_verdicts_on_scripted_figures() -> None:
    result = _scripted().result(_info(), until=10.0)
    verdicts = check_all(
        [
            Threshold.parse("ambiguous==0"),  # one ambiguous
            Threshold.parse("answered_rate>=50%"),  # 1 of 2 placed
            Threshold.parse("dropped_rate<=25%"),  # 1 of 4 due
            Threshold.parse("trigger_latency.max<=21ms"),  # 20 ms
            Threshold.parse("duration.p50<3s"),  # about 4 s
            Threshold.parse("ended.busy==1"),
        ],
        result,
    )
    assert [v.passed for v in verdicts] == [False, True, True, True, False, True]
    assert verdicts[0].value == 1 and verdicts[0].shown == "1"
    assert verdicts[1].value == pytest.approx(0.5) and verdicts[1].shown == "50%"
    assert verdicts[3].value == pytest.approx(0.020) and verdicts[3].shown == "20ms"
    assert verdicts[4].value == pytest.approx(4.0, rel=0.03) and verdicts[4].shown.endswith("s")
    data = verdicts[0].to_dict()
    assert data == {
        "threshold": "ambiguous==0", "metric": "ambiguous", "op": "==", "limit": 0.0,
        "value": 1.0, "shown": "1", "passed": False,
    }  # fmt: skip


def test_a_threshold_without_data_fails() -> None:
    empty = LoadMetrics(bucket=1.0).result(_info())
    (verdict,) = check_all([Threshold.parse("time_to_started.p95<1h")], empty)
    assert verdict.value is None and not verdict.passed and verdict.shown == "no data"
    (rate,) = check_all([Threshold.parse("answered_rate>=0%")], empty)
    assert not rate.passed


def test_cannot_recover_only_when_no_final_value_can_pass() -> None:
    m = _scripted()
    so_far = m.result(_info(), timeline=False)
    assert so_far.timeline == () and so_far.intervals == ()
    calls = 100  # the whole ramp: 96 calls still to come
    lost = ["ambiguous==0", "not_placed<1", "placed<2", "trigger_latency.max<15ms", "ended.busy<1"]
    for text in lost:
        assert Threshold.parse(text).cannot_recover(so_far, calls), text
    alive = [
        "ambiguous<=1", "dropped_rate<2%",  # 1 of at most 100
        "answered_rate>=90%",  # 1 unanswered of up to 100 placed: 99% still reachable
        "time_to_started.p95<1ms",  # a percentile can always come back
        "completed>=50", "unfinished==0",
    ]  # fmt: skip
    for text in alive:
        assert not Threshold.parse(text).cannot_recover(so_far, calls), text
    # With only 4 calls in the whole run, 1 dropped is 25% whatever comes.
    assert Threshold.parse("dropped_rate<20%").cannot_recover(so_far, 4)
    assert Threshold.parse("answered_rate>=90%").cannot_recover(so_far, 4)  # at most 75%


def test_run_problem_is_the_default_gate() -> None:
    def with_triggers(placed: int, failed: int) -> Any:
        m = LoadMetrics(bucket=1.0)
        for _ in range(placed):
            m.record_due(0.1)
            m.record_sent(0.1)
            m.record_placed(0.2, 0.1, 0.01)
        for _ in range(failed):
            m.record_due(0.1)
            m.record_sent(0.1)
            m.record_not_placed(0.2, "http_401")
        return m.result(_info())

    assert run_problem(LoadMetrics(bucket=1.0).result(_info())) == "no trigger was sent"
    assert "no trigger was placed: all 3 failed (3 http_401)" in str(
        run_problem(with_triggers(0, 3))
    )
    assert "more than 50% failed" in str(run_problem(with_triggers(4, 5)))
    assert run_problem(with_triggers(5, 5)) is None  # exactly half: still a measurement


def test_junit_reads_back() -> None:
    result = _scripted().result(_info(aborted_by="ambiguous==0"), until=10.0)
    thresholds = [Threshold.parse("ambiguous==0"), Threshold.parse("answered_rate>=0.5")]
    result = attrs.evolve(result, verdicts=check_all(thresholds, result))
    suite = ET.fromstring(render_junit(result))
    assert suite.tag == "testsuite"
    assert (suite.get("tests"), suite.get("failures")) == ("3", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["run", "ambiguous==0", "answered_rate>=0.5"]
    assert [c.find("failure") is not None for c in cases] == [False, True, False]
    failure = cases[1].find("failure")
    assert failure is not None
    message = failure.get("message") or ""
    assert "ambiguous was 1" in message and "stopped the ramp early" in message


# -- the runner --------------------------------------------------------------------------


async def test_abort_on_fail_stops_the_ramp_once_a_threshold_is_lost() -> None:
    config = LoadTestConfig(
        "agent-1",
        simulated_numbers(5),
        Ramp.parse("0:10/s,600:10/s"),
        time_scale=50.0,
        thresholds=[Threshold.parse("placed<=5"), Threshold.parse("ambiguous==0")],
        abort_on_fail=True,
    )
    async with simulated_service(time_scale=50, lifecycle=SHORT_CALLS) as sim:
        async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
            result = await LoadTest(client, config).run()
    assert result.info.aborted_by == "placed<=5"
    assert result.info.stopped_at is not None and result.info.stopped_at < 600
    assert result.due < config.ramp.total_calls
    assert [v.passed for v in result.verdicts] == [False, True]
    assert result.placed == sum(result.final_statuses.values())  # live calls followed
    assert result.to_dict()["thresholds"][0]["threshold"] == "placed<=5"


def test_abort_on_fail_needs_thresholds() -> None:
    with pytest.raises(ValueError, match="needs thresholds"):
        LoadTestConfig("a", ["+12025550100"], Ramp.parse("0:1/s,1:1/s"), abort_on_fail=True)


# -- the command line --------------------------------------------------------------------


def _voicehub(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed ``voicehub`` command, as CI runs it."""
    command = [sys.executable, "-c", "import sys; from voicehub_async.cli import main; "
               "sys.exit(main(sys.argv[1:]))", *args]  # fmt: skip
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def _junit(path: Path) -> list[tuple[str, bool]]:
    suite = ET.parse(path).getroot()
    return [(c.get("name") or "", c.find("failure") is None) for c in suite.iter("testcase")]


@pytest.mark.slow
def test_cli_failing_threshold_exits_99_with_junit(tmp_path: Path) -> None:
    """The README's command, exactly: the defaults cannot start a call in 1 ms."""
    done = _voicehub(
        "loadtest", "--simulate", "--threshold", "time_to_started.p95<1ms", "--junit", "j.xml",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 99, done.stderr
    assert _junit(tmp_path / "j.xml") == [("run", True), ("time_to_started.p95<1ms", False)]
    assert "time_to_started.p95<1ms:  ✗ FAIL" in done.stdout
    assert "1 threshold(s) failed: time_to_started.p95<1ms (exit status 99)" in done.stdout


@pytest.mark.slow
def test_cli_the_same_with_a_threshold_that_holds_exits_0(tmp_path: Path) -> None:
    done = _voicehub(
        "loadtest", "--simulate", "--threshold", "time_to_started.p95<1h", "--junit", "j.xml",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert _junit(tmp_path / "j.xml") == [("run", True), ("time_to_started.p95<1h", True)]
    assert "all 1 threshold(s) passed" in done.stdout


def test_cli_thresholds_that_hold_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junit = tmp_path / "j.xml"
    code = main(
        [
            "loadtest", "--simulate", "--rate", "20/s", "--duration", "10s", "--time-scale", "50",
            "--threshold", "time_to_started.p95<1h", "--threshold", "ambiguous==0",
            "--threshold", "dropped_rate<1%", "--junit", str(junit),
            "--report", str(tmp_path / "run.json"),
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert _junit(junit) == [
        ("run", True), ("time_to_started.p95<1h", True), ("ambiguous==0", True),
        ("dropped_rate<1%", True),
    ]  # fmt: skip
    assert "all 3 threshold(s) passed" in out
    figures = json.loads((tmp_path / "run.json").read_text())
    assert [t["passed"] for t in figures["thresholds"]] == [True, True, True]


def test_cli_abort_on_fail_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "loadtest", "--simulate", "--ramp", "0:10/s,600:10/s", "--time-scale", "50",
            "--threshold", "placed<=3", "--abort-on-fail", "--json",
        ]
    )  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert code == 99 == data["exit_code"]
    assert data["info"]["aborted_by"] == "placed<=3"
    assert data["due"] < 6000
    assert data["thresholds"][0]["passed"] is False


def test_cli_misspelled_threshold_is_refused_before_any_call(
    voicehub_simulator: SimulatorThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VOICEHUB_API_KEY", voicehub_simulator.api_key)
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("+12025550100\n")
    base = ["loadtest", "--agent", "a1", "--numbers", str(numbers), "--rate", "5/s",
            "--duration", "2s", "--base-url", voicehub_simulator.base_url]  # fmt: skip
    for bad, message in [
        ("time_to_start.p95<5s", "did you mean 'time_to_started.p95'"),
        ("ambiguous=0", "is not a threshold"),
        ("trigger_latency.p99<800", "write its unit"),
    ]:
        code = main([*base, "--threshold", bad, "--junit", str(tmp_path / "j.xml")])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "--threshold: " in err and message in err
    code = main([*base, "--abort-on-fail"])
    assert code == 2 and "needs a --threshold" in capsys.readouterr().err
    assert voicehub_simulator.trigger_count == 0
    assert not (tmp_path / "j.xml").exists()


@pytest.mark.parametrize(
    ("answer", "kind", "hint"),
    [
        ("401", "http_401", "check $VOICEHUB_API_KEY"),
        ("500", "ambiguous", "see the reasons not placed above"),
        ("302", "http_302", "check --base-url"),
    ],
)
def test_cli_every_trigger_failing_exits_1(
    answer: str,
    kind: str,
    hint: str,
    voicehub_simulator: SimulatorThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 10: a run whose every trigger failed used to exit 0."""
    sim = voicehub_simulator
    monkeypatch.setenv("VOICEHUB_API_KEY", "wrong-key" if answer == "401" else sim.api_key)
    if answer == "500":
        sim.inject(Fault.status(500), "trigger", times=None)
    elif answer == "302":
        sim.inject(Fault.redirect(), "trigger", times=None)
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("+12025550100\n+12025550101\n")
    junit = tmp_path / "j.xml"
    code = main(
        ["loadtest", "--agent", "a1", "--numbers", str(numbers), "--rate", "5/s",
         "--duration", "2s", "--base-url", sim.base_url, "--junit", str(junit)]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert f"not placed: {kind}:" in out.replace("  ", " ") or f"not placed: {kind}" in out
    assert "load test FAILED: no trigger was placed: all 10 failed" in out
    assert hint in out
    assert _junit(junit) == [("run", False)]
    assert sim.created_count == 0


def test_html_report_marks_each_threshold() -> None:
    pytest.importorskip("matplotlib")
    from voicehub_async.loadtest import render_html

    result = _scripted().result(_info(aborted_by="ambiguous==0"), until=10.0)
    thresholds = [Threshold.parse("ambiguous==0"), Threshold.parse("dropped_rate<50%")]
    page = render_html(attrs.evolve(result, verdicts=check_all(thresholds, result)))
    assert "Thresholds: 1 of 2 failed" in page
    assert (
        '<tr class="fail"><td class="mark">✗ fail</td><th><code>ambiguous==0</code></th>'
        '<td>1</td><td class="note">could not hold any more: it stopped the ramp</td></tr>'
    ) in page
    assert (
        '<tr class="pass"><td class="mark">✓ pass</td><th><code>dropped_rate&lt;50%</code></th>'
        "<td>25%</td>"
    ) in page
    # Without thresholds, no section at all.
    assert "Thresholds" not in render_html(result)
