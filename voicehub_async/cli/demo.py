"""``voicehub demo``: a whole campaign against the built-in simulator.

No account, no key, no network beyond loopback: the simulator starts in this
process on a free port with a realistic mix of latency, errors, rate limits
and outcomes (see :mod:`voicehub_async.campaign.demo`), 1,000 synthetic
contacts are written to a temporary directory, and the campaign runs with
the same display, journal and summary as ``voicehub campaign``. At the end
the simulator's own log is checked: no number was dialed twice.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from ._common import EXIT_API_ERROR, add_json_argument, make_console
from .campaign import add_campaign_options, report_summary, run_campaign

__all__ = ["register"]


def _calls(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1000000, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="run a campaign against the built-in simulator (no account needed)",
        description="Start the built-in VoiceHub simulator on a free loopback port (latency, "
        "2% of 503s, a rate limit, ~70% completed / 15% unanswered / 10% busy / 5% "
        "failed, a few scheduled calls, a 60x faster clock), write synthetic contacts to a "
        "temporary directory and run a full campaign on them, to the final summary.",
    )
    parser.add_argument(
        "--calls", type=_calls, default=1000, metavar="N", help="contacts (default: %(default)s)"
    )
    parser.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help="where to write the contacts, journal and results (default: a new temporary "
        "directory, kept so you can look at the results)",
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="seed of the contacts and the simulator"
    )
    add_campaign_options(parser, concurrency=50)
    add_json_argument(parser)
    parser.set_defaults(handler=_demo_command)


def _demo_command(args: argparse.Namespace) -> Any:
    return _run(args)


async def _run(args: argparse.Namespace) -> int:
    from voicehub_async.campaign import Campaign
    from voicehub_async.campaign.demo import (
        DEMO_AGENT,
        demo_simulator_config,
        write_demo_contacts,
    )
    from voicehub_async.client import VoiceHubClient
    from voicehub_async.simulator import Simulator

    directory = args.dir or Path(tempfile.mkdtemp(prefix="voicehub-demo-"))
    directory.mkdir(parents=True, exist_ok=True)
    contacts = write_demo_contacts(directory / "contacts.csv", args.calls, seed=args.seed)
    console = make_console(stderr=bool(args.json))
    async with Simulator(demo_simulator_config(args.seed), host="127.0.0.1", port=0) as sim:
        if not args.json:
            console.print(
                f"simulator on {sim.base_url}; {args.calls} contacts in {contacts}",
                highlight=False,
            )
        async with VoiceHubClient(
            sim.api_key, base_url=sim.base_url, max_connections=max(100, args.concurrency)
        ) as client:
            campaign = Campaign(
                client,
                contacts,
                agent_id=DEMO_AGENT,
                results=directory / "results.csv",
                journal=directory / "journal.db",
                concurrency=args.concurrency,
                rate_limit=args.rate,
                max_retries=args.max_retries,
                poll_interval=0.25,
                max_poll_interval=1.0,
                # The simulator's clock runs 60x faster: waiting for a
                # scheduled call's real time would leave the demo idle.
                follow_schedule=False,
            )
            summary, code = await run_campaign(campaign, args)
        twice = sum(1 for n in sim.placed_counts().values() if n > 1)
        report_summary(
            summary,
            as_json=bool(args.json),
            extra={"demo": {"dialed_twice": twice, "directory": str(directory)}},
        )
        if not args.json:
            verdict = "no number was dialed twice" if not twice else f"{twice} numbers dialed TWICE"
            console.print(
                f"simulator: {sim.trigger_count} trigger requests, {sim.created_count} calls "
                f"created; {verdict}",
                style="green" if not twice else "bold red",
                highlight=False,
            )
    return EXIT_API_ERROR if twice else code
