"""``python -m voicehub_async.simulator``: serve a fake VoiceHub until stopped.

The CLI's ``voicehub simulate`` reuses :func:`add_arguments` and
:func:`run_from_args`. Once listening, exactly one line is printed (and
flushed) so that a parent process can read the URL from the pipe::

    VoiceHub simulator listening on http://127.0.0.1:8080 (api key: sim-key)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ENDPOINTS, FaultConfig, LifecycleConfig, SimulatorConfig

if TYPE_CHECKING:
    from .triggerlog import TriggerLogFile

__all__ = ["add_arguments", "config_from_args", "main", "run_from_args"]


def _outcomes(text: str) -> dict[str, float]:
    """Parse ``completed=0.7,unanswered=0.15,...``."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT, got {part!r}")
        try:
            weights[name.strip()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {weight!r}") from None
    return weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to ``parser`` (shared with ``voicehub simulate``)."""
    defaults = SimulatorConfig()
    life = LifecycleConfig()
    faults = FaultConfig()
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    add(
        "--port",
        type=int,
        default=8080,
        help="port to bind, 0 for a free one (default: %(default)s)",
    )
    add("--api-key", default=defaults.api_key, help="accepted API key (default: %(default)s)")
    add(
        "--extra-api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="another accepted API key (repeatable)",
    )
    add(
        "--time-scale",
        type=float,
        default=defaults.time_scale,
        help="simulated seconds per real second (default: %(default)s)",
    )
    add("--seed", type=int, default=defaults.seed, help="random seed (default: %(default)s)")

    group = parser.add_argument_group("call lifecycle (simulated seconds)")
    group.add_argument(
        "--queue-delay", type=float, nargs=2, metavar=("MIN", "MAX"), default=list(life.queue_delay)
    )
    group.add_argument(
        "--ring-time", type=float, nargs=2, metavar=("MIN", "MAX"), default=list(life.ring_time)
    )
    group.add_argument(
        "--talk-time", type=float, nargs=2, metavar=("MIN", "MAX"), default=list(life.talk_time)
    )
    group.add_argument(
        "--outcomes",
        type=_outcomes,
        default=dict(life.outcomes),
        metavar="NAME=W,...",
        help="outcome weights, e.g. completed=0.7,unanswered=0.15,busy=0.1,failed=0.05",
    )

    group = parser.add_argument_group("faults")
    group.add_argument(
        "--latency",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=list(faults.latency),
        help="added real seconds, uniform",
    )
    group.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="PER_SECOND",
        help="requests per second per API key before answering 429",
    )
    group.add_argument(
        "--rate-limit-burst",
        type=int,
        default=None,
        metavar="N",
        help="requests allowed at once before --rate-limit applies (default: one second's worth)",
    )
    group.add_argument(
        "--max-live-calls",
        type=int,
        default=None,
        metavar="N",
        help="calls live at once per API key before a trigger is answered 429 "
        "'concurrent call limit exceeded' (default: no cap)",
    )
    fault_help = {
        "error-500": "share of requests answered 500",
        "error-503": "share of requests answered 503",
        "reset-before-create": "share of requests reset before being handled",
        "reset-after-create": "share of requests reset after being handled (a call is placed)",
        "slow": "share of requests answered only after --slow-delay",
    }
    for name, text in fault_help.items():
        group.add_argument(
            f"--{name}-rate", type=float, default=0.0, metavar="P", help=f"{text} (0 to 1)"
        )
    group.add_argument(
        "--slow-delay",
        type=float,
        default=faults.slow_delay,
        metavar="SECONDS",
        help="real seconds a slow answer takes (default: %(default)s)",
    )
    group.add_argument(
        "--fault-endpoint",
        action="append",
        choices=sorted(ENDPOINTS),
        default=None,
        help="endpoint the random faults apply to (repeatable; default: the API endpoints)",
    )

    group = parser.add_argument_group("answers")
    group.add_argument(
        "--recordings-shape",
        choices=("object", "list", "string"),
        default="object",
        help="shape of the (undocumented) recordings answer (default: %(default)s)",
    )
    group.add_argument(
        "--recording-size",
        type=int,
        default=defaults.recording_size,
        metavar="BYTES",
        help="size of each served recording file (default: %(default)s)",
    )
    group.add_argument(
        "--owned-number",
        action="append",
        default=None,
        metavar="E164",
        help="a number accepted as 'from' (repeatable; default: any)",
    )
    group.add_argument(
        "--trigger-log",
        type=Path,
        default=None,
        metavar="FILE",
        help="write one JSON line per trigger received to FILE, as they come, and print "
        "the calls per number when stopping",
    )
    group.add_argument(
        "--no-record-triggers",
        action="store_true",
        help="keep only counters, not a log entry per trigger (long benchmarks)",
    )

    group = parser.add_argument_group("webhooks")
    group.add_argument(
        "--webhook-url",
        default=None,
        metavar="URL",
        help="POST each call's webhook events here (secret from $VOICEHUB_WEBHOOK_SECRET)",
    )
    group.add_argument(
        "--webhook-repeat-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="share of webhook events delivered twice (0 to 1)",
    )
    group.add_argument(
        "--webhook-reorder-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="share of webhook events delivered after the next one (0 to 1)",
    )


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Build the configuration the parsed options describe (ValueError if invalid)."""
    endpoints = frozenset(args.fault_endpoint or FaultConfig().endpoints)
    return SimulatorConfig(
        api_key=args.api_key,
        extra_api_keys=frozenset(args.extra_api_key),
        time_scale=args.time_scale,
        seed=args.seed,
        lifecycle=LifecycleConfig(
            queue_delay=args.queue_delay,
            ring_time=args.ring_time,
            talk_time=args.talk_time,
            outcomes=args.outcomes,
        ),
        faults=FaultConfig(
            latency=args.latency,
            rate_limit=args.rate_limit,
            rate_limit_burst=args.rate_limit_burst,
            max_live_calls=args.max_live_calls,
            error_500_rate=args.error_500_rate,
            error_503_rate=args.error_503_rate,
            reset_before_create_rate=args.reset_before_create_rate,
            reset_after_create_rate=args.reset_after_create_rate,
            slow_rate=args.slow_rate,
            slow_delay=args.slow_delay,
            endpoints=endpoints,
        ),
        recordings_shape=args.recordings_shape,
        recording_size=args.recording_size,
        owned_numbers=None if args.owned_number is None else frozenset(args.owned_number),
        record_triggers=not args.no_record_triggers,
        webhook_url=args.webhook_url,
        # From the environment, not a flag, so it does not show in `ps`.
        webhook_secret=os.environ.get("VOICEHUB_WEBHOOK_SECRET") if args.webhook_url else None,
        webhook_repeat_rate=args.webhook_repeat_rate,
        webhook_reorder_rate=args.webhook_reorder_rate,
    )


async def _serve(
    config: SimulatorConfig, host: str, port: int, log: TriggerLogFile | None = None
) -> None:
    from .._signals import handle_signals
    from .server import Simulator

    stop = asyncio.Event()
    # Where signals cannot be handled (Windows), Ctrl-C arrives as KeyboardInterrupt.
    with handle_signals(lambda _signum: stop.set()):
        async with Simulator(config, host=host, port=port, trigger_sink=log) as sim:
            print(
                f"VoiceHub simulator listening on {sim.base_url} (api key: {sim.api_key})",
                flush=True,
            )
            try:
                await stop.wait()
            finally:
                if log is not None:
                    # After the last answer went out: the summary covers the file.
                    await sim.stop()
                    log.close()
                    print(log.summary(), flush=True)


def run_from_args(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit status."""
    from .triggerlog import TriggerLogFile

    try:
        config = config_from_args(args)
    except (TypeError, ValueError) as exc:
        print(f"voicehub simulator: invalid configuration: {exc}", file=sys.stderr)
        return 2
    log: TriggerLogFile | None = None
    if args.trigger_log is not None:
        try:
            log = TriggerLogFile(args.trigger_log)
        except OSError as exc:
            print(f"voicehub simulator: cannot write --trigger-log: {exc}", file=sys.stderr)
            return 2
    try:
        asyncio.run(_serve(config, args.host, args.port, log))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(
            f"voicehub simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    finally:
        if log is not None:
            log.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m voicehub_async.simulator``."""
    parser = argparse.ArgumentParser(
        prog="python -m voicehub_async.simulator",
        description="Serve a fake VoiceHub VoIP Calls API for tests and demos.",
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
