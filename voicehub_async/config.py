"""Small configuration values: timeouts and connection limits.

Like httpx's ``_config``: plain immutable objects, built once and shared, so a
setting means the same thing everywhere it is passed.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import attrs

__all__ = ["DEFAULT_BASE_URL", "Timeout", "TimeoutTypes", "check_base_url", "is_loopback_host"]

DEFAULT_BASE_URL = "https://voicehub.dataqueue.ai"


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


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> str:
    """``url`` without a trailing slash, if it is HTTPS (or HTTP on loopback).

    Sending the API key in clear text over a network is refused; the loopback
    exception is for the built-in simulator and local test servers.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"base_url must be an https:// URL, got {url!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(
            f"base_url {url!r} is plain http: the API key would travel unencrypted; "
            "use https:// (http is allowed only for localhost / 127.0.0.1 / ::1)"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("base_url must not carry a query, fragment or credentials")
    return url.rstrip("/")
