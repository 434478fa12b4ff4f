"""``voicehub call``, ``voicehub status`` and ``voicehub recording``: one call at a time.

Input is checked completely (numbers, ``--context`` JSON, ``--at`` time) before
the API key is even looked at, so a typo costs nothing and exits with 2. A
trigger is sent once: if its outcome is unknown the command says the call may
have been placed and must not simply be re-run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from voicehub_async._iso8601 import NaiveTimeError, parse_aware_datetime
from voicehub_async.errors import InvalidRequestError, NotFoundError
from voicehub_async.models import (
    CallRequest,
    PreparedRequest,
    format_scheduled_at,
    prepare_request,
)

from ._common import (
    EXIT_API_ERROR,
    EXIT_OK,
    CommandError,
    add_client_arguments,
    make_client,
    make_console,
    print_fields,
    print_json,
)

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from rich.text import Text

    from voicehub_async.client import VoiceHubClient
    from voicehub_async.models import Call, CallStatus, Recordings

__all__ = ["parse_context", "parse_when", "register"]

#: The SDK's field names, as the options that set them are spelled.
_OPTION_OF_FIELD: Final = {
    "to": "--to",
    "agent_id": "--agent",
    "from_number": "--from",
    "context": "--context",
    "scheduled_at": "--at",
    "call_id": "CALL_ID",
    "default_region": "--default-region",
}

_STATUS_STYLES: Final = {
    "completed": "green",
    "failed": "red",
    "busy": "yellow",
    "unanswered": "yellow",
    "cancelled": "yellow",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``call``, ``status`` and ``recording``."""
    call = subparsers.add_parser(
        "call",
        help="place a call now, or schedule it with --at",
        description="Place one call now, or schedule it with --at. The trigger is sent once: "
        "if its outcome is unknown (timeout, 5xx) the command says so instead of retrying.",
    )
    call.add_argument(
        "--to", required=True, metavar="NUMBER", help="number to call, e.g. +14155550123"
    )
    call.add_argument(
        "--agent", required=True, metavar="AGENT_ID", help="the VoiceHub agent that speaks"
    )
    call.add_argument(
        "--context",
        metavar="JSON",
        help='a JSON object handed to the agent, e.g. \'{"name": "Ada"}\', or @FILE to read one',
    )
    call.add_argument(
        "--at",
        metavar="ISO_TIME",
        help="schedule for this time, ISO 8601 with an offset or Z, e.g. 2030-01-31T09:30+01:00 "
        "(sent to the API in UTC, to the minute)",
    )
    call.add_argument(
        "--from", dest="from_number", metavar="NUMBER", help="source number (one the account owns)"
    )
    add_client_arguments(call)
    call.set_defaults(handler=_call_command)

    status = subparsers.add_parser(
        "status", help="show a call's current status", description="Show a call's current status."
    )
    status.add_argument("call_id", metavar="CALL_ID")
    add_client_arguments(status, numbers=False)
    status.set_defaults(handler=_status_command)

    recording = subparsers.add_parser(
        "recording",
        help="show (or download) a call's recording",
        description="List the recording URL(s) of a call, or download them with --download.",
    )
    recording.add_argument("call_id", metavar="CALL_ID")
    recording.add_argument(
        "--download",
        metavar="PATH",
        type=Path,
        help="save the recording to PATH (a file), or every recording into PATH (a directory)",
    )
    add_client_arguments(recording, numbers=False)
    recording.set_defaults(handler=_recording_command)


# -- input ----------------------------------------------------------------------------


def parse_context(text: str) -> dict[str, Any]:
    """``--context``: a JSON object given inline, or ``@path`` to a file holding one."""
    source = "--context"
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(
                f"--context: cannot read {path}: {exc.strerror or exc}", field="--context"
            ) from None
        source = f"--context file {path}"
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CommandError(
            f'{source} is not valid JSON ({exc}); write an object such as \'{{"name": "Ada"}}\'',
            kind="invalid_input",
            field="--context",
        ) from None
    if not isinstance(value, dict):
        raise CommandError(
            f"{source} must be a JSON object ({{...}}), not {type(value).__name__}",
            kind="invalid_input",
            field="--context",
        )
    return value


def parse_when(text: str) -> datetime:
    """``--at``: an ISO 8601 time with a UTC offset (``+02:00``) or ``Z``.

    A time without an offset is refused rather than guessed: the API documents
    no time zone, and the same wall-clock time in another zone phones someone
    at the wrong hour.
    """
    try:
        return parse_aware_datetime(text)
    except NaiveTimeError:
        raise CommandError(
            f"--at {text!r} has no time zone; add an offset such as +01:00, or Z for UTC "
            f"(e.g. {text.strip()}Z)",
            kind="invalid_input",
            field="--at",
        ) from None
    except ValueError:
        raise CommandError(
            f"--at {text!r} is not an ISO 8601 time; write e.g. 2030-01-31T09:30+01:00 "
            "or 2030-01-31T08:30Z",
            kind="invalid_input",
            field="--at",
        ) from None


def _invalid_input(error: InvalidRequestError, given: Mapping[str, object]) -> CommandError:
    """The SDK's complaint about a field, phrased with the option's name and
    the text the user typed (not the parsed value)."""
    option = _OPTION_OF_FIELD.get(error.field, error.field)
    shown = given.get(error.field, error.value)
    return CommandError(f"{option} {shown!r}: {error.reason}", kind="invalid_input", field=option)


def _prepared_request(args: argparse.Namespace) -> PreparedRequest:
    """The request, checked by the SDK's own validation (the one the client's
    ``prepare`` runs, ``--default-region`` included) before the key is read."""
    context = None if args.context is None else parse_context(args.context)
    scheduled_at = None if args.at is None else parse_when(args.at)
    try:
        return prepare_request(
            CallRequest(
                to=args.to,
                agent_id=args.agent,
                context=context,
                scheduled_at=scheduled_at,
                from_number=args.from_number,
            ),
            default_region=args.default_region,
        )
    except InvalidRequestError as exc:
        raise _invalid_input(exc, {"scheduled_at": args.at, "context": args.context}) from None


def _call_id(text: str) -> str:
    if not text.strip():
        raise CommandError("CALL_ID must not be empty", kind="invalid_input", field="CALL_ID")
    return text.strip()


# -- output ---------------------------------------------------------------------------


def _status_text(status: CallStatus) -> Text:
    from rich.text import Text

    return Text(str(status), style=_STATUS_STYLES.get(status.name, "bold"))


def _call_json(call: Call) -> dict[str, Any]:
    return {
        "id": call.id,
        "status": str(call.status),
        "type": call.type,
        "terminal": call.is_terminal,
        "attempts": call.attempts,
    }


# -- call -------------------------------------------------------------------------------


def _call_command(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    request = _prepared_request(args)  # bad input: exit 2 before the key is read
    client = make_client(args)
    return _trigger(client, request, as_json=args.json)


async def _trigger(client: VoiceHubClient, request: PreparedRequest, *, as_json: bool) -> int:
    try:
        async with client:
            call: Call = await client.trigger(request)
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels us, then re-raises it
        print(
            "voicehub: interrupted while the trigger was in flight: the call MAY HAVE BEEN "
            "PLACED; check it before re-running this command",
            file=sys.stderr,
        )
        raise
    scheduled = None if request.scheduled_at is None else format_scheduled_at(request.scheduled_at)
    if as_json:
        payload = _call_json(call)
        payload.update(
            to=request.to,
            agent_id=request.agent_id,
            from_number=request.from_number,
            scheduled_at=None if scheduled is None else scheduled + "Z",
        )
        print_json(payload)
        return EXIT_OK
    rows: list[tuple[str, object]] = [("id", call.id), ("status", _status_text(call.status))]
    rows += [("to", request.to), ("agent", request.agent_id)]
    if request.from_number:
        rows.append(("from", request.from_number))
    if scheduled is not None:
        rows.append(("scheduled for", f"{scheduled} UTC"))
    if call.attempts > 1:
        rows.append(("attempts", call.attempts))
    title = "Call scheduled" if scheduled is not None else "Call placed"
    print_fields(make_console(), rows, title=title)
    return EXIT_OK


# -- status -----------------------------------------------------------------------------


def _status_command(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    call_id = _call_id(args.call_id)
    return _status(make_client(args), call_id, as_json=args.json)


async def _status(client: VoiceHubClient, call_id: str, *, as_json: bool) -> int:
    try:
        async with client:
            call: Call = await client.get_call(call_id)
    except NotFoundError as exc:
        raise CommandError(
            f"no call with id {call_id!r} ({exc})", exit_code=EXIT_API_ERROR, kind="not_found"
        ) from None
    if as_json:
        print_json(_call_json(call))
        return EXIT_OK
    rows: list[tuple[str, object]] = [
        ("id", call.id),
        ("status", _status_text(call.status)),
        ("final", "yes" if call.is_terminal else "no (may still change)"),
    ]
    if call.type:
        rows.append(("type", call.type))
    print_fields(make_console(), rows)
    return EXIT_OK


# -- recording ---------------------------------------------------------------------------


def _recording_command(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    call_id = _call_id(args.call_id)
    target: Path | None = args.download
    if target is not None and not target.is_dir() and not target.parent.is_dir():
        raise CommandError(
            f"--download {str(target)!r}: the folder {str(target.parent)!r} does not exist",
            kind="invalid_input",
            field="--download",
        )
    return _recording(make_client(args), call_id, target, as_json=args.json)


def _file_name(url: str, call_id: str, index: int) -> str:
    """A safe local file name for a recording URL (never a path)."""
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    if not name or name in (".", "..") or "\\" in name or name.startswith("."):
        name = f"{call_id}-{index + 1}.wav"
    return name


def _download_targets(target: Path, urls: Sequence[str], call_id: str) -> list[Path]:
    if not target.is_dir():
        if len(urls) > 1:
            raise CommandError(
                f"call {call_id!r} has {len(urls)} recordings; "
                "pass a directory to --download to save them all",
                kind="invalid_input",
                field="--download",
            )
        return [target]
    paths: list[Path] = []
    seen: set[str] = set()
    for index, url in enumerate(urls):
        name = _file_name(url, call_id, index)
        if name in seen:
            name = f"{index + 1}-{name}"
        seen.add(name)
        paths.append(target / name)
    return paths


async def _recording(
    client: VoiceHubClient, call_id: str, target: Path | None, *, as_json: bool
) -> int:
    saved: list[Path] = []
    async with client:
        try:
            recordings: Recordings = await client.get_recordings(call_id)
        except NotFoundError as exc:
            raise CommandError(
                f"no recording for call {call_id!r} ({exc}); the call may not exist, "
                "or may not have ended yet",
                exit_code=EXIT_API_ERROR,
                kind="not_found",
            ) from None
        if target is not None:
            if not recordings.urls:
                raise CommandError(
                    f"call {call_id!r} has no recording yet; nothing to download",
                    exit_code=EXIT_API_ERROR,
                    kind="not_found",
                )
            for url, path in zip(
                recordings.urls, _download_targets(target, recordings.urls, call_id), strict=True
            ):
                saved.append(await client.download_recording(url, path))
    if as_json:
        payload: dict[str, Any] = {"call_id": call_id, "urls": list(recordings.urls)}
        if target is not None:
            payload["saved"] = [
                {"url": url, "path": str(path), "bytes": path.stat().st_size}
                for url, path in zip(recordings.urls, saved, strict=True)
            ]
        print_json(payload)
        return EXIT_OK
    _print_recordings(call_id, recordings.urls, saved)
    return EXIT_OK


def _print_recordings(call_id: str, urls: Sequence[str], saved: Sequence[Path]) -> None:
    console = make_console()
    if not urls:
        print_fields(console, [("call", call_id), ("recordings", "none yet")])
        return
    rows: list[tuple[str, object]] = [("call", call_id)]
    label = "recording" if len(urls) == 1 else "recordings"
    rows += [(label if i == 0 else "", url) for i, url in enumerate(urls)]
    for i, path in enumerate(saved):
        rows.append(("saved to" if i == 0 else "", f"{path} ({_size(path.stat().st_size)})"))
    print_fields(console, rows)


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / (1024 * 1024):.1f} MiB"
