"""The campaign options for live calls: ``--max-live``, ``--max-call-time``,
``--webhook-port``, and the line printed when a campaign stopped early.

Kept apart from :mod:`.campaign` so that the command's module only calls two
hooks; the behaviour behind them is :mod:`voicehub_async.campaign.live`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, TYPE_CHECKING, Any

from ._common import CommandError, port_number, positive_float, positive_int, redact

if TYPE_CHECKING:
    from voicehub_async.campaign import Campaign

__all__ = ["add_live_arguments", "live_options", "report_stop_cause"]


def add_live_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``live calls`` group of options."""
    from voicehub_async.campaign.live import DEFAULT_MAX_CALL_TIME
    from voicehub_async.campaign.webhooks import SECRET_ENV

    live = parser.add_argument_group("live calls")
    live.add_argument(
        "--max-live",
        type=positive_int,
        default=None,
        metavar="N",
        help="never more than N calls of this campaign live at once (from trigger to final "
        "status); set it to the account's concurrent-call limit (default: no cap of our own; "
        "the service's 'concurrent call limit' 429 still makes triggers wait for a call to end)",
    )
    live.add_argument(
        "--max-call-time",
        type=positive_float,
        default=DEFAULT_MAX_CALL_TIME,
        metavar="SECONDS",
        help="how long an ambiguous trigger (or a call that is not followed) keeps its live "
        "slot: longer than any call lasts (default: %(default)g)",
    )
    live.add_argument(
        "--webhook-port",
        type=port_number,
        default=None,
        metavar="PORT",
        help="receive VoiceHub's webhooks on this port while the campaign runs (secret from "
        f"${SECRET_ENV}): calls finish and slots free as soon as VoiceHub says so, and "
        "ambiguous rows are reconciled to the call they placed",
    )


def live_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~voicehub_async.campaign.Campaign` keywords for these options."""
    from voicehub_async.campaign.webhooks import SECRET_ENV

    options: dict[str, Any] = {
        "max_live": getattr(args, "max_live", None),
        "max_call_time": getattr(args, "max_call_time", None),
        "webhook_port": getattr(args, "webhook_port", None),
    }
    if options["max_call_time"] is None:
        del options["max_call_time"]
    if options["webhook_port"] is not None:
        secret = os.environ.get(SECRET_ENV, "").strip()
        if not secret:
            raise CommandError(
                f"--webhook-port needs the agent's webhook secret in ${SECRET_ENV}",
                field="--webhook-port",
            )
        options["webhook_secret"] = secret
    return options


def report_stop_cause(campaign: Campaign, stream: IO[str] | None = None) -> None:
    """Print, in one line, why the campaign stopped dialing early (if it did)."""
    cause = campaign.live.cause
    if cause is None:
        return
    out = stream if stream is not None else sys.stderr
    out.write(redact(f"voicehub: stopped dialing: {cause.message}") + "\n")
    out.flush()
