"""voicehub-async: an asyncio-native SDK for VoiceHub's VoIP Calls API.

Everything a caller needs is importable from here::

    from voicehub_async import VoiceHubClient, CallRequest, AmbiguousTriggerError
"""

from __future__ import annotations

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
from .models import Call, CallRequest, CallStatus, Recordings
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

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AmbiguousTriggerError",
    "AuthenticationError",
    "BadRequestError",
    "Call",
    "Campaign",
    "CampaignSummary",
    "CallRequest",
    "CallLostError",
    "CallStatus",
    "DispatchResult",
    "DispatchStats",
    "Dispatcher",
    "CallTimedOutError",
    "CallTrackingError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "Recordings",
    "RedirectError",
    "RetryPolicy",
    "ServerError",
    "StatusChange",
    "StatusPoller",
    "Timeout",
    "UnexpectedResponseError",
    "VoiceHubClient",
    "VoiceHubError",
    "WaitTimeoutError",
    # webhooks
    "AnalysisResultReady",
    "CallStatusChanged",
    "RecordingsAvailable",
    "UnknownEvent",
    "WebhookASGIApp",
    "WebhookError",
    "WebhookEvent",
    "WebhookReceiver",
    "aiohttp_app",
    "aiohttp_handler",
    "parse_event",
    "__version__",
]
