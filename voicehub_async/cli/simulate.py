"""``voicehub simulate``: serve the built-in fake VoiceHub locally.

The options and the serving loop are the simulator's own
(:mod:`voicehub_async.simulator.__main__`), so ``voicehub simulate`` and
``python -m voicehub_async.simulator`` never drift apart. Once listening it
prints one line, ``VoiceHub simulator listening on http://127.0.0.1:PORT
(api key: KEY)``, and serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``simulate``."""
    from voicehub_async.simulator.__main__ import add_arguments, run_from_args

    parser = subparsers.add_parser(
        "simulate",
        help="run a local fake VoiceHub for trying things out",
        description="Serve a fake VoiceHub VoIP Calls API (with optional faults and a faster "
        "clock) until Ctrl-C. Point the other commands at it with "
        "VOICEHUB_BASE_URL=http://127.0.0.1:PORT and VOICEHUB_API_KEY=<its api key>.",
    )
    add_arguments(parser)
    parser.set_defaults(handler=run_from_args)
