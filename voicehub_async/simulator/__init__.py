"""A faithful fake VoiceHub server, for tests, demos and benchmarks.

>>> from voicehub_async.simulator import Simulator, SimulatorConfig
>>> async def main() -> None:  # doctest: +SKIP
...     async with Simulator(SimulatorConfig(time_scale=120)) as sim:
...         print(sim.base_url, sim.api_key)

:class:`Simulator` runs in the caller's event loop, :class:`SimulatorThread`
in a background thread; both expose the trigger log, the calls, counters and
controls to script faults (:class:`Fault`) and pin statuses. Importing this
package starts nothing and imports aiohttp only when a name is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .calls import STATUSES, SimulatedCall, canonical_status
    from .clock import ManualClock
    from .config import ENDPOINTS, OUTCOMES, FaultConfig, LifecycleConfig, SimulatorConfig
    from .faults import AnyFault, DelayFault, Fault, RedirectFault, ResetFault, StatusFault
    from .server import CONCURRENT_LIMIT_MESSAGE, SIMULATOR_APP_KEY, Simulator, TriggerRecord
    from .thread import SimulatorThread
    from .triggerlog import TriggerLogFile

# Names are resolved on first use (PEP 562) so that importing the pytest
# plugin, which pytest does in every session once the package is installed,
# does not import aiohttp.web.
_SUBMODULE = {
    "ManualClock": "clock",
    "ENDPOINTS": "config",
    "OUTCOMES": "config",
    "FaultConfig": "config",
    "LifecycleConfig": "config",
    "SimulatorConfig": "config",
    "AnyFault": "faults",
    "DelayFault": "faults",
    "Fault": "faults",
    "RedirectFault": "faults",
    "ResetFault": "faults",
    "StatusFault": "faults",
    "STATUSES": "calls",
    "SimulatedCall": "calls",
    "canonical_status": "calls",
    "CONCURRENT_LIMIT_MESSAGE": "server",
    "SIMULATOR_APP_KEY": "server",
    "Simulator": "server",
    "TriggerRecord": "server",
    "SimulatorThread": "thread",
    "TriggerLogFile": "triggerlog",
}


def __getattr__(name: str) -> Any:
    submodule = _SUBMODULE.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{submodule}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULE])


__all__ = [
    "CONCURRENT_LIMIT_MESSAGE",
    "ENDPOINTS",
    "OUTCOMES",
    "SIMULATOR_APP_KEY",
    "STATUSES",
    "AnyFault",
    "DelayFault",
    "Fault",
    "FaultConfig",
    "LifecycleConfig",
    "ManualClock",
    "RedirectFault",
    "ResetFault",
    "SimulatedCall",
    "Simulator",
    "SimulatorConfig",
    "SimulatorThread",
    "StatusFault",
    "TriggerLogFile",
    "TriggerRecord",
    "canonical_status",
]
