"""Helpers shared by the ``voicehub`` commands.

One place decides how the command line talks to people and programs: how a
client is made from the environment and flags, how an error becomes *one line*
on stderr (never a traceback, never the API key) and an exit code, how
``--json`` output looks, and how the rich console is created. Command modules
import from here; nothing heavy (rich, the client) is imported until a command
actually runs, so ``voicehub --help`` stays quick.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TextIO

from voicehub_async._env import (
    API_KEY_ENV,
    BASE_URL_ENV,
    api_key_from_environment,
    base_url_from_environment,
)
from voicehub_async.errors import (
    AmbiguousTriggerError,
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)

if TYPE_CHECKING:
    from rich.console import Console

    from voicehub_async.client import VoiceHubClient

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "EXIT_API_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "add_client_arguments",
    "add_json_argument",
    "error_line",
    "exit_code_for",
    "json_default",
    "make_client",
    "make_console",
    "port_number",
    "print_fields",
    "print_json",
    "redact",
    "report_error",
]

EXIT_OK: Final = 0
#: The service (or the network to it) failed, or a local file could not be written.
EXIT_API_ERROR: Final = 1
#: Bad input or usage: nothing was sent.
EXIT_USAGE: Final = 2


_PROG: Final = "voicehub"


class CommandError(Exception):
    """A failure a command reports as one line and an exit code.

    ``kind`` is a short machine-readable name used in ``--json`` output
    (``"usage"``, ``"invalid_input"``, ``"not_found"``, ...).
    """

    def __init__(
        self,
        message: str,
        *,
        exit_code: int = EXIT_USAGE,
        kind: str = "usage",
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.kind = kind
        #: The option or field at fault, when there is one (``--to``, ``--context``, ...).
        self.field = field


# -- arguments ---------------------------------------------------------------------------


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    """``--json``: print one JSON object on stdout instead of human output."""
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout (errors too) instead of human-readable output",
    )


def add_client_arguments(parser: argparse.ArgumentParser, *, numbers: bool = True) -> None:
    """The options every command that talks to the API accepts.

    ``--default-region`` only where the command reads phone numbers
    (``numbers``): listed for ``status``, it would promise something it does
    not do. The key itself is never a flag (it would land in shell history
    and ``ps``): it comes from ``$VOICEHUB_API_KEY`` only.
    """
    group = parser.add_argument_group(
        "connection", f"the API key is read from ${API_KEY_ENV} (never from a flag)"
    )
    group.add_argument(
        "--base-url",
        metavar="URL",
        default=None,
        help=f"API base URL (default: ${BASE_URL_ENV}, else https://voicehub.dataqueue.ai)",
    )
    if numbers:
        group.add_argument(
            "--default-region",
            metavar="CC",
            default=None,
            help="country for numbers written without +<country code>, e.g. US or GB",
        )
    group.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=positive_float,
        default=30.0,
        help="read timeout per request in seconds (default: 30)",
    )
    add_json_argument(parser)


# -- argument types (argparse ``type=``): a clear message names the bad value --------


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """A whole number of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A number greater than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 0 to 65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {text!r}")
    return value


def make_client(args: argparse.Namespace, *, max_connections: int = 100) -> VoiceHubClient:
    """A client from ``$VOICEHUB_API_KEY`` and the connection options.

    Raises :class:`CommandError` (exit 2) when the key is missing or the base
    URL is unusable, before anything is sent.
    """
    from voicehub_async.client import VoiceHubClient

    key = api_key_from_environment()
    if key is None:
        raise CommandError(
            f"no API key: set the {API_KEY_ENV} environment variable", kind="configuration"
        )
    try:
        return VoiceHubClient(
            key,
            base_url=base_url_from_environment(getattr(args, "base_url", None)),
            timeout=getattr(args, "timeout", 30.0),
            default_region=getattr(args, "default_region", None),
            max_connections=max_connections,
        )
    except ValueError as exc:
        raise CommandError(str(exc), kind="configuration") from None


# -- errors --------------------------------------------------------------------------


def redact(text: str) -> str:
    """``text`` with the API key (if it is set in the environment) blanked out.

    The SDK's messages never contain the key; this is a second lock on the
    door, since the command line prints whatever an error says.
    """
    key = api_key_from_environment() or ""
    if len(key) >= 4 and key in text:
        text = text.replace(key, "<redacted>")
    return text


def exit_code_for(error: BaseException) -> int:
    """The exit code for ``error``: 2 when the input was bad, else 1."""
    if isinstance(error, CommandError):
        return error.exit_code
    if isinstance(error, InvalidRequestError):
        return EXIT_USAGE
    return EXIT_API_ERROR


def _kind(error: BaseException) -> str:
    if isinstance(error, CommandError):
        return error.kind
    if isinstance(error, AmbiguousTriggerError):
        return "ambiguous"
    if isinstance(error, InvalidRequestError):
        return "invalid_input"
    if isinstance(error, NotFoundError):
        return "not_found"
    if isinstance(error, APIStatusError):
        return "api_error"
    if isinstance(error, APIConnectionError):
        return "connection_error"
    if isinstance(error, OSError):
        return "os_error"
    return "error"


def error_line(error: BaseException) -> str:
    """One line saying what went wrong and, where it helps, what to do."""
    if isinstance(error, AmbiguousTriggerError):
        message = (
            f"the call MAY HAVE BEEN PLACED: the outcome is unknown ({error.cause}). "
            "Do not simply re-run this command, or the person may be phoned twice; "
            "check the call in VoiceHub's dashboard or your webhook events first"
        )
    elif isinstance(error, AuthenticationError):
        message = f"{error} (check ${API_KEY_ENV})"
    elif isinstance(error, PermissionDeniedError):
        message = f"{error} (the API key may not do this; check the agent and from number)"
    elif isinstance(error, RateLimitError):
        wait = f"; retry after {error.retry_after:g}s" if error.retry_after else ""
        message = f"{error} (rate limited{wait})"
    elif isinstance(error, APIConnectionError) and not error.sent:
        message = f"{error} (check --base-url / ${BASE_URL_ENV} and the network)"
    elif isinstance(error, OSError):
        message = f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
    else:
        message = str(error) or type(error).__name__
    return redact(" ".join(message.split()))


def report_error(error: BaseException, *, as_json: bool = False) -> int:
    """Print ``error`` as one line on stderr (and a JSON object on stdout with
    ``--json``) and return its exit code."""
    line = error_line(error)
    code = exit_code_for(error)
    if as_json:
        payload: dict[str, Any] = {"error": {"kind": _kind(error), "message": line}}
        field = getattr(error, "field", None)
        if isinstance(field, str):
            payload["error"]["field"] = field
        status = getattr(error, "status", None)
        if isinstance(status, int):
            payload["error"]["status"] = status
        payload["exit_code"] = code
        print_json(payload)
    print(f"{_PROG}: error: {line}", file=sys.stderr)
    return code


# -- output -----------------------------------------------------------------------------


def json_default(value: Any) -> Any:
    """Encode what ``json`` does not know: datetimes, paths, statuses, tuples."""
    from datetime import datetime
    from pathlib import PurePath

    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def print_json(payload: Mapping[str, Any], *, file: TextIO | None = None) -> None:
    """``payload`` as one compact JSON line on stdout."""
    out = file if file is not None else sys.stdout
    out.write(redact(json.dumps(payload, default=json_default, ensure_ascii=False)) + "\n")
    out.flush()


def make_console(*, stderr: bool = False) -> Console:
    """A rich console for human output.

    Colour and styling only on a terminal (rich checks ``isatty`` and honours
    ``NO_COLOR``); long lines are not wrapped when the output is piped, so
    ``grep`` sees whole lines. The console writes to whatever ``sys.stdout``
    is at the time of printing (pytest's capture included).
    """
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, soft_wrap=not stream.isatty())


def print_fields(
    console: Console, rows: Sequence[tuple[str, object]], *, title: str | None = None
) -> None:
    """Aligned ``key: value`` lines, easy to read and to ``grep``.

    Plain lines rather than a rich table, so that a long URL piped to a file
    stays on one line instead of being folded at column 80. A value that is a
    :class:`rich.text.Text` keeps its style; anything else is printed as text
    (never interpreted as markup). An empty key continues the previous one.
    """
    from rich.text import Text

    if title:
        console.print(Text(title, style="bold"))
    width = max((len(key) for key, _ in rows), default=0) + 1
    for key, value in rows:
        label = (f"{key}:" if key else "").ljust(width)
        shown = value if isinstance(value, Text) else Text(redact(str(value)))
        console.print(Text.assemble((label, "bold cyan"), "  ", shown))
