"""The pieces of ``voicehub demo``: a realistic simulated service and contacts.

The demo must show a campaign as it behaves against the real service, on any
machine, with no account and in under a minute. So the simulator gets a
realistic mix (network latency, 2% of 503s, a rate limit answering 429, the
usual outcomes: about 70% completed, 15% unanswered, 10% busy, 5% failed) and
a fast clock (``time_scale``): a three-minute conversation lasts three
seconds. Contacts are synthetic but valid numbers of several countries,
generated from libphonenumber's own example numbers, plus a few calls
scheduled a minute or two ahead, one number written twice (the second row is
a ``duplicate``, never dialed) and a do-not-call list of two of the numbers
(``suppressed``). Busy and unanswered contacts are redialed once, a few
seconds later (:data:`DEMO_REDIAL`).
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Final

import phonenumbers

if TYPE_CHECKING:
    from voicehub_async.simulator import SimulatorConfig

if TYPE_CHECKING:
    from .redial import RedialPolicy

__all__ = [
    "DEMO_AGENT",
    "demo_numbers",
    "demo_redial",
    "demo_simulator_config",
    "write_demo_contacts",
    "write_demo_suppression",
]

DEMO_AGENT: Final = "agent-demo"
#: Rows of the contacts whose numbers go on the demo's do-not-call list.
_SUPPRESSED_ROWS: Final = (3, 5)
#: Countries the synthetic contacts come from, most of them from the first.
_REGIONS: Final = ("US", "US", "US", "GB", "CA", "DE", "FR", "AU", "BR", "IN")
_NAMES: Final = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus")
#: Share of contacts scheduled a minute or two ahead.
_SCHEDULED_SHARE: Final = 0.02


def demo_simulator_config(seed: int = 7, time_scale: float = 60.0) -> SimulatorConfig:
    """A simulated VoiceHub with a realistic mix of latency, errors and outcomes."""
    from voicehub_async.simulator import FaultConfig, LifecycleConfig, SimulatorConfig

    return SimulatorConfig(
        api_key="demo-key",
        time_scale=time_scale,
        seed=seed,
        lifecycle=LifecycleConfig(
            queue_delay=(1.0, 6.0),
            ring_time=(3.0, 20.0),
            talk_time=(20.0, 150.0),
            outcomes={"completed": 0.70, "unanswered": 0.15, "busy": 0.10, "failed": 0.05},
        ),
        faults=FaultConfig(
            latency=(0.005, 0.040),
            error_503_rate=0.02,
            rate_limit=600.0,
            rate_limit_burst=150,
        ),
    )


def demo_redial() -> RedialPolicy:
    """Busy and unanswered contacts dialed once more, 5 s (5 simulated
    minutes) after their call ended."""
    from .redial import RedialPolicy

    return RedialPolicy({"busy", "unanswered"}, after=5.0, max_attempts=2)


def demo_numbers(count: int, seed: int = 7) -> Iterator[str]:
    """``count`` distinct numbers (E.164), valid per libphonenumber, of several
    countries: each country's example mobile number with its last digits
    drawn at random, kept only when still valid."""
    rng = random.Random(seed)
    seen: set[str] = set()
    templates = {}
    for region in set(_REGIONS):
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        if example is not None:
            templates[region] = example
    regions = [r for r in _REGIONS if r in templates]
    made = 0
    while made < count:
        example = templates[rng.choice(regions)]
        national = str(example.national_number)
        tail = min(4, len(national) - 3)
        candidate = national[:-tail] + f"{rng.randrange(10**tail):0{tail}d}"
        number = phonenumbers.PhoneNumber(
            country_code=example.country_code, national_number=int(candidate)
        )
        if not phonenumbers.is_valid_number(number):
            continue
        text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        if text in seen:
            continue
        seen.add(text)
        made += 1
        yield text


def write_demo_contacts(
    path: str | Path, count: int, *, seed: int = 7, now: datetime | None = None
) -> Path:
    """Write ``count`` synthetic contacts to ``path`` (CSV); returns the path.

    Columns: ``to``, ``scheduled_at`` (set for about 2%, one to two minutes
    after ``now``), and ``name``/``order_id``, which go into each call's context.
    From 10 rows on, the last row repeats the first row's number (written
    the national way: the campaign compares numbers in E.164).
    """
    path = Path(path)
    rng = random.Random(seed + 1)
    start = (now or datetime.now(timezone.utc)).replace(second=0, microsecond=0)
    numbers = list(demo_numbers(count - 1 if count >= 10 else count, seed))
    if count >= 10:
        first = phonenumbers.parse(numbers[0], None)
        numbers.append(
            phonenumbers.format_number(first, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        )
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["to", "scheduled_at", "name", "order_id"])
        for i, number in enumerate(numbers):
            when = ""
            if rng.random() < _SCHEDULED_SHARE:
                when = (start + timedelta(minutes=rng.choice((2, 3)))).strftime("%Y-%m-%dT%H:%MZ")
            writer.writerow([number, when, rng.choice(_NAMES), f"ORD-{10_000 + i}"])
    return path


def write_demo_suppression(path: str | Path, contacts: str | Path) -> Path:
    """A do-not-call list (one number a line) of two numbers of ``contacts``."""
    path = Path(path)
    with Path(contacts).open(encoding="utf-8", newline="") as stream:
        rows = list(csv.reader(stream))[1:]
    chosen = [rows[i - 1][0] for i in _SUPPRESSED_ROWS if i <= len(rows)]
    path.write_text("# asked not to be called\n" + "".join(f"{n}\n" for n in chosen))
    return path
