"""Value classes that configure the simulator.

They are frozen so that one configuration can be shared between a test, a
thread running the server and the pytest fixtures without anyone changing it
underneath the others; use :func:`attrs.evolve` to derive a variant.

Two kinds of time appear here. *Simulated* seconds (queue delay, ring and talk
time) are the durations a real call would take; the server divides them by
``SimulatorConfig.time_scale`` to get real seconds, so a two-minute call can
finish in a second. *Real* seconds (latency, slow-answer delay) are what a
client actually waits, because they are there to exercise its timeouts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

__all__ = [
    "ENDPOINTS",
    "OUTCOMES",
    "FaultConfig",
    "LifecycleConfig",
    "RecordingsShape",
    "SimulatorConfig",
]

#: Names of the endpoints, as used by ``FaultConfig.endpoints``,
#: ``Simulator.inject`` and ``Simulator.request_count``. ``download`` is the
#: recording file (``/recordings/<id>.wav``) the simulator serves itself.
ENDPOINTS: frozenset[str] = frozenset({"trigger", "status", "recordings", "download"})

#: Final statuses a call can be drawn to end in (lower case, as in the webhook
#: documentation; the server answers them capitalised).
OUTCOMES: frozenset[str] = frozenset({"completed", "unanswered", "busy", "failed", "cancelled"})

RecordingsShape = Literal["object", "list", "string"]

_DEFAULT_OUTCOMES: tuple[tuple[str, float], ...] = (
    ("completed", 0.70),
    ("unanswered", 0.15),
    ("busy", 0.10),
    ("failed", 0.05),
)


def _to_range(value: Iterable[float]) -> tuple[float, float]:
    """Accept any two-item sequence (a list parsed from JSON or a CLI) as a range."""
    items = tuple(float(v) for v in value)
    if len(items) != 2:
        raise ValueError(f"a range needs exactly two numbers (min, max), got {items!r}")
    return (items[0], items[1])


def _check_range(
    _inst: object, attribute: attrs.Attribute[Any], value: tuple[float, float]
) -> None:
    low, high = value
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high < low:
        raise ValueError(f"{attribute.name} must be (min, max) with 0 <= min <= max, got {value!r}")


def _to_outcomes(
    value: Mapping[str, float] | Iterable[tuple[str, float]],
) -> tuple[tuple[str, float], ...]:
    """Normalise a weight mapping into a hashable, ordered tuple of pairs.

    A tuple (not a dict) keeps the config hashable and makes the order of the
    weighted draw, hence a seeded run, independent of how it was written.
    """
    pairs = value.items() if isinstance(value, Mapping) else value
    merged: dict[str, float] = {}
    for name, weight in pairs:
        key = str(name).lower()
        if key not in OUTCOMES:
            raise ValueError(f"unknown outcome {name!r}; expected one of {sorted(OUTCOMES)}")
        merged[key] = merged.get(key, 0.0) + float(weight)
    return tuple(merged.items())


def _check_outcomes(
    _inst: object, _attribute: attrs.Attribute[Any], value: tuple[tuple[str, float], ...]
) -> None:
    if any(not math.isfinite(w) or w < 0 for _, w in value):
        raise ValueError(f"outcome weights must be finite and >= 0, got {value!r}")
    if sum(w for _, w in value) <= 0:
        raise ValueError("at least one outcome needs a positive weight")


def _check_rate(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be a probability in [0, 1], got {value!r}")


def _check_endpoints(
    _inst: object, _attribute: attrs.Attribute[Any], value: frozenset[str]
) -> None:
    unknown = value - ENDPOINTS
    if unknown:
        raise ValueError(
            f"unknown endpoint(s) {sorted(unknown)}; expected some of {sorted(ENDPOINTS)}"
        )


def _check_positive_or_none(
    _inst: object, attribute: attrs.Attribute[Any], value: float | None
) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be > 0 or None, got {value!r}")


def _to_frozenset(value: Iterable[str]) -> frozenset[str]:
    # A bare string is an easy mistake ("sim-key" -> {"s", "i", ...}); refuse it.
    if isinstance(value, str):
        raise TypeError("expected a collection of strings, not a single string")
    return frozenset(value)


def _to_optional_frozenset(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else _to_frozenset(value)


@attrs.frozen
class LifecycleConfig:
    """How created calls progress, in simulated seconds.

    Each call draws, once at creation, a queue delay, a ring time and a talk
    time uniformly from these ranges, and its final outcome from ``outcomes``
    (relative weights). Drawing everything up front is what lets the server
    compute a status lazily from the clock instead of running a timer per call.

    Timelines: ``completed`` goes Queued → Started → In-Progress → Completed;
    ``unanswered`` goes Queued → Started (ringing) → Unanswered; ``busy``,
    ``failed`` and ``cancelled`` go Queued → that status once the queue delay
    has passed.
    """

    queue_delay: tuple[float, float] = attrs.field(
        default=(1.0, 4.0), converter=_to_range, validator=_check_range
    )
    ring_time: tuple[float, float] = attrs.field(
        default=(3.0, 15.0), converter=_to_range, validator=_check_range
    )
    talk_time: tuple[float, float] = attrs.field(
        default=(20.0, 180.0), converter=_to_range, validator=_check_range
    )
    outcomes: tuple[tuple[str, float], ...] = attrs.field(
        default=_DEFAULT_OUTCOMES, converter=_to_outcomes, validator=_check_outcomes
    )


@attrs.frozen
class FaultConfig:
    """Random misbehaviour, drawn from the simulator's seeded generator.

    The ``*_rate`` fields are probabilities per request (their sum must not
    exceed 1); one draw decides which, if any, applies. Errors and
    ``reset_before_create`` happen before a trigger creates anything, so a
    client may safely retry them; ``reset_after_create`` and ``slow`` create the
    call first, which is the case a non-idempotent trigger must never retry
    blindly. ``latency`` (real seconds, uniform) is added to every request.

    ``rate_limit`` is requests per second per API key (a token bucket of
    ``rate_limit_burst`` tokens, default the rate rounded up); above it the
    server answers 429 with ``Retry-After`` in whole seconds.

    ``max_live_calls`` is the cap on calls live at once per API key, as voice
    platforms have one: while that many of the key's calls are between their
    trigger and a final status, a trigger is answered 429 with the JSON
    message ``"concurrent call limit exceeded"`` (no ``Retry-After``: only a
    call ending frees a place) and creates nothing. It applies to every
    trigger, whatever ``endpoints`` says.

    Everything applies only to ``endpoints`` (default: the three API
    endpoints, not the recording file download).
    """

    latency: tuple[float, float] = attrs.field(
        default=(0.0, 0.0), converter=_to_range, validator=_check_range
    )
    rate_limit: float | None = attrs.field(default=None, validator=_check_positive_or_none)
    rate_limit_burst: int | None = attrs.field(default=None, validator=_check_positive_or_none)
    max_live_calls: int | None = attrs.field(default=None, validator=_check_positive_or_none)
    error_500_rate: float = attrs.field(default=0.0, validator=_check_rate)
    error_503_rate: float = attrs.field(default=0.0, validator=_check_rate)
    #: ``Retry-After`` (seconds) sent with random 503s; None sends none.
    error_503_retry_after: int | None = 1
    reset_before_create_rate: float = attrs.field(default=0.0, validator=_check_rate)
    reset_after_create_rate: float = attrs.field(default=0.0, validator=_check_rate)
    slow_rate: float = attrs.field(default=0.0, validator=_check_rate)
    #: Real seconds a "slow" answer is held back: longer than a client's read
    #: timeout, so the client gives up although the server processed the request.
    slow_delay: float = attrs.field(default=30.0, validator=attrs.validators.ge(0.0))
    endpoints: frozenset[str] = attrs.field(
        default=frozenset({"trigger", "status", "recordings"}),
        converter=_to_frozenset,
        validator=_check_endpoints,
    )

    def __attrs_post_init__(self) -> None:
        if self.total_random_rate > 1.0 + 1e-9:
            raise ValueError(f"the fault rates add up to {self.total_random_rate:.3f} > 1")

    @property
    def total_random_rate(self) -> float:
        """Probability that a request meets one of the random faults."""
        return (
            self.error_500_rate
            + self.error_503_rate
            + self.reset_before_create_rate
            + self.reset_after_create_rate
            + self.slow_rate
        )


@attrs.frozen
class SimulatorConfig:
    """Everything that defines a simulator's behaviour (not where it listens).

    ``api_key`` is the key printed and exposed as ``Simulator.api_key``;
    ``extra_api_keys`` are also accepted (each has its own rate-limit bucket).
    ``time_scale`` is simulated seconds per real second. ``seed`` makes the
    call ids, lifecycles and random faults reproducible (None: unseeded).

    ``record_triggers=False`` keeps only counters instead of a
    :class:`~voicehub_async.simulator.server.TriggerRecord` per trigger, for
    benchmarks sending millions of them.

    ``owned_numbers`` (when set) restricts the ``from`` field, as the real API
    only accepts numbers the account owns; ``known_agents`` likewise restricts
    ``agentId``. ``recordings_shape`` picks how the recordings endpoint answers
    (``{"recordings": [url]}``, ``[url]`` or ``"url"``), since the real shape is
    undocumented and clients must tolerate all three. ``recording_size`` is the
    size in bytes of the WAV file served for each recording.
    """

    api_key: str = attrs.field(default="sim-key", validator=attrs.validators.min_len(1))
    extra_api_keys: frozenset[str] = attrs.field(factory=frozenset, converter=_to_frozenset)
    time_scale: float = attrs.field(default=60.0, validator=attrs.validators.gt(0.0))
    lifecycle: LifecycleConfig = attrs.field(factory=LifecycleConfig)
    faults: FaultConfig = attrs.field(factory=FaultConfig)
    seed: int | None = 0
    record_triggers: bool = True
    recordings_shape: RecordingsShape = attrs.field(
        default="object", validator=attrs.validators.in_(("object", "list", "string"))
    )
    recording_size: int = attrs.field(default=16_044, validator=attrs.validators.ge(44))
    recording_files_require_key: bool = True
    owned_numbers: frozenset[str] | None = attrs.field(
        default=None, converter=_to_optional_frozenset
    )
    known_agents: frozenset[str] | None = attrs.field(
        default=None, converter=_to_optional_frozenset
    )

    # -- webhooks: pushed by voicehub_async.simulator.webhooks.SimulatorWebhooks --
    #: Where to POST webhook events for every call created (None: no webhooks).
    webhook_url: str | None = None
    #: Sent as ``x-webhook-secret``; required with ``webhook_url``.
    webhook_secret: str | None = attrs.field(default=None, repr=False)
    #: Probability that an event is delivered a second time (same ``eventId``).
    webhook_repeat_rate: float = attrs.field(default=0.0, validator=_check_rate)
    #: Probability that an event is delivered after the next one.
    webhook_reorder_rate: float = attrs.field(default=0.0, validator=_check_rate)

    @webhook_secret.validator
    def _check_webhooks(self, _attribute: attrs.Attribute[Any], value: str | None) -> None:
        url = self.webhook_url
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook_url must be an http(s) URL, got {url!r}")
        if url and not value:
            raise ValueError("webhook_url needs a webhook_secret (sent as x-webhook-secret)")

    @property
    def api_keys(self) -> frozenset[str]:
        """Every accepted API key."""
        return self.extra_api_keys | {self.api_key}
