"""The small shared helpers: one answer each, used by every module that needs it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from datetime import datetime, timedelta, timezone, tzinfo

import pytest

import voicehub_async
from voicehub_async._aio import wake
from voicehub_async._signals import handle_signals
from voicehub_async._time import format_duration, is_aware


class _NoOffset(tzinfo):
    """A tzinfo that knows no offset: the datetime is naive all the same."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None


def test_is_aware() -> None:
    assert is_aware(datetime(2030, 1, 1, tzinfo=timezone.utc))
    assert is_aware(datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=2))))
    assert not is_aware(datetime(2030, 1, 1))
    assert not is_aware(datetime(2030, 1, 1, tzinfo=_NoOffset()))


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "?"),
        (0, "0s"),
        (0.25, "0.25s"),
        (2.5, "2.5s"),
        (42, "42s"),
        (42.4, "42s"),
        (59.6, "1m00s"),
        (125, "2m05s"),
        (3725, "1h02m05s"),
    ],
)
def test_format_duration(seconds: float | None, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_the_campaign_and_the_load_test_show_durations_alike() -> None:
    from voicehub_async.campaign.progress import format_duration as campaign_format
    from voicehub_async.loadtest.ramp import format_duration as loadtest_format

    assert campaign_format is loadtest_format is format_duration


async def test_wake_resolves_once() -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    wake(future)
    wake(future)  # a timer racing a nudge: harmless
    assert future.done() and future.result() is None


@pytest.mark.skipif(sys.platform == "win32", reason="no loop signal handlers on Windows")
async def test_handle_signals_calls_the_handler_and_restores() -> None:
    seen: list[int] = []
    got = asyncio.Event()

    def on_signal(signum: int) -> None:
        seen.append(signum)
        got.set()

    with handle_signals(on_signal, (signal.SIGUSR1,)) as restore:
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(got.wait(), 10)
        restore()
        restore()  # idempotent
    assert seen == [signal.SIGUSR1]
    loop = asyncio.get_running_loop()
    assert not loop.remove_signal_handler(signal.SIGUSR1)  # nothing left installed


async def test_handle_signals_outside_the_main_thread_installs_nothing() -> None:
    result: list[bool] = []

    def in_thread() -> None:
        async def run() -> None:
            with handle_signals(lambda _: None, (signal.SIGUSR1,)) as restore:
                restore()
                result.append(True)

        asyncio.run(run())

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(10)
    assert result == [True]


def test_public_names_are_listed_once_and_all_resolve() -> None:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(voicehub_async))
    [block] = [n for n in tree.body if isinstance(n, ast.If)]
    listed = [alias.asname for stmt in block.body for alias in stmt.names]  # type: ignore[attr-defined]
    assert len(listed) == len(set(listed))
    assert [*sorted(listed), "__version__"] == voicehub_async.__all__
    # Nowhere else in the module is a public name spelled out.
    source = inspect.getsource(voicehub_async)
    assert source.count('"VoiceHubClient"') == 0 and source.count("VoiceHubClient as") == 1
