"""``voicehub loadtest``: place calls to test numbers following a ramp, and measure.

Everything is checked before the first call: the ramp, the numbers file
(every bad line reported at once), ``--context``, the report's dependencies
and the API key. ``--dry-run`` stops there and prints the plan. The run
itself shows a progress bar on stderr; Ctrl-C once stops placing calls and
still follows the live ones so the report is complete, twice aborts.

``--simulate`` runs the built-in simulator in-process and needs no other
option (see :mod:`voicehub_async.loadtest.simulated` for its defaults).

Exit statuses, for CI: 0 the run went through and every ``--threshold``
held; 1 the run itself failed (no trigger placed, more than half of them not
placed, or the service or a file failed); 2 bad usage or input, nothing sent;
99 a threshold failed (k6's convention); 130 interrupted twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from voicehub_async._signals import handle_signals

from ._common import (
    EXIT_API_ERROR,
    EXIT_OK,
    CommandError,
    add_client_arguments,
    make_client,
    make_console,
    port_number,
    positive_float,
    positive_int,
    print_fields,
    print_json,
)

if TYPE_CHECKING:
    from rich.console import Console

    from voicehub_async.client import VoiceHubClient
    from voicehub_async.loadtest.metrics import LoadTestResult
    from voicehub_async.loadtest.ramp import Ramp
    from voicehub_async.loadtest.runner import LoadTest, LoadTestConfig
    from voicehub_async.loadtest.thresholds import Threshold
    from voicehub_async.webhooks import WebhookReceiver

__all__ = ["EXIT_THRESHOLD_FAILED", "register"]

#: A threshold failed: k6's exit status, so CI scripts written for k6 work.
EXIT_THRESHOLD_FAILED: Final = 99

WEBHOOK_SECRET_ENV: Final = "VOICEHUB_WEBHOOK_SECRET"
#: Real seconds between two plain progress lines when stderr is not a terminal.
_PLAIN_INTERVAL: Final = 5.0
#: Real seconds between two refreshes of the progress bar.
_REFRESH: Final = 0.25


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``loadtest``."""
    parser = subparsers.add_parser(
        "loadtest",
        help="load-test an agent: place calls to test numbers following a ramp",
        description="Place calls to a set of test numbers following a ramp and a ceiling of "
        "live calls, follow each call (polling, plus webhooks with --webhook-port) and report "
        "what happened, over time. Triggers are sent once: an ambiguous failure is counted, "
        "never retried. --simulate runs against the built-in simulator and needs no other "
        "option.",
        epilog="Ramp: time:rate pairs, linear between points, e.g. 0:1/s,60:10/s,120:10/s "
        "(times in s, or 2m, 1h; rates /s, /m or /h). The webhook secret is read from "
        f"${WEBHOOK_SECRET_ENV}.",
    )
    what = parser.add_argument_group("what to call")
    what.add_argument("--agent", metavar="AGENT_ID", help="the agent under test")
    what.add_argument(
        "--numbers",
        metavar="FILE",
        type=Path,
        help="test numbers, one per line (# comments allowed); called in turn, round and round",
    )
    what.add_argument(
        "--context",
        metavar="JSON",
        help="a JSON object handed to the agent on every call, or @FILE to read one",
    )
    what.add_argument("--from", dest="from_number", metavar="NUMBER", help="source number")

    load = parser.add_argument_group("how much load")
    load.add_argument(
        "--ramp",
        metavar="SPEC",
        help="time:rate points, linear between them, e.g. 0:1/s,60:10/s,120:10/s",
    )
    load.add_argument("--rate", metavar="RATE", help="a constant rate instead of --ramp, e.g. 5/s")
    load.add_argument("--duration", metavar="TIME", help="how long --rate lasts, e.g. 90s or 2m")
    load.add_argument(
        "--max-live",
        type=positive_int,
        default=500,
        metavar="N",
        help="ceiling of calls live at once; a call due at the ceiling is dropped and counted "
        "(default: %(default)s)",
    )
    load.add_argument(
        "--dry-run", action="store_true", help="check everything, print the plan, place nothing"
    )

    follow = parser.add_argument_group("following calls")
    follow.add_argument(
        "--webhook-port",
        type=port_number,
        metavar="PORT",
        help="also receive VoiceHub's webhooks on this port (secret from "
        f"${WEBHOOK_SECRET_ENV}; 0 picks a free port, useful with --simulate)",
    )
    follow.add_argument(
        "--webhook-host",
        metavar="HOST",
        help="address the webhook receiver binds (default: 0.0.0.0, or 127.0.0.1 with --simulate)",
    )
    follow.add_argument(
        "--poll-interval",
        metavar="TIME",
        default="2s",
        help="poll a call this soon after it changed (default: %(default)s)",
    )
    follow.add_argument(
        "--max-poll-interval",
        metavar="TIME",
        default="15s",
        help="poll an unchanged call at least this often (default: %(default)s)",
    )
    follow.add_argument(
        "--max-call-time",
        metavar="TIME",
        default="30m",
        help="stop following a call after this long and count it timed_out (default: %(default)s)",
    )

    gate = parser.add_argument_group(
        "pass or fail (for CI)",
        "exit 0: passed; 1: the run failed (no trigger placed, or more than half not placed); "
        "2: bad usage, nothing sent; 99: a threshold failed",
    )
    gate.add_argument(
        "--threshold",
        dest="thresholds",
        action="append",
        default=[],
        metavar="EXPR",
        help="a pass/fail criterion, as k6 writes them (repeatable): e.g. "
        "'time_to_started.p95<5s', 'trigger_latency.p99<800ms', 'ambiguous==0', "
        "'answered_rate>=0.9', 'dropped_rate<1%%'; the run exits 99 when one fails",
    )
    gate.add_argument(
        "--abort-on-fail",
        action="store_true",
        help="stop the ramp as soon as a threshold cannot hold any more (live calls are "
        "still followed to their end)",
    )
    gate.add_argument(
        "--junit",
        metavar="FILE",
        type=Path,
        help="write the verdicts as JUnit XML: a test case per threshold, plus 'run'",
    )

    out = parser.add_argument_group("report")
    out.add_argument(
        "--report",
        metavar="FILE",
        type=Path,
        help="write an HTML page with charts (needs voicehub-async[report]) and FILE.json "
        "with the same figures; a .json FILE writes the figures alone",
    )

    sim = parser.add_argument_group("simulation")
    sim.add_argument(
        "--simulate",
        action="store_true",
        help="run against the built-in simulator, in-process; defaults: agent-loadtest, 100 "
        "fictional numbers, ramp 0:1/s,60:10/s,120:10/s",
    )
    sim.add_argument(
        "--time-scale",
        type=positive_float,
        metavar="X",
        help="with --simulate: simulated seconds per real second, for the calls and the ramp "
        "alike (default: 10)",
    )
    sim.add_argument(
        "--seed", type=int, default=0, help="with --simulate: the simulator's seed (default: 0)"
    )
    add_client_arguments(parser)
    parser.set_defaults(handler=run_loadtest)


# -- checking the options -------------------------------------------------------------------


def _duration(option: str, text: str) -> float:
    from voicehub_async.loadtest.ramp import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise CommandError(f"{option}: {exc}", field=option) from None
    if not value > 0:
        raise CommandError(f"{option} must be longer than 0 seconds", field=option)
    return value


def _ramp(args: argparse.Namespace) -> Ramp:
    from voicehub_async.loadtest.ramp import Ramp, parse_rate
    from voicehub_async.loadtest.simulated import default_simulated_ramp

    if args.ramp is not None:
        if args.rate is not None or args.duration is not None:
            raise CommandError("give either --ramp, or --rate with --duration, not both")
        try:
            return Ramp.parse(args.ramp)
        except ValueError as exc:
            raise CommandError(f"--ramp: {exc}", field="--ramp") from None
    if args.rate is not None or args.duration is not None:
        if args.rate is None or args.duration is None:
            raise CommandError("--rate and --duration go together (or use --ramp)")
        try:
            rate = parse_rate(args.rate)
        except ValueError as exc:
            raise CommandError(f"--rate: {exc}", field="--rate") from None
        return Ramp.constant(rate, _duration("--duration", args.duration))
    if args.simulate:
        return default_simulated_ramp()
    raise CommandError("say how much load: --ramp SPEC, or --rate with --duration")


def _numbers(args: argparse.Namespace) -> tuple[str, ...]:
    from voicehub_async.loadtest.numbers import NumbersFileError, read_numbers
    from voicehub_async.loadtest.simulated import simulated_numbers

    if args.numbers is None:
        if args.simulate:
            return simulated_numbers()
        raise CommandError("--numbers FILE is required: the test numbers to call")
    try:
        return read_numbers(args.numbers, default_region=args.default_region)
    except NumbersFileError as exc:
        raise CommandError(str(exc), kind="invalid_input", field="--numbers") from None
    except OSError as exc:
        raise CommandError(
            f"--numbers: cannot read {args.numbers}: {exc.strerror or exc}", field="--numbers"
        ) from None


def _thresholds(args: argparse.Namespace) -> tuple[Threshold, ...]:
    from voicehub_async.loadtest.thresholds import Threshold

    thresholds = []
    for text in args.thresholds:
        try:
            thresholds.append(Threshold.parse(text))
        except ValueError as exc:
            raise CommandError(f"--threshold: {exc}", field="--threshold") from None
    if args.abort_on_fail and not thresholds:
        raise CommandError("--abort-on-fail needs a --threshold to judge", field="--abort-on-fail")
    return tuple(thresholds)


def _check_folder(option: str, path: Path | None) -> None:
    """Found now, not after the run has placed all its calls."""
    if path is not None and not path.parent.is_dir():
        raise CommandError(f"{option}: no such folder: {path.parent}", field=option)


def _config(args: argparse.Namespace) -> LoadTestConfig:
    from voicehub_async.errors import InvalidRequestError
    from voicehub_async.loadtest.runner import LoadTestConfig
    from voicehub_async.loadtest.simulated import DEFAULT_TIME_SCALE, SIMULATED_AGENT
    from voicehub_async.models import normalize_number

    from .calls import parse_context

    if args.time_scale is not None and not args.simulate:
        raise CommandError("--time-scale only applies with --simulate", field="--time-scale")
    agent = args.agent or (SIMULATED_AGENT if args.simulate else None)
    if not agent:
        raise CommandError("--agent AGENT_ID is required: the agent under test", field="--agent")
    ramp = _ramp(args)
    if ramp.total_calls == 0:
        raise CommandError("this ramp places no call: give it a positive rate", field="--ramp")
    numbers = _numbers(args)
    context = parse_context(args.context) if args.context is not None else None
    from_number = None
    if args.from_number is not None:
        try:
            from_number = normalize_number(args.from_number, "from", args.default_region)
        except InvalidRequestError as exc:
            raise CommandError(f"--from: {exc}", kind="invalid_input", field="--from") from None
    poll = _duration("--poll-interval", args.poll_interval)
    max_poll = _duration("--max-poll-interval", args.max_poll_interval)
    if max_poll < poll:
        raise CommandError("--max-poll-interval must not be shorter than --poll-interval")
    return LoadTestConfig(
        agent_id=agent,
        numbers=numbers,
        ramp=ramp,
        max_live=args.max_live,
        time_scale=(args.time_scale or DEFAULT_TIME_SCALE) if args.simulate else 1.0,
        poll_interval=poll,
        max_poll_interval=max_poll,
        max_call_time=_duration("--max-call-time", args.max_call_time),
        context=context,
        from_number=from_number,
        thresholds=_thresholds(args),
        abort_on_fail=args.abort_on_fail,
    )


def _webhook_secret(args: argparse.Namespace) -> str | None:
    if args.webhook_port is None:
        return None
    secret = os.environ.get(WEBHOOK_SECRET_ENV, "").strip()
    if secret:
        return secret
    if args.simulate:
        # The simulator is the only sender: any secret will do, as long as
        # it is not a guessable constant on an open port.
        return secrets.token_urlsafe(24)
    raise CommandError(
        f"--webhook-port needs the agent's webhook secret in ${WEBHOOK_SECRET_ENV}",
        kind="configuration",
        field="--webhook-port",
    )


# -- running ----------------------------------------------------------------------------------


def run_loadtest(args: argparse.Namespace) -> Any:
    """Check everything synchronously, then return the coroutine that runs."""
    from voicehub_async.loadtest.ramp import format_duration
    from voicehub_async.loadtest.report import ReportUnavailableError, check_report_support

    config = _config(args)
    if args.report is not None:
        if args.report.suffix.lower() not in (".html", ".htm", ".json"):
            raise CommandError(
                f"--report {args.report}: name an .html page (with its .json figures) "
                "or a .json file",
                field="--report",
            )
        try:
            check_report_support(args.report)
        except ReportUnavailableError as exc:
            raise CommandError(str(exc), kind="configuration", field="--report") from None
        _check_folder("--report", args.report)
    _check_folder("--junit", args.junit)
    secret = _webhook_secret(args)
    client = None if args.simulate or args.dry_run else make_client(args)
    ramp = config.ramp
    plan = [
        ("agent", config.agent_id),
        ("target", _target(args, client)),
        ("numbers", f"{len(set(config.numbers))} test number(s)"),
        ("ramp", f"{ramp} ({format_duration(ramp.duration)})"),
        (
            "calls",
            f"{ramp.total_calls}, at most {ramp.peak_rate:g}/s, at most {config.max_live} live",
        ),
    ]
    if args.simulate:
        plan.append(
            (
                "time scale",
                f"{config.time_scale:g}x: about "
                f"{format_duration(ramp.duration / config.time_scale)} of wall time",
            )
        )
    for threshold in config.thresholds:
        plan.append(("threshold", str(threshold)))
    if config.abort_on_fail:
        plan.append(("abort on fail", "the ramp stops once a threshold cannot hold"))
    if args.dry_run:
        if args.json:
            print_json({"plan": dict(plan), "dry_run": True})
        else:
            print_fields(make_console(), plan, title="Load test plan (dry run: nothing placed)")
        return EXIT_OK
    if not args.json:
        print_fields(make_console(stderr=True), plan, title="Load test")
    return _run(args, config, client, secret)


def _target(args: argparse.Namespace, client: VoiceHubClient | None) -> str:
    """What the run talks to, with the URL: a plan against a staging URL must say so."""
    from voicehub_async.config import DEFAULT_BASE_URL, check_base_url

    from ._common import BASE_URL_ENV

    if args.simulate:
        return "the built-in simulator (in-process)"
    if client is not None:
        url = client.base_url
    else:  # --dry-run makes no client (it needs no key)
        url = args.base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        try:
            url = check_base_url(url)
        except ValueError as exc:
            raise CommandError(str(exc), kind="configuration", field="--base-url") from None
    return f"the VoiceHub API at {url}"


async def _run(
    args: argparse.Namespace,
    config: LoadTestConfig,
    client: VoiceHubClient | None,
    secret: str | None,
) -> int:
    from voicehub_async.client import VoiceHubClient
    from voicehub_async.loadtest.junit import write_junit
    from voicehub_async.loadtest.report import write_report
    from voicehub_async.loadtest.runner import LoadTest
    from voicehub_async.loadtest.simulated import simulated_service
    from voicehub_async.loadtest.thresholds import run_problem
    from voicehub_async.loadtest.webhook_server import serve_webhooks
    from voicehub_async.webhooks import WebhookReceiver

    async with contextlib.AsyncExitStack() as stack:
        receiver: WebhookReceiver | None = None
        webhook_url: str | None = None
        if secret is not None:
            receiver = WebhookReceiver(secret)
            host = args.webhook_host or ("127.0.0.1" if args.simulate else "0.0.0.0")
            port = await stack.enter_async_context(
                serve_webhooks(receiver, host, args.webhook_port)
            )
            local = "127.0.0.1" if host in ("0.0.0.0", "") else host
            webhook_url = f"http://{local}:{port}/voicehub/events"
            if not args.json:
                make_console(stderr=True).print(
                    f"receiving webhooks on {host}:{port} (any path)", highlight=False
                )
        if args.simulate:
            simulator = await stack.enter_async_context(
                simulated_service(
                    time_scale=config.time_scale,
                    webhook_url=webhook_url,
                    webhook_secret=secret,
                    seed=args.seed,
                )
            )
            client = VoiceHubClient(
                simulator.api_key, base_url=simulator.base_url, timeout=args.timeout
            )
        assert client is not None
        await stack.enter_async_context(client)
        test = LoadTest(client, config, receiver=receiver, simulated=args.simulate)
        with _stop_on_interrupt(test, None if args.json else make_console(stderr=True)):
            result = await _with_progress(test, show=not args.json)
    written = write_report(result, args.report) if args.report is not None else []
    if args.junit is not None:
        written.append(write_junit(result, args.junit))
    problem = run_problem(result)
    code = exit_status(result)
    if args.json:
        data = result.to_dict()
        data["report_files"] = [str(path) for path in written]
        data["problem"] = problem
        data["exit_code"] = code
        print_json(data)
    else:
        _print_summary(make_console(), result, written)
        _print_verdicts(make_console(), result, problem)
    return code


def exit_status(result: LoadTestResult) -> int:
    """1 when the run failed on its own, else 99 when a threshold failed, else 0.

    A run that placed nothing says more about the key or the URL than any
    threshold, so its status wins.
    """
    from voicehub_async.loadtest.thresholds import run_problem

    if run_problem(result) is not None:
        return EXIT_API_ERROR
    if not result.thresholds_passed:
        return EXIT_THRESHOLD_FAILED
    return EXIT_OK


@contextlib.contextmanager
def _stop_on_interrupt(test: LoadTest, console: Console | None) -> Iterator[None]:
    """First Ctrl-C: stop the ramp, keep following live calls. The handler
    then removes itself, so a second Ctrl-C interrupts as usual."""

    def first_interrupt(_signum: int) -> None:
        restore()
        test.stop()
        if console is not None:
            console.print(
                f"stopping: no more calls placed; following the {test.metrics.live} live "
                "call(s) to the end (Ctrl-C again to abort)",
                highlight=False,
            )

    with handle_signals(first_interrupt, (signal.SIGINT,)) as restore:
        yield


def _status_line(test: LoadTest) -> str:
    p = test.progress()
    return (
        f"live {p.live}  placed {p.placed}  ended {p.ended}"
        + (f"  dropped {p.dropped}" if p.dropped else "")
        + (f"  not placed {p.not_placed}" if p.not_placed else "")
    )


async def _with_progress(test: LoadTest, *, show: bool) -> LoadTestResult:
    """Run ``test`` with a progress bar on a terminal, plain lines elsewhere.

    A CI log or a redirected stderr gets a line every few seconds instead of
    minutes of silence.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = make_console(stderr=True)
    if not show:
        return await test.run()
    run = asyncio.ensure_future(test.run())
    if not console.is_terminal:
        while not run.done():
            await asyncio.wait({run}, timeout=_PLAIN_INTERVAL)
            p = test.progress()
            phase = "ramp" if p.placing else "finishing"
            print(
                f"loadtest {phase}: due {p.due}/{test.total_calls}  {_status_line(test)}",
                file=sys.stderr,
                flush=True,
            )
        return run.result()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=True,
    )
    with progress:
        bar = progress.add_task("ramp", total=test.total_calls, status="")
        while not run.done():
            await asyncio.wait({run}, timeout=_REFRESH)
            p = test.progress()
            progress.update(
                bar,
                completed=p.due,
                description="ramp" if p.placing else "finishing",
                status=_status_line(test),
            )
    return run.result()


def _pct(value: float | None) -> str:
    return "-" if value is None else (f"{value:.1f}" if value >= 10 else f"{value:.2f}")


def _print_summary(console: Console, result: LoadTestResult, written: list[Path]) -> None:
    info = result.info
    unit = "simulated s" if info.simulated else "s"
    rows: list[tuple[str, object]] = [
        ("due", result.due),
        (
            "dropped",
            f"{result.dropped} (due while --max-live {info.max_live} calls were live)"
            if result.dropped
            else 0,
        ),
        ("placed", f"{result.placed} of {result.sent} sent"),
    ]
    for kind, count in result.not_placed.items():
        note = "  (may have been placed: never retried)" if kind == "ambiguous" else ""
        rows.append((f"not placed: {kind}", f"{count}{note}"))
    rows += [
        ("answered", result.answered),
        ("completed", result.completed),
    ]
    for status, count in result.final_statuses.items():
        if status != "completed":
            rows.append((f"ended {status}", count))
    if result.unfinished:
        rows.append(("unfinished", result.unfinished))
    for label, dist in (
        (f"time to started ({unit})", result.time_to_started),
        (f"call duration ({unit})", result.duration),
        ("trigger latency (ms)", result.trigger_latency_ms),
    ):
        rows.append(
            (
                label,
                f"p50 {_pct(dist.p50)}  p95 {_pct(dist.p95)}  p99 {_pct(dist.p99)}"
                f"  ({dist.count} calls)",
            )
        )
    rows.append(("peak live", result.peak_live))
    rows.append(("wall time", f"{info.wall_seconds:.1f} s"))
    for path in written:
        rows.append(("report", str(path)))
    print_fields(console, rows, title=f"Load test of {info.agent_id}: {info.ramp}")


def _print_verdicts(console: Console, result: LoadTestResult, problem: str | None) -> None:
    """The thresholds with a mark each, then one line saying how the run ends."""
    from rich.text import Text

    if result.verdicts:
        rows: list[tuple[str, object]] = []
        for verdict in result.verdicts:
            mark = Text("✓ pass", style="green") if verdict.passed else Text("✗ FAIL", style="red")
            note = ""
            if result.info.aborted_by == verdict.threshold.expression:
                note = "  (could not hold any more: the ramp was stopped)"
            rows.append((str(verdict.threshold), Text.assemble(mark, f"  {verdict.shown}{note}")))
        print_fields(console, rows, title="Thresholds")
    failed = [str(v.threshold) for v in result.verdicts if not v.passed]
    if problem is not None:
        console.print(
            Text(
                f"load test FAILED: {problem}; {_what_to_check(result)} "
                f"(exit status {EXIT_API_ERROR})",
                style="bold red",
            )
        )
    elif failed:
        console.print(
            Text(
                f"{len(failed)} threshold(s) failed: {', '.join(failed)} "
                f"(exit status {EXIT_THRESHOLD_FAILED})",
                style="bold red",
            )
        )
    elif result.verdicts:
        console.print(Text(f"all {len(result.verdicts)} threshold(s) passed", style="green"))


def _what_to_check(result: LoadTestResult) -> str:
    """Where to look first, from the commonest reason the triggers failed."""
    from ._common import API_KEY_ENV, BASE_URL_ENV

    if not result.not_placed:
        return "nothing was sent: see the messages above"
    kind = max(result.not_placed, key=lambda k: result.not_placed[k])
    if kind in ("http_401", "http_403"):
        return f"the service refused the API key: check ${API_KEY_ENV}"
    if kind.startswith("http_3") or kind == "http_404" or kind == "connection_failed":
        return f"the service is not where the URL says: check --base-url / ${BASE_URL_ENV}"
    if kind == "rate_limited":
        return "the service rate-limited the triggers: lower the ramp"
    return "the service failed the triggers: see the reasons not placed above"
