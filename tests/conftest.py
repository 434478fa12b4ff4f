"""Shared fixtures. Keep this small: each test file owns what only it needs."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

#: A key that looks like a real one, so that a leak of it is easy to grep for.
SECRET_KEY = "dq_live_SECRET_4f9a2c7e1b8d"


@pytest.fixture
def api_key() -> str:
    return SECRET_KEY


@pytest.fixture(autouse=True)
def _no_voicehub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a developer's real key or base URL from the environment."""
    monkeypatch.delenv("VOICEHUB_API_KEY", raising=False)
    monkeypatch.delenv("VOICEHUB_BASE_URL", raising=False)


class _StreamWriterStub:
    output_size = 0


@pytest.fixture
def mock_aiohttp(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """An ``aioresponses`` mock that works with aiohttp >= 3.14.

    aioresponses 0.7.9 builds ``ClientResponse`` without the ``stream_writer``
    argument aiohttp 3.14 requires (pnuckowski/aioresponses#289); until a
    release fixes it, a subclass supplies a stub.
    """
    import aioresponses.core as core

    if "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters:

        class CompatResponse(aiohttp.ClientResponse):
            def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
                kwargs.setdefault("stream_writer", _StreamWriterStub())
                super().__init__(method, url, **kwargs)

        monkeypatch.setattr(core, "ClientResponse", CompatResponse)
    with aioresponses() as mock:
        yield mock


#: The database the PostgreSQL store's tests use; .ci/run sets it.
POSTGRES_URL_ENV = "VOICEHUB_TEST_POSTGRES_URL"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL with a fresh schema of its own (dropped after the test),
    so that suites run at once on one database never see each other's rows.
    Skipped, saying how to run it, when $VOICEHUB_TEST_POSTGRES_URL is unset."""
    import asyncio
    import os
    import uuid

    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        pytest.skip(
            f"PostgreSQL tests need a database: set {POSTGRES_URL_ENV}="
            "postgresql://postgres@127.0.0.1:5432/test (as .ci/run does)"
        )
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield f"{url}{'&' if '?' in url else '?'}schema={schema}"

    async def drop() -> None:
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())
