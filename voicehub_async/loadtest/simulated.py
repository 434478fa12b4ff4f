"""What ``voicehub loadtest --simulate`` runs against: an in-process simulator.

The defaults make ``voicehub loadtest --simulate`` need no other option: an
agent id, a hundred fictional test numbers (+1 202 555-0100 to -0199, a range
reserved for fiction), the ramp ``0:1/s,60:10/s,120:10/s`` and a time scale
of 10, so the two-minute ramp takes twelve seconds of wall time and the whole
run well under a minute. Simulated calls are short (10 to 45 s of talk,
rather than the simulator's usual 20 to 180 s) because a test agent's calls
usually are, and so that the run ends soon after its ramp.

The simulator serves from the run's own event loop: the ramp, the poller
and the simulated calls then share one clock, scaled by the same factor.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

from .ramp import Ramp

if TYPE_CHECKING:
    from ..simulator import FaultConfig, LifecycleConfig, Simulator

__all__ = [
    "DEFAULT_SIMULATED_RAMP",
    "DEFAULT_TIME_SCALE",
    "SIMULATED_AGENT",
    "default_simulated_ramp",
    "simulated_lifecycle",
    "simulated_numbers",
    "simulated_service",
]

SIMULATED_AGENT: Final = "agent-loadtest"
DEFAULT_SIMULATED_RAMP: Final = "0:1/s,60:10/s,120:10/s"
DEFAULT_TIME_SCALE: Final = 10.0


def default_simulated_ramp() -> Ramp:
    """The ramp ``--simulate`` uses when none is given."""
    return Ramp.parse(DEFAULT_SIMULATED_RAMP)


def simulated_numbers(count: int = 100) -> tuple[str, ...]:
    """``count`` (at most 100) fictional numbers, +12025550100 upwards."""
    if not 1 <= count <= 100:
        raise ValueError("between 1 and 100 fictional test numbers are available")
    return tuple(f"+1202555{100 + i:04d}" for i in range(count))


def simulated_lifecycle() -> LifecycleConfig:
    """Short calls, as a test agent's are (simulated seconds)."""
    from ..simulator import LifecycleConfig

    return LifecycleConfig(queue_delay=(0.5, 3.0), ring_time=(2.0, 10.0), talk_time=(10.0, 45.0))


@contextlib.asynccontextmanager
async def simulated_service(
    *,
    time_scale: float = DEFAULT_TIME_SCALE,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    lifecycle: LifecycleConfig | None = None,
    faults: FaultConfig | None = None,
    seed: int | None = 0,
) -> AsyncIterator[Simulator]:
    """A started :class:`~voicehub_async.simulator.Simulator` on 127.0.0.1
    (a free port), stopped on exit. With ``webhook_url`` it pushes every
    call's statuses there, signed with ``webhook_secret``.

    The trigger log is off (``record_triggers=False``): a load test only
    needs the simulator's counters, and memory stays flat.
    """
    from ..simulator import FaultConfig, Simulator, SimulatorConfig

    config = SimulatorConfig(
        time_scale=time_scale,
        lifecycle=lifecycle if lifecycle is not None else simulated_lifecycle(),
        faults=faults if faults is not None else FaultConfig(),
        seed=seed,
        record_triggers=False,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
    )
    async with Simulator(config) as simulator:
        yield simulator
