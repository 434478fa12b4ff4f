"""voicehub-async: an asyncio-native SDK for VoiceHub's VoIP Calls API.

Everything a caller needs is importable from here::

    from voicehub_async import VoiceHubClient, CallRequest, AmbiguousTriggerError
"""

from __future__ import annotations

from .client import VoiceHubClient
from .config import Timeout
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
from .retry import RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AmbiguousTriggerError",
    "AuthenticationError",
    "BadRequestError",
    "Call",
    "CallRequest",
    "CallStatus",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "Recordings",
    "RedirectError",
    "RetryPolicy",
    "ServerError",
    "Timeout",
    "UnexpectedResponseError",
    "VoiceHubClient",
    "VoiceHubError",
    "__version__",
]
