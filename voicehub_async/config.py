"""Small configuration values: timeouts, and where the key and base URL come from.

Like httpx's ``_config``: plain immutable objects, built once and shared, so a
setting means the same thing everywhere it is passed.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import attrs

# Re-exported: the environment lookup and the key rules have modules of their own.
from ._env import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    api_key_from_environment,
    base_url_from_environment,
)
from .keyscope import check_base_url, is_loopback_host

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "Timeout",
    "TimeoutTypes",
    "api_key_from_environment",
    "base_url_from_environment",
    "check_base_url",
    "is_loopback_host",
]


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"timeout {attribute.name} must be a positive number of seconds or None")


@attrs.frozen
class Timeout:
    """Timeouts of one request, in seconds (None: no limit).

    ``connect`` bounds getting a connection (from the pool, or a new one);
    ``read`` bounds each wait for data from the service; ``total`` bounds the
    whole request. A connect timeout is safe to retry even for a trigger
    (nothing was sent); a read timeout on a trigger is ambiguous.
    """

    total: float | None = attrs.field(default=None, validator=_positive_or_none)
    connect: float | None = attrs.field(default=10.0, validator=_positive_or_none)
    read: float | None = attrs.field(default=30.0, validator=_positive_or_none)

    @classmethod
    def of(cls, value: TimeoutTypes) -> Timeout:
        """A Timeout from seconds (read limit, and connect no longer than it) or a Timeout."""
        if isinstance(value, Timeout):
            return value
        seconds = float(value)
        return cls(total=None, connect=min(10.0, seconds), read=seconds)

    def to_aiohttp(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=self.total, connect=self.connect, sock_connect=self.connect, sock_read=self.read
        )


TimeoutTypes = float | int | Timeout
