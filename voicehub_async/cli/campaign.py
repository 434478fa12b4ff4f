"""``voicehub campaign CONTACTS --agent AGENT_ID``: dial a whole contacts file.

Everything that can be checked before dialing is (options, calling hours,
the file's header, the journal's identity), so a mistake exits with 2 and
costs no call. Then the campaign runs with a live display (plain lines when
the output is not a terminal) and ends with a summary and the results file.

Signals: the first Ctrl-C (or SIGTERM) stops dialing, lets the triggers in
flight get their answers, flushes the journal and writes the results; the
second cuts the requests in flight short and exits at once. Either way
running the same command again resumes where it stopped, without phoning
anybody twice.

Exit status: 0 when every row has a final outcome (invalid rows count as
one: they are reported), 1 when some are ambiguous, not sent, lost or not
finished, or when the campaign stopped early because the service could not
be reached or refused the key (the cause is printed in one line; the rows
not dialed stay pending for a resume) (interrupted: 128 + the signal
number), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from voicehub_async._signals import handle_signals

from ._common import (
    EXIT_API_ERROR,
    CommandError,
    add_client_arguments,
    make_client,
    make_console,
    non_negative_int,
    positive_float,
    positive_int,
    print_json,
)
from ._live import add_live_arguments, live_options, report_stop_cause
from .campaign_workers import SUBCOMMANDS, journal_default, journal_target

if TYPE_CHECKING:
    from rich.console import Console

    from voicehub_async.campaign import Campaign, CampaignSummary
    from voicehub_async.campaign.hours import CallingHours
    from voicehub_async.campaign.redial import RedialPolicy
    from voicehub_async.client import VoiceHubClient

__all__ = ["add_campaign_options", "register", "report_summary", "run_campaign"]

#: Seconds a second signal leaves the campaign to flush before the process quits anyway.
_ABORT_GRACE: Final = 3.0


def duration(text: str) -> float:
    """An argparse type: seconds from ``90``, ``90s``, ``30m``, ``2h``."""
    from voicehub_async.loadtest.ramp import parse_duration

    try:
        value = parse_duration(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be longer than 0 seconds, got {text!r}")
    return value


def add_redial_arguments(
    parser: argparse.ArgumentParser, title: str, *, redial_note: str, after_note: str = ""
) -> None:
    """``--redial``, ``--redial-after`` and ``--max-attempts``, for the one-process
    campaign and for ``campaign work``: one set of defaults, read by :func:`_redial`."""
    redial = parser.add_argument_group(title)
    redial.add_argument(
        "--redial",
        metavar="STATUSES",
        help="dial a contact again when its call ended in one of these statuses: "
        f"busy, unanswered, failed (comma-separated, e.g. busy,unanswered); {redial_note}; "
        "needs --poll",
    )
    redial.add_argument(
        "--redial-after",
        type=duration,
        default=1800.0,
        metavar="DURATION",
        help="how long after the end of a call the next attempt is due"
        f"{after_note} (default: 30m)",
    )
    redial.add_argument(
        "--max-attempts",
        type=positive_int,
        default=3,
        metavar="N",
        help="attempts per contact at most, the first included (default: %(default)s)",
    )


def add_campaign_options(parser: argparse.ArgumentParser, *, concurrency: int = 50) -> None:
    """The options that shape how a campaign dials (shared with ``voicehub demo``)."""
    pace = parser.add_argument_group("pace")
    pace.add_argument(
        "--concurrency",
        type=positive_int,
        default=concurrency,
        metavar="N",
        help="triggers in flight at most (default: %(default)s)",
    )
    pace.add_argument(
        "--rate",
        type=positive_float,
        default=None,
        metavar="PER_SECOND",
        help="calls per second at most (default: as fast as the service allows; "
        "a 429 slows down either way)",
    )
    pace.add_argument(
        "--max-retries",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="retries of a trigger that provably did not reach the service "
        "(no connection, 429, 503) (default: 3)",
    )
    parser.add_argument(
        "--progress-interval",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between two progress lines when the output is not a terminal "
        "(default: %(default)s)",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``campaign``."""
    parser = subparsers.add_parser(
        "campaign",
        help="call every contact of a CSV or JSONL file, resumably",
        description="Call every contact of CONTACTS (CSV with a header, or JSON lines). "
        "Columns: 'to' (required), 'agent_id', 'from', 'scheduled_at' (ISO 8601 with a "
        "zone, e.g. 2030-01-31T09:30+01:00 or ...Z; a time without one is refused); any other "
        "column goes into the call's context; ',' ';' tab or '|' between cells. A row that "
        "cannot be read is recorded invalid with its line and the reason, and the rest goes on. "
        "Every row is recorded in a journal before its call goes out: running the "
        "same command again resumes, and never phones anybody twice.",
        epilog="Exit status: 0 every row has a final outcome, 1 some rows are ambiguous, "
        "were not sent or are not finished, or dialing stopped early (service unreachable, "
        "key refused: the cause is printed, untouched rows stay pending), 2 bad usage; "
        "130 after Ctrl-C. "
        f"One campaign, many workers (PostgreSQL): voicehub campaign {{{','.join(SUBCOMMANDS)}}} "
        "--help.",
    )
    parser.add_argument("contacts", metavar="CONTACTS", type=Path, help="the contacts file")
    parser.add_argument(
        "--agent", metavar="AGENT_ID", help="the agent for rows without an agent_id column"
    )
    files = parser.add_argument_group("files")
    files.add_argument(
        "--journal",
        type=journal_target,
        default=journal_default(),
        metavar="PATH|URL",
        help="the SQLite journal (default: <results>.journal.db, beside the results), or a "
        "PostgreSQL store, postgresql://user@host/db (default: $VOICEHUB_JOURNAL_URL; the "
        "campaign is named after the contacts file there)",
    )
    files.add_argument(
        "--out",
        type=Path,
        metavar="PATH",
        help="the results file, CSV, or JSON lines if it ends in .jsonl "
        "(default: <contacts>.results.csv)",
    )
    files.add_argument(
        "--attempts-out",
        type=Path,
        metavar="PATH",
        help="also write one line per dial attempt (call id, status, times) to PATH, CSV "
        "or JSON lines",
    )
    files.add_argument(
        "--format", choices=("csv", "jsonl"), help="the contacts format (default: from the name)"
    )
    files.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="KNOWN=NAME",
        help="read the file's column NAME as to, agent_id, from or scheduled_at "
        "(repeatable), e.g. --column to=phone",
    )
    add_campaign_options(parser)
    add_live_arguments(parser)
    follow = parser.add_argument_group("following calls")
    follow.add_argument(
        "--poll",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="follow every call to its final status (default: on)",
    )
    follow.add_argument(
        "--poll-interval",
        type=positive_float,
        default=2.0,
        metavar="SECONDS",
        help="shortest time between two status reads of a call (default: %(default)s)",
    )
    follow.add_argument(
        "--recordings",
        action="store_true",
        help="store each completed call's recording URL in the results",
    )
    when = parser.add_argument_group("when to call")
    when.add_argument(
        "--calling-hours",
        metavar="HH:MM-HH:MM",
        help="only start calls in this window of the contact's local time (from the "
        "number); others are scheduled for the next opening, e.g. 09:00-20:00",
    )
    when.add_argument(
        "--calling-days",
        metavar="DAYS",
        help="only start calls on these weekdays of the contact's local time, e.g. "
        "mon-fri or mon,wed,sat (default: every day); others are scheduled for the next "
        "allowed day",
    )
    when.add_argument(
        "--calling-hours-tz",
        metavar="ZONE",
        help="time zone assumed for numbers whose zone is unknown (default: such rows "
        "are refused as invalid), e.g. Europe/Paris",
    )
    follow.add_argument(
        "--max-wait",
        type=duration,
        default=None,
        metavar="DURATION",
        help="stop following calls this long after the last trigger, e.g. 30m or 2h; "
        "calls scheduled later, redials due later and calls still live stay in the journal "
        "and the next run follows them (default: 2h)",
    )
    add_redial_arguments(
        parser,
        "redials",
        redial_note="an ambiguous trigger is never redialed",
        after_note=", inside the calling hours",
    )
    safety = parser.add_argument_group("safety")
    safety.add_argument(
        "--suppress",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a do-not-call list: one number a line, or CSV with a to/number/phone column "
        "(read with --default-region); matching rows are suppressed, never dialed. "
        "Repeatable",
    )
    safety.add_argument(
        "--allow-duplicates",
        action="store_true",
        help="dial a number once per row holding it (default: only its first row; later "
        "rows are reported as duplicates, never dialed)",
    )
    safety.add_argument(
        "--redial-ambiguous",
        action="store_true",
        help="dial again rows whose earlier trigger MAY have placed a call "
        "(the person may be phoned twice)",
    )
    safety.add_argument(
        "--durability",
        choices=("full", "normal"),
        default="normal",
        help="normal: every journal commit survives a crash or kill of this process; "
        "full: also a power cut or OS crash (an fsync per group commit, slower) "
        "(default: %(default)s)",
    )
    add_client_arguments(parser)
    parser.set_defaults(handler=_campaign_command)


def _calling_hours(args: argparse.Namespace) -> CallingHours | None:
    from voicehub_async.campaign.hours import CallingHours

    if args.calling_hours is None and args.calling_days is None:
        if args.calling_hours_tz is not None:
            raise CommandError(
                "--calling-hours-tz needs --calling-hours or --calling-days",
                field="--calling-hours-tz",
            )
        return None
    option = "--calling-hours" if args.calling_hours is not None else "--calling-days"
    try:
        return CallingHours.parse(args.calling_hours, args.calling_hours_tz, args.calling_days)
    except ValueError as exc:
        field = "--calling-days" if "days" in str(exc) else option
        raise CommandError(f"{field}: {exc}", field=field) from None


def _redial(args: argparse.Namespace) -> RedialPolicy | None:
    from voicehub_async.campaign.redial import RedialPolicy

    if args.redial is None:
        return None
    if not args.poll:
        raise CommandError(
            "--redial needs --poll: a call's end must be seen to dial it again",
            field="--redial",
        )
    try:
        return RedialPolicy(args.redial, after=args.redial_after, max_attempts=args.max_attempts)
    except ValueError as exc:
        raise CommandError(f"--redial: {exc}", field="--redial") from None


def _columns(args: argparse.Namespace) -> dict[str, str]:
    from voicehub_async.campaign.contacts import check_columns

    pairs = {}
    for given in args.column:
        known, sep, name = given.partition("=")
        if not sep:
            raise CommandError(f"--column {given!r}: write KNOWN=NAME, e.g. to=phone",
                               field="--column")
        pairs[known] = name
    try:
        return check_columns(pairs)
    except ValueError as exc:
        raise CommandError(f"--column: {exc}", field="--column") from None


def _check_agent(args: argparse.Namespace) -> None:
    """Without --agent every row needs its own agent: refuse a CSV file with no
    agent_id column now, rather than let the journal record every row invalid
    (and then refuse a second run that adds --agent)."""
    if args.agent is not None:
        return
    from voicehub_async.campaign.contacts import ContactsError, csv_columns, detect_format

    try:
        if (args.format or detect_format(args.contacts)) != "csv":
            return
        header = csv_columns(args.contacts, args.columns)
    except ContactsError:
        return  # the campaign itself reports an unreadable file
    if header and "agent_id" not in header:
        raise CommandError(
            f"no agent: give --agent AGENT_ID, or an 'agent_id' column in {args.contacts}",
            field="--agent",
        )


def _campaign_command(args: argparse.Namespace) -> Any:
    hours = _calling_hours(args)
    redial = _redial(args)
    if not args.contacts.is_file():
        raise CommandError(
            f"no contacts file {args.contacts}", kind="invalid_input", field="CONTACTS"
        )
    for path in args.suppress:
        if not path.is_file():
            raise CommandError(
                f"no do-not-call list {path}", kind="invalid_input", field="--suppress"
            )
    args.columns = _columns(args)
    _check_agent(args)
    client = make_client(args, max_connections=max(100, args.concurrency))
    return _run(args, client, hours, redial)


async def _run(
    args: argparse.Namespace,
    client: VoiceHubClient,
    hours: CallingHours | None,
    redial: RedialPolicy | None,
) -> int:
    from voicehub_async.campaign import Campaign
    from voicehub_async.campaign.runner import DEFAULT_MAX_WAIT

    async with client:
        campaign = Campaign(
            client,
            args.contacts,
            agent_id=args.agent,
            journal=args.journal,
            results=args.out,
            format=args.format,
            columns=args.columns,
            concurrency=args.concurrency,
            rate_limit=args.rate,
            max_retries=args.max_retries,
            poll=args.poll,
            poll_interval=args.poll_interval,
            max_poll_interval=max(30.0, args.poll_interval),
            recordings=args.recordings,
            calling_hours=hours,
            allow_duplicates=args.allow_duplicates,
            suppress=args.suppress or None,
            redial=redial,
            max_wait=DEFAULT_MAX_WAIT if args.max_wait is None else args.max_wait,
            attempts=args.attempts_out,
            redial_ambiguous=args.redial_ambiguous,
            durability=args.durability,
            **live_options(args),
        )
        summary, code = await run_campaign(campaign, args)
    report_summary(summary, as_json=bool(args.json))
    return code


async def run_campaign(campaign: Campaign, args: argparse.Namespace) -> tuple[CampaignSummary, int]:
    """Run ``campaign`` with signal handling and the progress display; return
    its summary and the exit status. Shared by ``voicehub campaign`` and
    ``voicehub demo``.
    """
    from voicehub_async.campaign import ContactsError, JournalError, JournalMismatchError
    from voicehub_async.campaign.progress import show_progress
    from voicehub_async.campaign.suppression import SuppressionError

    as_json = bool(args.json)
    display = make_console(stderr=as_json)
    with _signals(campaign, display) as received:
        try:
            # Everything that can be refused is, before the display starts:
            # a usage error is never preceded by a progress line.
            await campaign.open()
            async with show_progress(
                campaign.progress, console=display, interval=args.progress_interval
            ):
                summary = await campaign.run()
            report_stop_cause(campaign)
        except ContactsError as exc:
            raise _refused(campaign, str(exc), "invalid_input", "CONTACTS") from None
        except SuppressionError as exc:
            raise _refused(campaign, str(exc), "invalid_input", "--suppress") from None
        except JournalMismatchError as exc:
            raise _refused(campaign, str(exc), "journal_mismatch", "--journal") from None
        except JournalError as exc:
            raise CommandError(str(exc), exit_code=EXIT_API_ERROR, kind="journal") from None
        finally:
            campaign.close()
    return summary, (128 + received[0]) if received else summary.exit_code


def _refused(campaign: Campaign, message: str, kind: str, field: str) -> CommandError:
    """Exit 2 ("nothing was sent") only when that is true: the reader refuses
    a file before its first row, but a refusal after calls went out is
    exit 1, and says the journal holds them."""
    progress = campaign.progress()
    placed = progress.sent + progress.ambiguous
    if not placed:
        return CommandError(f"{message} (nothing was sent)", kind=kind, field=field)
    return CommandError(
        f"{message}; {placed} calls were placed (or may have been) before this and are in "
        "the journal: run the same command again to resume without phoning them twice",
        exit_code=EXIT_API_ERROR,
        kind=kind,
        field=field,
    )


def report_summary(
    summary: CampaignSummary, *, as_json: bool, extra: dict[str, Any] | None = None
) -> None:
    """The summary as tables on stdout, or as one JSON object (plus ``extra``)."""
    from voicehub_async.campaign.report import print_summary

    if as_json:
        print_json({**summary.to_dict(), **(extra or {})})
        return
    print_summary(make_console(), summary)


@contextlib.contextmanager
def _signals(campaign: Campaign, console: Console) -> Iterator[list[int]]:
    """SIGINT/SIGTERM: the first stops the campaign gracefully, the second aborts.

    Yields the list of signals received. After an abort the process is ended
    anyway if the campaign has not returned within a few seconds.
    """
    received: list[int] = []
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            campaign.stop()
            console.print(
                "stopping: no new calls; waiting for the triggers in flight, then saving "
                "(press Ctrl-C again to quit at once; run the same command to resume)",
                style="yellow",
                highlight=False,
            )
            return
        campaign.abort()
        console.print("aborting: the journal is being flushed", style="yellow", highlight=False)
        # Last resort: never hang after a second Ctrl-C. The journal is
        # consistent at any instant (marks are committed before sending).
        loop.call_later(_ABORT_GRACE, _exit_now, 128 + signum)

    with handle_signals(on_signal):
        yield received


def _exit_now(code: int) -> None:
    sys.stderr.write("voicehub: aborted\n")
    sys.stderr.flush()
    # Restore the terminal's cursor in case a live display hid it.
    if sys.stdout.isatty():
        sys.stdout.write("\x1b[?25h")
        sys.stdout.flush()
    os._exit(code)
