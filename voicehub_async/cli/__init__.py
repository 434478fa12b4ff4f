"""The ``voicehub`` command line.

Each command group lives in its own module ``voicehub_async.cli.<name>`` that
exposes ``register(subparsers)``: it adds its subparser(s) and sets
``handler``, a callable taking the parsed arguments and returning an exit code
(or a coroutine producing one, which is run with :func:`asyncio.run`).
Modules are listed explicitly in ``_COMMAND_MODULES`` so that the set of
commands is obvious and nothing is discovered, or imported, by accident.

A handler may raise :class:`~voicehub_async.cli._common.CommandError`, any
:class:`~voicehub_async.VoiceHubError` or an :class:`OSError`: :func:`main`
prints it as one line on stderr (plus a JSON object on stdout under
``--json``) and returns its exit code. Exit codes: 0 success, 1 the API, the
network or a local file failed, 2 bad input or usage (nothing was sent).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
from collections.abc import Awaitable, Sequence
from typing import Any

from voicehub_async.errors import VoiceHubError

from ._common import EXIT_OK, EXIT_USAGE, CommandError, report_error

__all__ = ["build_parser", "main"]

#: Command modules (``voicehub_async.cli.<name>``), in the order their commands appear in --help.
_COMMAND_MODULES: tuple[str, ...] = (
    "calls",
    "simulate",
    "loadtest",
    "campaign",
    "campaign_workers",
    "demo",
)

#: Exit code after Ctrl-C, as a shell reports a process killed by SIGINT.
EXIT_INTERRUPTED = 130


class _VersionAction(argparse.Action):
    """``--version`` printed on stdout, like ``action="version"``."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str = argparse.SUPPRESS,
        default: str = argparse.SUPPRESS,
        help: str | None = "show the version and exit",
    ) -> None:
        super().__init__(
            option_strings=option_strings, dest=dest, default=default, nargs=0, help=help
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        from voicehub_async import __version__

        print(f"voicehub {__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The full ``voicehub`` parser, with every command module registered."""
    parser = argparse.ArgumentParser(
        prog="voicehub",
        description="Place, schedule and follow VoiceHub calls from the command line.",
        epilog="The API key is read from $VOICEHUB_API_KEY. "
        "Exit codes: 0 ok, 1 API or network error, 2 bad input or usage.",
    )
    parser.add_argument("--version", action=_VersionAction)
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``voicehub`` command line with ``argv`` (default: ``sys.argv[1:]``)
    and return its exit code."""
    parser = build_parser()
    from .campaign_workers import route

    try:
        args = parser.parse_args(route(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return _exit_status(exc.code)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    as_json = bool(getattr(args, "json", False))
    try:
        result = handler(args)
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
    except KeyboardInterrupt:
        print("voicehub: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # a subcommand's own parser (e.g. its --help)
        return _exit_status(exc.code)
    except (CommandError, VoiceHubError, OSError) as exc:
        return report_error(exc, as_json=as_json)
    return EXIT_OK if result is None else int(result)


def _exit_status(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") convention
    return EXIT_USAGE


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
