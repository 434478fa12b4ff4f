"""voicehub-async: an asyncio-native SDK for VoiceHub's VoIP Calls API.

Everything a caller needs is importable from here::

    from voicehub_async import VoiceHubClient, CallRequest, AmbiguousTriggerError

Names are imported on first use (PEP 562): ``import voicehub_async`` stays
cheap, which matters because pytest imports the simulator's plugin (and so
this package) in every test session of a project that has it installed, and
the ``voicehub`` command starts faster.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .campaign import Campaign, CampaignSummary
    from .client import VoiceHubClient
    from .config import Timeout
    from .dispatch import Dispatcher, DispatchResult, DispatchStats
    from .errors import (
        AmbiguousTriggerError,
        APIConnectionError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        InvalidRequestError,
        NotFoundError,
        PermissionDeniedError,
        RateLimitError,
        RedirectError,
        ServerError,
        UnexpectedResponseError,
        VoiceHubError,
    )
    from .models import Call, CallRequest, CallStatus, PreparedRequest, Recordings
    from .poller import (
        CallLostError,
        CallTimedOutError,
        CallTrackingError,
        StatusChange,
        StatusPoller,
        WaitTimeoutError,
    )
    from .retry import RetryPolicy
    from .webhooks import (
        AnalysisResultReady,
        CallStatusChanged,
        RecordingsAvailable,
        UnknownEvent,
        WebhookASGIApp,
        WebhookError,
        WebhookEvent,
        WebhookReceiver,
        aiohttp_app,
        aiohttp_handler,
        parse_event,
    )

__version__ = "0.1.0"

#: Public name -> the submodule that defines it.
_SUBMODULE: dict[str, str] = {
    "APIConnectionError": "errors",
    "APIStatusError": "errors",
    "APITimeoutError": "errors",
    "AmbiguousTriggerError": "errors",
    "AnalysisResultReady": "webhooks",
    "AuthenticationError": "errors",
    "BadRequestError": "errors",
    "Call": "models",
    "CallLostError": "poller",
    "CallRequest": "models",
    "CallStatus": "models",
    "CallStatusChanged": "webhooks",
    "CallTimedOutError": "poller",
    "CallTrackingError": "poller",
    "Campaign": "campaign",
    "CampaignSummary": "campaign",
    "DispatchResult": "dispatch",
    "DispatchStats": "dispatch",
    "Dispatcher": "dispatch",
    "InvalidRequestError": "errors",
    "NotFoundError": "errors",
    "PermissionDeniedError": "errors",
    "PreparedRequest": "models",
    "RateLimitError": "errors",
    "Recordings": "models",
    "RecordingsAvailable": "webhooks",
    "RedirectError": "errors",
    "RetryPolicy": "retry",
    "ServerError": "errors",
    "StatusChange": "poller",
    "StatusPoller": "poller",
    "Timeout": "config",
    "UnexpectedResponseError": "errors",
    "UnknownEvent": "webhooks",
    "VoiceHubClient": "client",
    "VoiceHubError": "errors",
    "WaitTimeoutError": "poller",
    "WebhookASGIApp": "webhooks",
    "WebhookError": "webhooks",
    "WebhookEvent": "webhooks",
    "WebhookReceiver": "webhooks",
    "aiohttp_app": "webhooks",
    "aiohttp_handler": "webhooks",
    "parse_event": "webhooks",
}

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AmbiguousTriggerError",
    "AnalysisResultReady",
    "AuthenticationError",
    "BadRequestError",
    "Call",
    "CallLostError",
    "CallRequest",
    "CallStatus",
    "CallStatusChanged",
    "CallTimedOutError",
    "CallTrackingError",
    "Campaign",
    "CampaignSummary",
    "DispatchResult",
    "DispatchStats",
    "Dispatcher",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "PreparedRequest",
    "RateLimitError",
    "Recordings",
    "RecordingsAvailable",
    "RedirectError",
    "RetryPolicy",
    "ServerError",
    "StatusChange",
    "StatusPoller",
    "Timeout",
    "UnexpectedResponseError",
    "UnknownEvent",
    "VoiceHubClient",
    "VoiceHubError",
    "WaitTimeoutError",
    "WebhookASGIApp",
    "WebhookError",
    "WebhookEvent",
    "WebhookReceiver",
    "__version__",
    "aiohttp_app",
    "aiohttp_handler",
    "parse_event",
]


def __getattr__(name: str) -> Any:
    submodule = _SUBMODULE.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{submodule}", __name__), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
