"""voicehub-async: an asyncio-native SDK for VoiceHub's VoIP Calls API.

Everything a caller needs is importable from here::

    from voicehub_async import VoiceHubClient, CallRequest, AmbiguousTriggerError

Names are imported on first use (PEP 562): ``import voicehub_async`` stays
cheap, which matters because pytest imports the simulator's plugin (and so
this package) in every test session of a project that has it installed, and
the ``voicehub`` command starts faster.

The public names are listed once, in the ``TYPE_CHECKING`` block below: type
checkers read it as the package's exports (``X as X`` marks a re-export), and
at run time :func:`__getattr__` reads the same block (from this file's source,
on first use) to learn which submodule defines each name. Adding a public
name is adding one import line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .campaign import Campaign as Campaign
    from .campaign import CampaignSummary as CampaignSummary
    from .client import VoiceHubClient as VoiceHubClient
    from .config import Timeout as Timeout
    from .dispatch import Dispatcher as Dispatcher
    from .dispatch import DispatchResult as DispatchResult
    from .dispatch import DispatchStats as DispatchStats
    from .errors import AmbiguousTriggerError as AmbiguousTriggerError
    from .errors import APIConnectionError as APIConnectionError
    from .errors import APIStatusError as APIStatusError
    from .errors import APITimeoutError as APITimeoutError
    from .errors import AuthenticationError as AuthenticationError
    from .errors import BadRequestError as BadRequestError
    from .errors import InvalidRequestError as InvalidRequestError
    from .errors import NotFoundError as NotFoundError
    from .errors import PermissionDeniedError as PermissionDeniedError
    from .errors import RateLimitError as RateLimitError
    from .errors import RedirectError as RedirectError
    from .errors import ServerError as ServerError
    from .errors import UnexpectedResponseError as UnexpectedResponseError
    from .errors import VoiceHubError as VoiceHubError
    from .models import Call as Call
    from .models import CallRequest as CallRequest
    from .models import CallStage as CallStage
    from .models import CallStatus as CallStatus
    from .models import PreparedRequest as PreparedRequest
    from .models import Recordings as Recordings
    from .poller import CallLostError as CallLostError
    from .poller import CallTimedOutError as CallTimedOutError
    from .poller import CallTrackingError as CallTrackingError
    from .poller import StatusChange as StatusChange
    from .poller import StatusPoller as StatusPoller
    from .poller import WaitTimeoutError as WaitTimeoutError
    from .retry import RetryPolicy as RetryPolicy
    from .webhooks import AnalysisResultReady as AnalysisResultReady
    from .webhooks import CallStatusChanged as CallStatusChanged
    from .webhooks import RecordingsAvailable as RecordingsAvailable
    from .webhooks import UnknownEvent as UnknownEvent
    from .webhooks import WebhookASGIApp as WebhookASGIApp
    from .webhooks import WebhookError as WebhookError
    from .webhooks import WebhookEvent as WebhookEvent
    from .webhooks import WebhookReceiver as WebhookReceiver
    from .webhooks import aiohttp_app as aiohttp_app
    from .webhooks import aiohttp_handler as aiohttp_handler
    from .webhooks import parse_event as parse_event

__version__ = "0.1.0"


def _public_names() -> dict[str, str]:
    """Public name -> defining submodule, read from the ``TYPE_CHECKING``
    block of this module's source (the one list)."""
    import ast
    import sys

    # The loader, not __file__: this works from a zip too.
    get_source = getattr(getattr(sys.modules[__name__], "__loader__", None), "get_source", None)
    source = get_source(__name__) if get_source is not None else None
    if source is None:
        # Some loaders (pytest's assertion rewriter, for one) answer None:
        # the file itself is still there.
        try:
            with open(__file__, encoding="utf-8") as file:
                source = file.read()
        except (OSError, TypeError):
            source = None
    if source is None:  # pragma: no cover - a bundle shipped without sources
        raise ImportError(
            "voicehub_async's public names are read from its __init__.py source, which is "
            "missing; import them from their submodules (voicehub_async.client, ...)"
        )
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name):
            if node.test.id == "TYPE_CHECKING":
                return {
                    alias.asname or alias.name: str(statement.module)
                    for statement in node.body
                    if isinstance(statement, ast.ImportFrom)
                    for alias in statement.names
                }
    raise ImportError("voicehub_async/__init__.py has no TYPE_CHECKING block")  # pragma: no cover


def __getattr__(name: str) -> Any:
    table = globals().get("_SUBMODULE")
    if table is None:
        table = globals()["_SUBMODULE"] = _public_names()  # read once
    if name == "__all__":
        value: Any = [*sorted(table), "__version__"]
    else:
        submodule = table.get(name)
        if submodule is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{submodule}", __name__), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__getattr__("__all__")))
