"""``voicehub demo``: a whole campaign against the built-in simulator.

No account, no key, no network beyond loopback: the simulator starts in this
process on a free port with a realistic mix of latency, errors, rate limits
and outcomes (see :mod:`voicehub_async.campaign.demo`), 1,000 synthetic
contacts are written to a temporary directory, and the campaign runs with
the same display, journal and summary as ``voicehub campaign``, with a
duplicate row, a do-not-call list and one redial of busy and unanswered
contacts. At the end the simulator's own log is checked against the
journal: no number was dialed more often than its attempts say.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from collections.abc import Mapping
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
        "temporary directory (one number twice, two on a do-not-call list) and run a full "
        "campaign on them, busy and unanswered contacts redialed once, to the final summary.",
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
        demo_redial,
        demo_simulator_config,
        write_demo_contacts,
        write_demo_suppression,
    )
    from voicehub_async.client import VoiceHubClient
    from voicehub_async.simulator import Simulator

    directory = args.dir or Path(tempfile.mkdtemp(prefix="voicehub-demo-"))
    directory.mkdir(parents=True, exist_ok=True)
    contacts = write_demo_contacts(directory / "contacts.csv", args.calls, seed=args.seed)
    do_not_call = write_demo_suppression(directory / "do-not-call.txt", contacts)
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
                attempts=directory / "attempts.csv",
                suppress=[do_not_call],
                redial=demo_redial(),
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
        twice = _extra_calls(sim.placed_counts(), directory / "results.csv")
        report_summary(
            summary,
            as_json=bool(args.json),
            extra={"demo": {"dialed_twice": twice, "directory": str(directory)}},
        )
        if not args.json:
            verdict = (
                "no number was dialed more often than its attempts say"
                if not twice
                else f"{twice} numbers dialed MORE than the journal says"
            )
            console.print(
                f"simulator: {sim.trigger_count} trigger requests, {sim.created_count} calls "
                f"created; {verdict}",
                style="green" if not twice else "bold red",
                highlight=False,
            )
    return EXIT_API_ERROR if twice else code


def _extra_calls(placed: Mapping[str, int], results: Path) -> int:
    """Numbers the simulator placed more calls to than the results' attempts."""
    attempts: dict[str, int] = {}
    if results.exists():
        with results.open(encoding="utf-8", newline="") as stream:
            for line in csv.DictReader(stream):
                if line["to"] and line["attempts"]:
                    attempts[line["to"]] = attempts.get(line["to"], 0) + int(line["attempts"])
    return sum(1 for number, calls in placed.items() if calls > attempts.get(number, 0))
