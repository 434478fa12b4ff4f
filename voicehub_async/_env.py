"""Where the key and the base URL come from: the one lookup, for the client and the CLI.

Standard library only, so that the command line can use it before anything
heavy is imported.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "api_key_from_environment",
    "base_url_from_environment",
]

DEFAULT_BASE_URL: Final = "https://voicehub.dataqueue.ai"
API_KEY_ENV: Final = "VOICEHUB_API_KEY"
BASE_URL_ENV: Final = "VOICEHUB_BASE_URL"


def api_key_from_environment(api_key: str | None = None) -> str | None:
    """The API key: ``api_key`` if given, else ``$VOICEHUB_API_KEY``; stripped; None if empty.

    The one place the key is looked up, for the client and the command line
    (each says in its own words what to do when it is missing).
    """
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    if key is None:
        return None
    return key.strip() or None


def base_url_from_environment(base_url: str | None = None) -> str:
    """``base_url`` if given, else ``$VOICEHUB_BASE_URL``, else the service's URL."""
    return base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
