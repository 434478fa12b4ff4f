"""One status vocabulary: CallStatus.stage and CallStatus.may_follow, and the
modules that order or group statuses all following it (the poller, webhook
de-duplication, load-test metrics)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, cast

import pytest

from voicehub_async import Call, CallStatus, StatusPoller, VoiceHubClient
from voicehub_async.loadtest.metrics import ANSWERED_STATUSES
from voicehub_async.models import TERMINAL_STATUSES, CallStage
from voicehub_async.webhooks.dedup import StatusOrderGuard, status_rank

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
LIVE = ("scheduled", "queued", "started", "in-progress")


def test_documented_statuses_in_lifecycle_order() -> None:
    names = [s.name for s in CallStatus.documented()]
    assert names[:4] == list(LIVE) and set(names[4:]) == TERMINAL_STATUSES
    stages = [s.stage for s in CallStatus.documented()]
    assert stages == sorted(stages, key=lambda s: -1 if s is None else int(s))
    assert CallStatus("In-Progress").stage is CallStage.IN_PROGRESS
    assert {CallStatus(n).stage for n in TERMINAL_STATUSES} == {CallStage.ENDED}
    assert all(s.is_known for s in CallStatus.documented())


def test_an_undocumented_status_has_no_stage_and_is_live() -> None:
    status = CallStatus("voicemail-left")
    assert status.stage is None and not status.is_terminal and not status.is_known


@pytest.mark.parametrize(
    ("previous", "new", "follows"),
    [
        (None, "completed", True),
        ("queued", "started", True),
        ("scheduled", "queued", True),
        ("started", "started", True),  # the same status is not backwards
        ("in-progress", "started", False),
        ("in-progress", "queued", False),
        ("started", "busy", True),
        ("completed", "failed", False),  # nothing follows a final status
        ("completed", "in-progress", False),
        ("busy", "voicemail", False),  # not even an undocumented one
        ("in-progress", "voicemail", True),  # unknown order: never behind a live status
        ("voicemail", "queued", True),  # ...and never holds the known ones back
        ("voicemail", "completed", True),
        ("voicemail", "ringing", True),
    ],
)
def test_may_follow(previous: str | None, new: str, follows: bool) -> None:
    before = None if previous is None else CallStatus(previous)
    assert CallStatus(new).may_follow(before) is follows


def test_answered_and_started_groups() -> None:
    answered = {s.name for s in CallStatus.documented() if s.is_answered}
    assert answered == {"in-progress", "completed"} == ANSWERED_STATUSES
    started = {s.name for s in CallStatus.documented() if s.has_started}
    assert started == {"started", "in-progress", "completed"}
    assert not CallStatus("voicemail").is_answered


# -- every module follows the one rule for undocumented statuses --------------------------


def test_webhook_order_guard_follows_may_follow() -> None:
    # Same timestamp: only the order of the statuses decides.
    for previous in (*LIVE, "voicemail", "completed"):
        for new in (*LIVE, "voicemail", "ringing", "completed"):
            guard = StatusOrderGuard()
            guard.record("c", CallStatus(previous), T0)
            fresh = new != previous and CallStatus(new).may_follow(CallStatus(previous))
            assert guard.is_stale("c", CallStatus(new), T0) is not fresh, (previous, new)


def test_an_undocumented_status_does_not_hold_back_later_webhooks() -> None:
    guard = StatusOrderGuard()
    guard.record("c", CallStatus.IN_PROGRESS, None)
    assert not guard.is_stale("c", CallStatus("on-hold"), None)
    guard.record("c", CallStatus("on-hold"), None)
    # Before: unknown ranked as in-progress, and in-progress after it was stale.
    assert not guard.is_stale("c", CallStatus.IN_PROGRESS, None)
    assert not guard.is_stale("c", CallStatus.COMPLETED, None)


def test_status_rank_is_deprecated_but_answers_as_before() -> None:
    with pytest.warns(DeprecationWarning, match="CallStatus.stage"):
        assert status_rank(CallStatus.QUEUED) == 1
    with pytest.warns(DeprecationWarning):
        assert status_rank(CallStatus("voicemail")) == 3
    with pytest.warns(DeprecationWarning):
        assert status_rank(CallStatus.BUSY) == 4


class _NoReads:
    async def get_call(self, call_id: str, **_: Any) -> Call:
        await asyncio.sleep(3600)
        raise AssertionError("not read")


async def test_the_poller_follows_may_follow_for_ingested_statuses() -> None:
    client = cast(VoiceHubClient, _NoReads())
    async with StatusPoller(client, min_interval=60.0, max_interval=60.0) as poller:
        poller.track(Call(id="a", status=CallStatus.IN_PROGRESS))
        assert poller.ingest("a", "on-hold") is not None  # unknown after a live status
        assert poller.ingest("a", "started") is not None  # and known ones after it
        assert poller.ingest("a", "queued") is None  # backwards from started
        assert poller.ingest("a", "completed") is not None
        changes = [change async for change in poller.changes()]
    assert [c.new.name for c in changes] == ["on-hold", "started", "completed"]
