"""Lower layers never import higher ones: checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_after(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


@pytest.mark.parametrize(
    ("module", "never"),
    [
        # The poller depends on the StatusReader protocol, not on the client:
        # client.trigger_and_wait() importing the poller is no circle.
        ("voicehub_async.poller", {"voicehub_async.client", "aiohttp"}),
        # Likewise the dispatcher, on the TriggerClient protocol.
        ("voicehub_async.dispatch", {"voicehub_async.client", "aiohttp"}),
        # The simulator's call model and webhook sender need not the server.
        ("voicehub_async.simulator.calls", {"voicehub_async.simulator.server"}),
        ("voicehub_async.simulator.webhooks", {"voicehub_async.simulator.server"}),
        ("voicehub_async.simulator.faults", {"voicehub_async.simulator.server", "aiohttp"}),
    ],
)
def test_module_does_not_import(module: str, never: set[str]) -> None:
    assert not loaded_after(module) & never
