"""pytest fixtures serving a fake VoiceHub from a background thread.

Registered through the ``pytest11`` entry point, so installing
``voicehub-async`` makes them available to any project's tests:

* ``voicehub_simulator``: a started :class:`SimulatorThread` with the default
  :class:`SimulatorConfig` (no faults, ``time_scale`` 60), one per test.
* ``voicehub_simulator_factory``: ``factory(config=None, **kwargs)`` starts a
  :class:`SimulatorThread` (``kwargs`` as for its constructor: ``clock``,
  ``wall_clock``, ``host``, ``port``); all are stopped at teardown.

Thread-based so that they work in synchronous tests and under any async test
framework. The simulator itself is imported lazily: pytest loads this module
in every session of a project that has the package installed, and that must
stay cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from .config import SimulatorConfig
    from .thread import SimulatorThread

__all__ = ["SimulatorFactory", "voicehub_simulator", "voicehub_simulator_factory"]


class SimulatorFactory(Protocol):
    """The type of the ``voicehub_simulator_factory`` fixture."""

    def __call__(self, config: SimulatorConfig | None = None, **kwargs: Any) -> SimulatorThread: ...


@pytest.fixture
def voicehub_simulator_factory() -> Iterator[SimulatorFactory]:
    """Start simulators with custom configurations; stopped at teardown."""
    from .thread import SimulatorThread

    started: list[SimulatorThread] = []

    def factory(config: SimulatorConfig | None = None, **kwargs: Any) -> SimulatorThread:
        sim = SimulatorThread(config, **kwargs).start()
        started.append(sim)
        return sim

    try:
        yield factory
    finally:
        for sim in reversed(started):
            sim.stop()


@pytest.fixture
def voicehub_simulator(voicehub_simulator_factory: SimulatorFactory) -> SimulatorThread:
    """A started simulator with default settings (no faults, time_scale 60)."""
    return voicehub_simulator_factory()
