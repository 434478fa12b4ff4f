"""Property-based tests for every input that comes from a file or the network.

Each asserts the promise, not just "no exception": the contacts reader gives
one outcome per row (and reads well-formed files back exactly), the webhook
receiver answers 4xx, never 5xx, to any body, ``prepare_request`` either
returns a valid request or names the field at fault, and error bodies always
give a bounded message with no key in it. Examples are bounded so that the
whole file runs in well under a minute.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import string
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from voicehub_async import CallRequest, VoiceHubClient
from voicehub_async._iso8601 import parse_iso_datetime
from voicehub_async.campaign import Campaign
from voicehub_async.campaign.contacts import (
    MAX_ROW_CHARS,
    ContactRow,
    ContactsError,
    read_contacts,
    row_request,
)
from voicehub_async.errors import (
    MESSAGE_LIMIT,
    REDACTED,
    APIStatusError,
    InvalidRequestError,
    error_message,
)
from voicehub_async.models import prepare_request
from voicehub_async.simulator import LifecycleConfig, Simulator, SimulatorConfig
from voicehub_async.webhooks import WebhookASGIApp, WebhookReceiver

#: Hypothesis writes files under a tmp_path it cannot get per example: one
#: directory per test, files overwritten in place.
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SECRET = "whsec_PROPERTY_0a1b2c3d"

# -- the contacts reader ----------------------------------------------------------------

cell_text = st.text(
    alphabet=st.one_of(
        st.sampled_from([*'",;|\t\n\r ', "\u00e9", "\u4e2d", "\U0001f600"]),
        st.characters(blacklist_categories=("Cs", "Cc")),
    ),
    max_size=12,
)
HEADER = ["to", "name", "notes"]


def numbers(n: int) -> list[str]:
    return [f"+1415555{i:04d}" for i in range(1, n + 1)]


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[str, list[list[str]], int | None]:
    """A well-formed CSV (any delimiter, line ending and quoting csv.writer
    produces), its rows, and which row (if any) holds an over-long cell."""
    rows = draw(st.lists(st.lists(cell_text, min_size=3, max_size=3), max_size=12))
    big = draw(st.none() | st.integers(0, max(0, len(rows) - 1))) if rows else None
    if big is not None:
        rows[big][2] = "y" * (MAX_ROW_CHARS + 10)
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    if ending == "\n":
        # csv.writer quotes only the characters of its own line ending: a
        # bare \r would be written unquoted, which no CSV reader reads back.
        rows = [[cell.replace("\r", "") for cell in row] for row in rows]
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=ending)
    writer.writerow(HEADER)
    writer.writerows(rows)
    return out.getvalue(), rows, big


@SETTINGS
@given(csv_files())
def test_a_well_formed_file_reads_back_exactly(
    tmp_path: Path, file: tuple[str, list[list[str]], int | None]
) -> None:
    text, rows, big = file
    source = tmp_path / "c.csv"
    source.write_bytes(text.encode())
    got = list(read_contacts(source))
    # One outcome per non-blank row, numbered in order; lines as a spreadsheet shows them.
    kept = [(i, row) for i, row in enumerate(rows) if any(cell.strip() for cell in row)]
    assert [c.row for c in got] == list(range(1, len(kept) + 1))
    assert [c.line for c in got] == [i + 2 for i, _ in kept]
    for contact, (i, row) in zip(got, kept, strict=True):
        if i == big:
            assert contact.problem is not None and "over the limit" in contact.problem
            assert contact.column == "notes"
            assert contact.problem.startswith(f"line {contact.line}: ")
        else:
            assert contact.problem is None
            assert contact.fields == dict(zip(HEADER, row, strict=True))


damage = st.lists(
    st.tuples(
        st.floats(0, 1),
        st.sampled_from([b'"', b"\xff", b"\xc3", b"\n", b"\r", b"\x00", b",", b'""', b"\xe9"]),
    ),
    min_size=1,
    max_size=6,
)


def damaged(text: bytes, where: list[tuple[float, bytes]], cut: float | None) -> bytes:
    data = bytearray(text)
    for position, junk in where:
        at = int(position * len(data))
        data[at:at] = junk
    if cut is not None:
        data = data[: int(cut * len(data))]
    return bytes(data)


def outcomes(rows: list[ContactRow]) -> list[str]:
    """What each row becomes for a campaign: a request, or a named refusal."""
    seen = []
    for contact in rows:
        try:
            row_request(contact, "agent-1")
        except InvalidRequestError as error:
            assert error.field and error.reason
            if contact.problem is not None:
                assert error.reason.startswith(f"line {contact.line}: ")
            seen.append("invalid")
        else:
            seen.append("request")
    return seen


@SETTINGS
@given(csv_files(), damage, st.none() | st.floats(0.2, 1))
def test_a_damaged_file_gives_one_outcome_per_row_and_never_raises_mid_file(
    tmp_path: Path,
    file: tuple[str, list[list[str]], int | None],
    where: list[tuple[float, bytes]],
    cut: float | None,
) -> None:
    source = tmp_path / "c.csv"
    source.write_bytes(damaged(file[0].encode(), where, cut))
    try:
        reader = read_contacts(source)
    except ContactsError:
        return  # the header itself was damaged: refused before any row, nothing sent
    rows = list(reader)  # never raises once rows are being read
    assert [c.row for c in rows] == list(range(1, len(rows) + 1))
    lines = [c.line for c in rows]
    assert lines == sorted(set(lines)) and all(line >= 2 for line in lines)
    for contact in rows:
        if contact.problem is None:
            for value in contact.fields.values():
                value.encode("utf-8")  # no undecodable byte reaches a request
    assert len(outcomes(rows)) == len(rows)


@SETTINGS
@given(
    st.lists(
        st.one_of(
            st.dictionaries(
                st.sampled_from(["to", "name", "context", "scheduled_at"]),
                st.one_of(st.text(max_size=8), st.integers(), st.none()),
            ),
            st.integers(),
            st.text(max_size=10),
        ).map(lambda value: json.dumps(value).encode()),
        max_size=8,
    ),
    damage,
)
def test_jsonl_gives_one_outcome_per_line(
    tmp_path: Path, lines: list[bytes], where: list[tuple[float, bytes]]
) -> None:
    source = tmp_path / "c.jsonl"
    source.write_bytes(damaged(b"\n".join(lines) + b"\n", where, None))
    rows = list(read_contacts(source))
    assert [c.row for c in rows] == list(range(1, len(rows) + 1))
    assert len(outcomes(rows)) == len(rows)


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(damage, st.integers(5, 30))
def test_a_campaign_records_exactly_one_result_per_row_read(
    tmp_path: Path, where: list[tuple[float, bytes]], count: int
) -> None:
    # The whole path, over real sockets: whatever the damage, every row read
    # has one results line, and only rows that made a request reached the service.
    text = "to,name\n" + "".join(f"{n},n{i}\n" for i, n in enumerate(numbers(count)))
    source = tmp_path / "c.csv"
    source.write_bytes(damaged(text.encode(), where, None))
    for stale in tmp_path.glob("c.results*"):
        stale.unlink()
    try:
        rows = list(read_contacts(source))
    except ContactsError:
        return
    requests = outcomes(rows).count("request")

    async def scenario() -> tuple[int, list[dict[str, str]], int]:
        fast = LifecycleConfig(queue_delay=(1.0, 2.0), ring_time=(1.0, 2.0), talk_time=(1.0, 2.0))
        async with Simulator(SimulatorConfig(time_scale=500, lifecycle=fast)) as sim:
            async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
                summary = await Campaign(client, source, agent_id="agent-1", poll=False).run()
            triggers = sim.trigger_count
        with (tmp_path / "c.results.csv").open(newline="") as stream:
            return summary.total, list(csv.DictReader(stream)), triggers

    total, results, triggers = asyncio.run(scenario())
    assert total == len(rows) == len(results)
    assert [int(r["row"]) for r in results] == list(range(1, len(rows) + 1))
    for contact, result in zip(rows, results, strict=True):
        if contact.problem is not None:
            assert result["status"] == "invalid" and f"line {contact.line}" in result["error"]
    assert triggers <= requests  # the rest were refused as invalid numbers before sending
    assert triggers == sum(1 for r in results if r["call_id"])


# -- the webhook receiver ---------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "eventType": st.sampled_from(
            ["CallStatusChanged", "RecordingsAvailable", "AnalysisResultReady", "Other", ""]
        )
        | json_values,
        "callId": st.text(max_size=8) | json_values,
        "eventId": st.text(max_size=8) | json_values,
        "timestamp": st.sampled_from(["2030-01-01T00:00:00Z", "2030-13-01", "yesterday"])
        | json_values,
        "status": st.sampled_from(["completed", "STARTED", "weird"]) | json_values,
        "recordings": json_values,
        "analysisResultUrl": st.text(max_size=10) | json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    event_like.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 30_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 20_000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.integers(4_000, 6_000).map(lambda digits: b'{"callId": ' + b"9" * digits + b"}"),
)


async def through_asgi(app: WebhookASGIApp, body: bytes, secret: str) -> int:
    sent: list[Any] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    headers = [(b"x-webhook-secret", secret.encode()), (b"content-length", b"%d" % len(body))]
    await app({"type": "http", "method": "POST", "headers": headers}, receive, send)
    return int(sent[0]["status"])


@settings(max_examples=150, deadline=None)
@given(bodies)
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
def test_the_receiver_answers_any_body_with_4xx_or_200_never_5xx(body: bytes) -> None:
    async def scenario() -> None:
        receiver = WebhookReceiver(SECRET)
        result = await receiver.receive(body, {"x-webhook-secret": SECRET})
        if result.status == 200:
            assert result.event is not None and result.outcome in ("accepted", "duplicate")
            assert result.event.call_id
        else:
            assert result.status == 400 and result.outcome == "refused" and result.reason
            assert result.event is None
        json.loads(result.body())  # the answer itself is always JSON
        app = WebhookASGIApp(WebhookReceiver(SECRET), max_body=100_000)
        assert await through_asgi(app, body, SECRET) in (200, 400, 413)
        # Without the secret, nothing of the body is even read (its size is
        # checked first: too large is refused before anything else).
        wrong = await through_asgi(app, body, "whsec_WRONG_000")
        assert wrong == (413 if len(body) > app.max_body else 401)

    asyncio.run(scenario())


# -- CallRequest validation -------------------------------------------------------------

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
FIELDS = {"to", "agent_id", "context", "scheduled_at", "from_number"}
phone_like = st.one_of(
    st.sampled_from(["+14155550123", "+442071838750", "(415) 555-0123", "+1 415 555 0123x", "+"]),
    st.text(alphabet="+0123456789 ()-.x", max_size=16),
    st.text(max_size=8),
    st.integers(),
    st.none(),
)
contexts = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    st.dictionaries(st.text(max_size=5), st.sampled_from([float("nan"), {1, 2}, b"x"]), min_size=1),
    json_values,
    st.integers(500, 3000).map(lambda depth: nested(depth)),
)
whens = st.one_of(
    st.none(),
    st.datetimes(timezones=st.just(timezone.utc)),
    st.datetimes(),
    st.text(max_size=10),
    st.timedeltas(min_value=timedelta(minutes=-5), max_value=timedelta(days=3)).map(
        lambda delta: NOW + delta
    ),
)


def nested(depth: int) -> dict[str, Any]:
    inner: dict[str, Any] = {}
    for _ in range(depth):
        inner = {"a": inner}
    return inner


@settings(max_examples=200, deadline=None)
@given(phone_like, st.one_of(st.text(max_size=6), st.none(), st.integers()), contexts, whens,
       st.one_of(st.none(), phone_like))  # fmt: skip
def test_prepare_request_returns_a_valid_request_or_names_the_field(
    to: Any, agent: Any, context: Any, when: Any, from_number: Any
) -> None:
    request = CallRequest(
        to=to, agent_id=agent, context=context, scheduled_at=when, from_number=from_number
    )
    try:
        prepared = prepare_request(request, default_region="US", now=NOW)
    except InvalidRequestError as error:
        assert error.field in FIELDS
        assert str(error).startswith(f"invalid {error.field} ") and error.reason
        return
    # Valid: numbers in E.164, the time aware and ahead, and preparing again changes nothing.
    assert prepared.to.startswith("+") and prepared.to[1:].isdigit()
    assert isinstance(prepared.agent_id, str) and prepared.agent_id.strip()
    if prepared.scheduled_at is not None:
        assert prepared.scheduled_at.utcoffset() is not None and prepared.scheduled_at > NOW
    assert prepare_request(prepared, default_region="US", now=NOW) == prepared


@SETTINGS
@given(st.text(max_size=30))
def test_iso_parsing_is_one_rule_for_every_input(text: str) -> None:
    # Whatever the text: a datetime (aware iff a zone was written) or a ValueError.
    try:
        when = parse_iso_datetime(text)
    except ValueError as error:
        assert str(error)
        return
    written_zone = text.strip()[-1:] in ("Z", "z") or "+" in text or text.count("-") > 2
    assert (when.tzinfo is not None) == written_zone


# -- error bodies -----------------------------------------------------------------------

key_text = st.text(alphabet=string.ascii_letters + string.digits + "_", min_size=12, max_size=30)


@settings(max_examples=150, deadline=None)
@given(bodies, st.none() | st.text(max_size=20))
def test_error_message_is_always_a_bounded_message(body: bytes, reason: str | None) -> None:
    message = error_message(body, reason)
    assert isinstance(message, str) and message and len(message) <= MESSAGE_LIMIT
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return
    if isinstance(data, dict) and isinstance(data.get("message"), str) and data["message"]:
        assert message == data["message"][:MESSAGE_LIMIT] or message.endswith("...")


@settings(max_examples=100, deadline=None)
@given(key_text, st.text(max_size=40), st.text(max_size=40), st.integers(0, 3000))
def test_an_error_keeps_no_trace_of_the_key(key: str, before: str, after: str, pad: int) -> None:
    assume(key not in before + after)
    echoed = before + key + after
    body = "p" * pad + echoed
    error = APIStatusError(
        401,
        error_message(json.dumps({"message": echoed}).encode(), None),
        body,
        {"WWW-Authenticate": f'key="{key}"', f"X-{key}": echoed},
        secret=key,
    )
    for text in (str(error), repr(error), error.message, error.body, repr(error.headers)):
        assert key not in text
    assert REDACTED in error.body or len(body) - len(after) > 2000
