"""Helpers shared by the benchmarks: a simulator in its own process, peak RSS, numbers.

The simulator runs in a separate process so that its CPU does not count
against the client being measured (on a 2-core machine each gets a core);
peak memory is measured on a child process that does nothing else, read
from the kernel's accounting (``wait4``) rather than sampled.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import attrs

__all__ = [
    "SimulatorProcess",
    "format_bytes",
    "median",
    "phone_number",
    "run_for_peak_rss",
    "simulator_process",
]

_LISTENING = re.compile(r"listening on (?P<url>\S+) \(api key: (?P<key>[^)]+)\)")


@attrs.frozen
class SimulatorProcess:
    """A simulator serving from a child process."""

    base_url: str
    api_key: str
    pid: int


@contextlib.contextmanager
def simulator_process(*options: str, startup_timeout: float = 20.0) -> Iterator[SimulatorProcess]:
    """Run ``python -m voicehub_async.simulator --port 0 *options`` until the block ends.

    The URL and key are read from the one line the simulator prints once it
    listens. Its stderr is inherited, so a crash shows up in the output.
    """
    command = [sys.executable, "-m", "voicehub_async.simulator", "--port", "0", *options]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + startup_timeout
        line = ""
        while not line:
            if process.poll() is not None:
                raise RuntimeError(f"the simulator exited with status {process.returncode}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("the simulator did not start in time")
            if selector.select(timeout=left):
                line = process.stdout.readline()
        selector.close()
        match = _LISTENING.search(line)
        if match is None:
            raise RuntimeError(f"unexpected first line from the simulator: {line!r}")
        yield SimulatorProcess(match["url"], match["key"], process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_for_peak_rss(argv: Sequence[str]) -> tuple[int, str]:
    """Run ``argv`` to completion; return its peak resident memory in bytes and its stdout.

    Read with ``wait4`` from the kernel's accounting of that process alone, so
    neither this process nor the simulator count.
    """
    process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{argv!r} exited with status {process.returncode}:\n{output}")
    # ru_maxrss is in kilobytes on Linux, in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return usage.ru_maxrss * scale, output


def phone_number(i: int) -> str:
    """A distinct valid US number for i < 10,000 (+1 415 555 0000 ... 9999), cycling after."""
    return f"+1415555{i % 10_000:04d}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def format_bytes(n: float) -> str:
    return f"{n / (1024 * 1024):.1f} MB"
