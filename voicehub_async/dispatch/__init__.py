"""Trigger many calls at once, safely: the :class:`Dispatcher`.

::

    async with VoiceHubClient() as client:
        async for result in client.dispatch(rows, concurrency=100, rate_limit=50):
            print(result.index, result.outcome, result.call or result.error)

The package, one job per module:

* :mod:`~voicehub_async.dispatch.dispatcher`: the workers and the life of a
  dispatch (start, stop, drain), the public :class:`Dispatcher`;
* :mod:`~voicehub_async.dispatch.feed`: the input side, reading the caller's
  iterable lazily and validating each input once;
* :mod:`~voicehub_async.dispatch.sender`: one input's attempts, acting on
  the retry policy's classification (the shared 429 pause);
* :mod:`~voicehub_async.dispatch.channel`: the bounded FIFO to the consumer;
* :mod:`~voicehub_async.dispatch.results`: :class:`DispatchResult` and the
  hook types; :mod:`~voicehub_async.dispatch.control`: the stop/fail state
  the others share.

The dispatcher depends on :class:`~voicehub_async.protocols.TriggerClient`,
not on the client class: nothing here imports :mod:`voicehub_async.client`.
"""

from ..stats import OUTCOMES, DispatchStats, Outcome
from .dispatcher import Dispatcher
from .feed import as_call_request
from .results import DispatchResult, OnResult, OnSending, RequestItem, TriggerGate

# The name the tests (and older code) know it by.
_as_call_request = as_call_request

__all__ = [
    "OUTCOMES",
    "DispatchResult",
    "DispatchStats",
    "Dispatcher",
    "OnResult",
    "OnSending",
    "Outcome",
    "RequestItem",
    "TriggerGate",
]
