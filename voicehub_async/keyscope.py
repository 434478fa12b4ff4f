"""Where the API key may go: the one set of URL rules.

The key authenticates every request to the API, so a URL decides whether it
is sent. The rules, all here:

* The base URL is https, or plain http only on loopback (the built-in
  simulator, local test servers): the key never crosses a network in clear
  text. No credentials, query or fragment in it.
* The key goes only to the base URL's *origin* (scheme, host in any case,
  port with the scheme's default filled in, no user name). A recording on
  another host (a storage bucket) is fetched without it; an analysis result
  (a URL out of a webhook body: input from the network) must be on the
  origin, under the base path, or it is refused before anything is sent.
* Redirects are never followed with the key attached (the client's job,
  :mod:`voicehub_async.client`; this module says which requests carry it).
"""

from __future__ import annotations

import ipaddress
from typing import Final
from urllib.parse import SplitResult, urljoin, urlsplit

import attrs

from .errors import InvalidRequestError

__all__ = ["KeyScope", "check_base_url", "is_loopback_host", "looks_like_api_path"]

_DEFAULT_PORTS: Final = {"https": 443, "http": 80}
#: Every API path starts with this; a base URL ending in it is a likely mistake.
API_PREFIX: Final = "/api/v1"


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


def _secure(parts: SplitResult) -> bool:
    """https, or http to a loopback host."""
    return parts.scheme == "https" or (
        parts.scheme == "http" and is_loopback_host(parts.hostname)
    )


def check_base_url(url: str) -> str:
    """``url`` without a trailing slash, if it is HTTPS (or HTTP on loopback).

    Sending the API key in clear text over a network is refused; the loopback
    exception is for the built-in simulator and local test servers.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"base_url must be an https:// URL, got {url!r}")
    if not _secure(parts):
        raise ValueError(
            f"base_url {url!r} is plain http: the API key would travel unencrypted; "
            "use https:// (http is allowed only for localhost / 127.0.0.1 / ::1)"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("base_url must not carry a query, fragment or credentials")
    return url.rstrip("/")


def looks_like_api_path(base_url: str) -> str | None:
    """The base URL it should probably be, when ``base_url`` ends in ``/api/v1``
    (the SDK adds that itself); else None. Used to explain a 404."""
    trimmed = base_url.rstrip("/")
    for suffix in (API_PREFIX, API_PREFIX + "/calls"):
        if trimmed.lower().endswith(suffix):
            return trimmed[: -len(suffix)]
    return None


def _origin(parts: SplitResult) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the default port filled in; None if unusable."""
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # an invalid port
        return None
    if port is None or parts.username is not None or parts.password is not None:
        return None
    return (parts.scheme, (parts.hostname or "").lower(), port)


@attrs.frozen
class KeyScope:
    """The URL rules for one client's ``base_url`` (checked on construction)."""

    base_url: str = attrs.field(converter=check_base_url)
    _parts: SplitResult = attrs.field(init=False, repr=False, eq=False)
    _origin: tuple[str, str, int] | None = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        object.__setattr__(self, "_parts", parts)
        object.__setattr__(self, "_origin", _origin(parts))

    def absolute(self, url: str) -> str:
        """``url`` resolved against the base URL (a relative URL is the API's)."""
        return urljoin(self.base_url + "/", url)

    def on_origin(self, url: str) -> bool:
        """True when an absolute ``url`` is on the API's origin: the key may go there."""
        return self._origin is not None and _origin(urlsplit(url)) == self._origin

    def download_url(self, url: str) -> tuple[str, bool]:
        """A recording URL made absolute, and whether the key goes with it.

        Raises :class:`InvalidRequestError` for a URL that is not https (http
        only on loopback).
        """
        absolute = self.absolute(url)
        if not _secure(urlsplit(absolute)):
            raise InvalidRequestError("url", url, "recordings are downloaded over https only")
        return absolute, self.on_origin(absolute)

    def api_path(self, url: str) -> str:
        """The API path (with its query) of a URL that must carry the key.

        For a URL given by the network (an ``analysisResultUrl``): it must be
        https (http only on loopback), on the API's origin and under the base
        path, or :class:`InvalidRequestError` names it and nothing is sent.
        """
        if not isinstance(url, str) or not url.strip():
            raise InvalidRequestError("url", url, "a non-empty URL string is required")
        absolute = self.absolute(url.strip())
        parts = urlsplit(absolute)
        if not _secure(parts):
            raise InvalidRequestError("url", url, "analysis results are fetched over https only")
        if not self.on_origin(absolute):
            raise InvalidRequestError(
                "url", url,
                f"not on the API host {self._parts.netloc}; the API key is only sent there",
            )
        base_path = self._parts.path.rstrip("/")
        if not parts.path.startswith(base_path + "/"):
            raise InvalidRequestError("url", url, f"outside the API's base path {base_path}")
        return parts.path[len(base_path):] + (f"?{parts.query}" if parts.query else "")
