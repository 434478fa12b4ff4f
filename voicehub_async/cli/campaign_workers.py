"""``voicehub campaign load|work|status|results``: one campaign, many workers.

::

    voicehub campaign load contacts.csv --journal postgresql://... --campaign spring --agent A
    voicehub campaign work --journal postgresql://... --campaign spring   # as many as you like
    voicehub campaign status --journal postgresql://... --campaign spring
    voicehub campaign results --journal postgresql://... --campaign spring --out results.csv

The journal is a PostgreSQL URL (or ``$VOICEHUB_JOURNAL_URL``); see
:mod:`voicehub_async.campaign.store`. ``voicehub campaign CONTACTS`` (a path)
is still the one-process command: :func:`route` only takes over when the word
after ``campaign`` is one of these four (a contacts file named like one of
them: write ``./load``).

Exit status: ``load`` 0 (also when the file was already loaded: nothing
changed), ``work`` 0 when every row of the campaign has an outcome that is
not in doubt, 1 when some are ambiguous, not sent or not finished (130 after
Ctrl-C); ``status`` 0; 2 on bad usage, 1 when the store cannot be used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ._common import (
    EXIT_API_ERROR,
    CommandError,
    add_client_arguments,
    add_json_argument,
    make_client,
    non_negative_int,
    positive_float,
    positive_int,
    print_json,
)

if TYPE_CHECKING:
    from voicehub_async.campaign.store.postgres import PostgresStore
    from voicehub_async.campaign.store.worker import CampaignWorker

__all__ = ["JOURNAL_URL_ENV", "SUBCOMMANDS", "register", "route"]

#: The store's URL when ``--journal`` is not given.
JOURNAL_URL_ENV: Final = "VOICEHUB_JOURNAL_URL"
#: The webhook secret for ``work --webhook-port`` (never a flag: it would show in ``ps``).
WEBHOOK_SECRET_ENV: Final = "VOICEHUB_WEBHOOK_SECRET"
SUBCOMMANDS: Final = ("load", "work", "status", "results")
_PREFIX: Final = "campaign-"


def journal_target(text: str) -> Path | str:
    """``--journal``'s type: a PostgreSQL URL as given, anything else a path."""
    from voicehub_async.campaign.store import is_postgres_url

    return text if is_postgres_url(text) else Path(text)


def journal_default() -> str | None:
    """``$VOICEHUB_JOURNAL_URL`` (read when the parser is built), or None."""
    return os.environ.get(JOURNAL_URL_ENV) or None


def route(argv: Sequence[str]) -> list[str]:
    """``campaign load ...`` -> ``campaign-load ...`` (the parser's name for it);
    anything else unchanged."""
    args = list(argv)
    if len(args) >= 2 and args[0] == "campaign" and args[1] in SUBCOMMANDS:
        return [_PREFIX + args[1], *args[2:]]
    return args


def _store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--journal",
        metavar="URL",
        default=None,
        help=f"the PostgreSQL store, postgresql://user@host/db[?schema=NAME] "
        f"(default: ${JOURNAL_URL_ENV})",
    )
    parser.add_argument(
        "--campaign", metavar="NAME", required=True, help="the campaign's name in the store"
    )


def _limit_arguments(parser: argparse.ArgumentParser) -> None:
    limits = parser.add_argument_group("limits shared by all the campaign's workers")
    limits.add_argument(
        "--rate",
        type=positive_float,
        default=None,
        metavar="PER_SECOND",
        help="calls per second, all workers together (stored with the campaign)",
    )
    limits.add_argument(
        "--max-live",
        type=positive_int,
        default=None,
        metavar="N",
        help="calls live at once, all workers together (stored with the campaign)",
    )
    limits.add_argument(
        "--max-call-time",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="how long an ambiguous trigger holds its live slot (default: 3600)",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``campaign load|work|status|results`` (reached through :func:`route`;
    not listed on their own in ``voicehub --help``, ``voicehub campaign --help``
    names them)."""
    load = subparsers.add_parser(
        _PREFIX + "load",
        prog="voicehub campaign load",
        description="Stream CONTACTS into the PostgreSQL store as campaign NAME (validated, "
        "numbers in E.164, duplicates marked). Loading the same file again changes nothing; "
        "another file under the same name is refused.",
    )
    load.add_argument("contacts", metavar="CONTACTS", type=Path, help="the contacts file")
    _store_arguments(load)
    load.add_argument("--agent", metavar="AGENT_ID", help="agent for rows without agent_id")
    load.add_argument("--format", choices=("csv", "jsonl"), help="default: from the name")
    load.add_argument(
        "--default-region", metavar="CC", help="country for numbers without +<country code>"
    )
    _limit_arguments(load)
    add_json_argument(load)
    load.set_defaults(handler=_load_command)

    work = subparsers.add_parser(
        _PREFIX + "work",
        prog="voicehub campaign work",
        description="Dial campaign NAME beside any number of other workers: claims due "
        "contacts, triggers them within the shared --rate and --max-live, follows the calls "
        "(also those of workers that died) and ends when no contact needs a worker.",
        epilog="Exit status: 0 every contact has a certain outcome, 1 some are ambiguous, "
        "not sent or unfinished, 2 bad usage; 130 after Ctrl-C.",
    )
    _store_arguments(work)
    _limit_arguments(work)
    pace = work.add_argument_group("this worker")
    pace.add_argument(
        "--concurrency", type=positive_int, default=10, metavar="N", help="triggers in flight"
    )
    pace.add_argument(
        "--max-retries",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="retries of a trigger that provably did not reach the service (default: 3)",
    )
    pace.add_argument(
        "--poll",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="follow every call to its final status (default: on)",
    )
    pace.add_argument(
        "--poll-interval",
        type=positive_float,
        default=2.0,
        metavar="SECONDS",
        help="shortest time between two status reads of a call (default: %(default)s)",
    )
    pace.add_argument(
        "--max-poll-interval",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="longest time between two status reads of a call: with --max-live, a call's "
        "slot is freed when its end is seen (default: %(default)s)",
    )
    pace.add_argument(
        "--worker-timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="a worker silent this long is dead: its sending rows become ambiguous, its "
        "calls are followed by the others (default: %(default)s)",
    )
    pace.add_argument("--name", metavar="NAME", help="this worker's name (default: host:pid)")
    pace.add_argument(
        "--webhook-port",
        type=positive_int,
        default=None,
        metavar="PORT",
        help=f"receive VoiceHub's webhooks on this port (secret from ${WEBHOOK_SECRET_ENV}): "
        "statuses go into the store whichever worker placed the call, and an ambiguous "
        "row is resolved by its call's events",
    )
    pace.add_argument(
        "--webhook-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address for --webhook-port (default: %(default)s)",
    )
    pace.add_argument("--progress-interval", type=positive_float, default=5.0, metavar="SECONDS")
    from .campaign import add_redial_arguments

    add_redial_arguments(
        work,
        "redials (as for voicehub campaign)",
        redial_note="due redials are claimed by any worker",
    )
    add_client_arguments(work)
    work.set_defaults(handler=_work_command)

    status = subparsers.add_parser(
        _PREFIX + "status",
        prog="voicehub campaign status",
        description="Where campaign NAME stands: contacts per state, and its workers.",
    )
    _store_arguments(status)
    add_json_argument(status)
    status.set_defaults(handler=_status_command)

    results = subparsers.add_parser(
        _PREFIX + "results",
        prog="voicehub campaign results",
        description="Write campaign NAME's results file: one line per contact.",
    )
    _store_arguments(results)
    results.add_argument(
        "--out",
        type=Path,
        metavar="PATH",
        help="CSV, or JSON lines if it ends in .jsonl (default: NAME.results.csv)",
    )
    add_json_argument(results)
    results.set_defaults(handler=_results_command)


def _url(args: argparse.Namespace) -> str:
    from voicehub_async.campaign.store import is_postgres_url

    url = args.journal or os.environ.get(JOURNAL_URL_ENV)
    if not url:
        raise CommandError(
            f"no store: give --journal postgresql://user@host/db or set ${JOURNAL_URL_ENV}",
            field="--journal",
        )
    if not is_postgres_url(url):
        raise CommandError(
            f"--journal must be a postgresql:// URL here, not {url!r}", field="--journal"
        )
    return str(url)


async def _open(args: argparse.Namespace) -> PostgresStore:
    from voicehub_async.campaign.journal import JournalError
    from voicehub_async.campaign.store.postgres import PostgresStore

    try:
        return await PostgresStore.open(_url(args))
    except JournalError as exc:
        raise CommandError(str(exc), exit_code=EXIT_API_ERROR, kind="journal") from None


def _journal_error(exc: Exception) -> CommandError:
    return CommandError(str(exc), exit_code=EXIT_API_ERROR, kind="journal", field="--journal")


async def _load_command(args: argparse.Namespace) -> int:
    from voicehub_async.campaign.contacts import ContactsError
    from voicehub_async.campaign.journal import JournalError

    if not args.contacts.is_file():
        raise CommandError(f"no contacts file {args.contacts}", kind="invalid_input")
    _url(args)
    store = await _open(args)
    try:
        try:
            result = await store.load(
                args.campaign,
                args.contacts,
                agent_id=args.agent,
                format=args.format,
                default_region=args.default_region,
            )
        except ContactsError as exc:
            raise CommandError(str(exc), kind="invalid_input", field="CONTACTS") from None
        except JournalError as exc:
            raise _journal_error(exc) from None
        await store.set_limits(
            result.campaign.id,
            rate_limit=args.rate,
            max_live=args.max_live,
            max_call_time=args.max_call_time,
        )
    finally:
        await store.close()
    total = sum(result.counts.values())
    if args.json:
        print_json(
            {
                "campaign": args.campaign,
                "loaded": result.loaded,
                "total": total,
                "counts": result.counts,
            }
        )
    elif result.loaded:
        print(f"loaded {total} contacts into campaign {args.campaign!r}: {_counts(result.counts)}")
    else:
        print(f"campaign {args.campaign!r} already holds this file ({total} contacts): unchanged")
    return 0


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in sorted(counts.items())) or "empty"


async def _status_command(args: argparse.Namespace) -> int:
    from voicehub_async.campaign.journal import JournalError

    store = await _open(args)
    try:
        try:
            campaign = await store.campaign(args.campaign)
        except JournalError as exc:
            raise _journal_error(exc) from None
        counts = await store.counts(campaign.id)
        workers = await store.workers(campaign.id)
    finally:
        await store.close()
    if args.json:
        print_json(
            {
                "campaign": campaign.name,
                "total": campaign.total,
                "counts": counts,
                "rate": campaign.rate_limit,
                "max_live": campaign.max_live,
                "workers": [
                    {
                        "id": w.id,
                        "name": w.name,
                        "alive": w.alive,
                        "heartbeat_age": round(w.heartbeat_age, 3),
                        "held": w.held,
                    }
                    for w in workers
                ],
            }
        )
        return 0
    print(f"campaign {campaign.name!r} ({campaign.source_name}, {campaign.total} contacts)")
    print(f"  {_counts(counts)}")
    alive = [w for w in workers if w.alive]
    print(f"  workers: {len(alive)} alive, {len(workers) - len(alive)} gone")
    for w in alive:
        print(f"    {w.name}: {w.held} rows held, heartbeat {w.heartbeat_age:.1f} s ago")
    return 0


async def _results_command(args: argparse.Namespace) -> int:
    from voicehub_async.campaign.journal import JournalError

    store = await _open(args)
    try:
        try:
            campaign = await store.campaign(args.campaign)
        except JournalError as exc:
            raise _journal_error(exc) from None
        out = args.out or Path(f"{campaign.name}.results.csv")
        lines = await write_store_results(store, campaign.id, out, campaign.total)
    finally:
        await store.close()
    if args.json:
        print_json({"campaign": campaign.name, "results": str(out), "lines": lines})
    else:
        print(f"wrote {lines} lines to {out}")
    return 0


async def write_store_results(store: PostgresStore, campaign: int, out: Path, total: int) -> int:
    """The results file from the store, streamed: rows are fetched in chunks by
    the event loop while a thread writes them."""
    from voicehub_async.campaign.journal import JournalRow
    from voicehub_async.campaign.results import write_results

    loop = asyncio.get_running_loop()

    def rows() -> Iterator[JournalRow]:
        last = 0
        while True:
            chunk = asyncio.run_coroutine_threadsafe(
                store.rows_after(campaign, last), loop
            ).result()
            if not chunk:
                return
            yield from chunk
            last = chunk[-1].row

    return await asyncio.to_thread(write_results, out, rows(), total)


def _work_command(args: argparse.Namespace) -> Any:
    from .campaign import _redial

    url = _url(args)
    args.redial_policy = _redial(args)
    if args.webhook_port is not None and not os.environ.get(WEBHOOK_SECRET_ENV):
        raise CommandError(
            f"--webhook-port needs the webhook secret in ${WEBHOOK_SECRET_ENV}",
            field="--webhook-port",
        )
    client = make_client(args, max_connections=max(20, args.concurrency * 2))
    return _work(args, url, client)


async def _work(args: argparse.Namespace, url: str, client: Any) -> int:
    from voicehub_async.campaign.journal import JournalError
    from voicehub_async.campaign.store.worker import CampaignWorker

    del url
    async with client:
        store = await _open(args)
        try:
            try:
                campaign = await store.campaign(args.campaign)
            except JournalError as exc:
                raise _journal_error(exc) from None
            await store.set_limits(
                campaign.id,
                rate_limit=args.rate,
                max_live=args.max_live,
                max_call_time=args.max_call_time,
            )
            worker = CampaignWorker(
                client,
                store,
                campaign,
                name=args.name,
                concurrency=args.concurrency,
                max_retries=args.max_retries,
                poll=args.poll,
                poll_interval=args.poll_interval,
                max_poll_interval=max(args.max_poll_interval, args.poll_interval),
                worker_timeout=args.worker_timeout,
                webhook_port=args.webhook_port,
                webhook_secret=os.environ.get(WEBHOOK_SECRET_ENV),
                webhook_host=args.webhook_host,
                redial=args.redial_policy,
            )
            with _signals(worker) as received:
                progress = asyncio.create_task(_progress(store, campaign.id, args))
                try:
                    summary = await worker.run()
                finally:
                    progress.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await progress
        finally:
            await store.close()
    if args.json:
        print_json(
            {
                "campaign": campaign.name,
                "worker": summary.worker_id,
                "triggers": summary.triggers,
                "placed": summary.placed,
                "retries": summary.retries,
                "rate_limited": summary.rate_limited,
                "adopted": summary.adopted,
                "counts": summary.counts,
                "wall_time": round(summary.wall_time, 3),
            }
        )
    else:
        print(
            f"worker {worker.name}: {summary.triggers} triggers, {summary.placed} calls placed, "
            f"{summary.adopted} adopted, {summary.wall_time:.1f} s"
        )
        print(f"campaign {campaign.name!r}: {_counts(summary.counts)}")
    if received:
        return 128 + received[0]
    return summary.exit_code


async def _progress(store: PostgresStore, campaign: int, args: argparse.Namespace) -> None:
    """A line on stderr every --progress-interval: the campaign's counts."""
    while True:
        await asyncio.sleep(args.progress_interval)
        with contextlib.suppress(Exception):
            counts = await store.counts(campaign)
            print(f"voicehub: {_counts(counts)}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _signals(worker: CampaignWorker) -> Iterator[list[int]]:
    """SIGINT/SIGTERM stop claiming (what is in flight finishes and is
    written); a second one exits at once (its sending rows become ambiguous,
    as after a kill)."""
    received: list[int] = []
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            print(
                "voicehub: stopping: no new claims; finishing the triggers in flight",
                file=sys.stderr,
                flush=True,
            )
            worker.stop()
            return
        os._exit(128 + signum)

    installed: list[signal.Signals] = []
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal, int(sig))
                installed.append(sig)
        yield received
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
