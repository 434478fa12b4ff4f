"""Fetching the recording URL of each completed call (``--recordings``).

A few worker tasks take ``(row, call_id)`` pairs from a queue, so that the
number of tasks stays fixed however many calls complete. The service may
publish a recording a little after the call ends, so a 404 is retried a few
times after a pause; any other failure is logged and leaves the row without a
URL (the call's outcome is unaffected, and a resumed run tries again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from voicehub_async.errors import NotFoundError, VoiceHubError

from .journal import RecordRecording

if TYPE_CHECKING:
    from voicehub_async.client import VoiceHubClient

    from .groupcommit import GroupCommitter

__all__ = ["RecordingFetcher"]

logger = logging.getLogger("voicehub_async.campaign")


class RecordingFetcher:
    """Looks up recording URLs in the background and stores them in the journal.

    ``tries`` lookups per call at most, ``retry_delay`` seconds apart, while
    the service answers 404. ``fetched`` counts URLs stored.
    """

    def __init__(
        self,
        client: VoiceHubClient,
        writer: GroupCommitter,
        *,
        workers: int = 8,
        tries: int = 3,
        retry_delay: float = 2.0,
    ) -> None:
        self._client = client
        self._writer = writer
        self._tries = tries
        self._retry_delay = retry_delay
        self._queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        self._tasks = [
            asyncio.get_running_loop().create_task(self._work(), name=f"voicehub-recordings-{n}")
            for n in range(workers)
        ]
        self.fetched = 0

    def add(self, row: int, call_id: str) -> None:
        """Look up the recording of ``call_id`` (row ``row``)."""
        self._queue.put_nowait((row, call_id))

    async def drain(self) -> None:
        """Wait until every call added has been looked up, then stop the workers."""
        await self._queue.join()
        await self.close()

    async def close(self) -> None:
        """Stop at once; calls not looked up yet keep no URL (a resume retries)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _work(self) -> None:
        queue = self._queue
        while True:
            row, call_id = await queue.get()
            try:
                url = await self._lookup(call_id)
                if url is not None:
                    self._writer.write(RecordRecording(row, url, time.time()))
                    self.fetched += 1
            finally:
                queue.task_done()

    async def _lookup(self, call_id: str) -> str | None:
        for attempt in range(1, self._tries + 1):
            try:
                recordings = await self._client.get_recordings(call_id)
            except NotFoundError:
                if attempt == self._tries:
                    logger.info("no recording for call %s after %d tries", call_id, attempt)
                    return None
                await asyncio.sleep(self._retry_delay)
                continue
            except VoiceHubError as exc:
                logger.warning("recording of call %s not fetched: %s", call_id, exc)
                return None
            if recordings.url is None and attempt < self._tries:
                await asyncio.sleep(self._retry_delay)
                continue
            return recordings.url
        return None
