"""The PostgreSQL campaign store: one database, many workers, nobody phoned twice.

What lives here is SQL and the transactions around it; the worker loop is in
:mod:`.worker` and the pacing of shared limits in :mod:`.limits`.

* **Schema and migrations.** :data:`MIGRATIONS` is the list of versioned
  steps. :meth:`PostgresStore.open` applies the missing ones in ONE
  transaction that first takes a transaction-level advisory lock named after
  the schema: two workers starting at once are serialised, the second finds
  the work done. A schema written by a newer version is refused.
* **Load.** :meth:`PostgresStore.load` streams the contacts file into
  ``contacts`` with ``COPY`` (asyncpg's binary copy from an async iterable fed
  in chunks by a thread: flat memory for a million rows), validating every
  row on the way (``invalid`` rows are recorded with their reason). Numbers
  are stored in E.164; a later row with a number already in the campaign
  becomes ``duplicate``, naming the first row, in one set-based ``UPDATE``.
  A campaign is keyed by its name: loading the same file (same SHA-256) again
  is a no-op, another file under the same name is refused. The whole load is
  one transaction, so an interrupted load leaves nothing behind.
* **Claims.** :meth:`PostgresStore.claim` takes up to N due ``pending`` rows
  with ``FOR UPDATE SKIP LOCKED`` and marks them ``sending`` for this worker
  in the same statement: the claim IS the committed ``sending`` mark, made
  before any trigger goes out, so two workers can never both hold a row and
  a row whose trigger may have left is always ``sending`` or later.
* **Workers.** Each worker has a ``workers`` row and heartbeats (every lease
  renewal, about once a second, by the database's clock). A worker silent
  for longer than ``worker_timeout`` is marked dead by whichever worker
  renews next; from then on (and at every renewal after, so a claim that
  raced the verdict is caught too) its ``sending`` rows become ``ambiguous``
  (never dialed again automatically) and its placed calls are adopted
  (:meth:`PostgresStore.adopt`) and followed to their end by survivors. A
  worker declared dead cannot claim any more (the claim checks it).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

from voicehub_async.errors import InvalidRequestError
from voicehub_async.models import TERMINAL_STATUSES, CallRequest, prepare_request

from ..contacts import ContactRow, ContactsFormat, detect_format, fingerprint_file, read_contacts
from ..contacts import row_request as contact_request
from ..journal import AttemptRow, JournalError, JournalOp, JournalRow
from . import is_postgres_url

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "DEFAULT_SCHEMA",
    "LIVE_STATES",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "CampaignExistsError",
    "CampaignInfo",
    "Claim",
    "Lease",
    "LoadResult",
    "PlacedCall",
    "PostgresStore",
    "WorkerInfo",
    "is_postgres_url",
]

#: Where the tables go unless the URL says ``?schema=NAME``.
DEFAULT_SCHEMA: Final = "voicehub"

#: States in which a row holds a live-call slot (``ambiguous`` too, for
#: ``max_call_time`` after its sending mark: its call may be live).
LIVE_STATES: Final = ("sending", "queued", "started", "in-progress", "reconciled")
#: States of a placed call still to be followed.
PLACED_STATES: Final = ("queued", "scheduled", "started", "in-progress", "reconciled")

#: The versioned schema steps: (version, SQL). Append, never edit.
MIGRATIONS: Final[tuple[tuple[int, str], ...]] = (
    (
        1,
        """
CREATE TABLE campaigns (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    source_name text NOT NULL,
    source_sha256 text NOT NULL,
    source_size bigint NOT NULL,
    agent_id text NOT NULL DEFAULT '',
    total integer NOT NULL DEFAULT 0,
    rate_limit double precision,            -- calls per second, all workers together
    max_live integer,                       -- live calls at once, all workers together
    max_call_time double precision NOT NULL DEFAULT 3600,
    rate_factor double precision NOT NULL DEFAULT 1,   -- < 1 after a 429, grows back
    rate_changed_at timestamptz NOT NULL DEFAULT now(),
    paused_until timestamptz NOT NULL DEFAULT 'epoch',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE contacts (
    campaign_id bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    row_no integer NOT NULL,                -- contact number in the file, from 1
    input_hash text NOT NULL,
    number text,                            -- E.164 once valid; as written when invalid
    request jsonb,                          -- the trigger to send (valid rows)
    state text NOT NULL,
    worker_id uuid,                         -- the worker that claimed or follows it
    call_id text,
    status text,
    attempts integer NOT NULL DEFAULT 0,    -- trigger requests for this row
    error text,
    recording_url text,
    scheduled_at text,
    due_at double precision NOT NULL DEFAULT 0,
    sent_at double precision,
    queued_at double precision,
    started_at double precision,
    finished_at double precision,
    updated_at double precision NOT NULL,
    PRIMARY KEY (campaign_id, row_no)
);
CREATE INDEX contacts_due ON contacts (campaign_id, due_at, row_no) WHERE state = 'pending';
CREATE INDEX contacts_held ON contacts (campaign_id, worker_id)
    WHERE state IN ('sending', 'queued', 'scheduled', 'started', 'in-progress', 'ambiguous',
                    'reconciled');
CREATE INDEX contacts_call ON contacts (call_id) WHERE call_id IS NOT NULL;
CREATE TABLE workers (
    id uuid PRIMARY KEY,
    campaign_id bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    name text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    dead boolean NOT NULL DEFAULT false,
    live_spare integer NOT NULL DEFAULT 0,  -- slots granted beyond its live rows
    rate_share double precision NOT NULL DEFAULT 0
);
CREATE INDEX workers_campaign ON workers (campaign_id) WHERE NOT dead;
""",
    ),
    (
        2,
        """
ALTER TABLE contacts ADD COLUMN dials integer NOT NULL DEFAULT 0;
ALTER TABLE contacts ADD COLUMN duplicate_of integer;
ALTER TABLE contacts ADD COLUMN redial_at double precision;
ALTER TABLE contacts ADD COLUMN note text;
UPDATE contacts SET dials = 1
    WHERE call_id IS NOT NULL OR state IN ('sending', 'ambiguous', 'not_sent');
UPDATE contacts c SET duplicate_of = substring(error FROM 'row ([0-9]+)$')::integer
    WHERE state = 'duplicate';
CREATE TABLE attempts (
    campaign_id bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    row_no integer NOT NULL,
    attempt integer NOT NULL,               -- 1 for a contact's first dial
    state text NOT NULL,
    call_id text,
    status text,
    requests integer NOT NULL DEFAULT 0,    -- trigger requests (retries included)
    error text,
    scheduled_at text,
    sent_at double precision,
    queued_at double precision,
    started_at double precision,
    finished_at double precision,
    updated_at double precision NOT NULL,
    PRIMARY KEY (campaign_id, row_no, attempt)
);
INSERT INTO attempts (campaign_id, row_no, attempt, state, call_id, status, requests, error,
                      scheduled_at, sent_at, queued_at, started_at, finished_at, updated_at)
    SELECT campaign_id, row_no, 1, state, call_id, status, attempts, error, scheduled_at,
           sent_at, queued_at, started_at, finished_at, updated_at
    FROM contacts WHERE dials = 1;
CREATE TABLE campaign_meta (
    campaign_id bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    key text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (campaign_id, key)
);
INSERT INTO campaign_meta (campaign_id, key, value)
    SELECT id, 'source_sha256', source_sha256 FROM campaigns WHERE source_sha256 <> ''
    UNION ALL SELECT id, 'agent_id', agent_id FROM campaigns WHERE source_sha256 <> ''
    UNION ALL SELECT id, 'source_name', source_name FROM campaigns WHERE source_sha256 <> '';
""",
    ),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]

_LOAD_CHUNK: Final = 2000
_COPY_COLUMNS: Final = (
    "campaign_id",
    "row_no",
    "input_hash",
    "number",
    "request",
    "state",
    "error",
    "finished_at",
    "updated_at",
)
_ROW_COLUMNS: Final = (
    "row_no, input_hash, number, state, call_id, status, attempts, error, recording_url, "
    "scheduled_at, dials, duplicate_of, redial_at, note"
)
_ATTEMPT_COLUMNS: Final = (
    "a.row_no, a.attempt, c.number, a.state, a.call_id, a.status, a.requests, a.error, "
    "a.scheduled_at, a.sent_at, a.queued_at, a.started_at, a.finished_at"
)
_PARAM: Final = re.compile(r"\?")
_INSERT: Final = re.compile(r"\s*INSERT INTO (\w+) \(")


@functools.lru_cache(maxsize=256)
def translate(sql: str) -> str:
    """A journal statement written for SQLite (``?`` parameters, tables ``rows``
    and ``attempts`` keyed by ``row``), as PostgreSQL runs it for one campaign:
    ``$n`` parameters, ``contacts`` keyed by ``(campaign_id, row_no)``, and the
    campaign id as one more parameter after the statement's own.

    Only the statement shapes the journal uses are accepted (an INSERT with
    ``VALUES`` and ``ON CONFLICT``, an UPDATE or DELETE with one ``WHERE``);
    anything else raises, so a new kind of write cannot run unscoped.
    """
    count = 0

    def number(_match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    out = _PARAM.sub(number, sql)
    campaign = f"${count + 1}"
    # A bare parameter tested for NULL has no type PostgreSQL can infer; the
    # journal only tests text values (notes, errors) that way.
    out = re.sub(r"(\$\d+) IS (NOT )?NULL", r"\1::text IS \2NULL", out)
    out = re.sub(r"\brows\b", "contacts", out)
    out = re.sub(r"\brow\b", "row_no", out)
    insert = _INSERT.match(out)
    if insert is not None and " SELECT " not in out:
        out = out.replace(insert.group(0), f"{insert.group(0)}campaign_id, ", 1)
        out = out.replace("VALUES (", f"VALUES ({campaign}, ", 1)
        # In DO UPDATE a bare column is ambiguous for PostgreSQL (the row or
        # ``excluded``?); SQLite means the row.
        table = insert.group(1)
        out = re.sub(r"COALESCE\(excluded\.(\w+), \1\)", rf"COALESCE(excluded.\1, {table}.\1)", out)
        return re.sub(r"ON CONFLICT\s*\(", "ON CONFLICT (campaign_id, ", out)
    scoped = out.count(" WHERE ") == 1 and "(SELECT" not in out
    if re.match(r"\s*(UPDATE|DELETE)\b", out) and scoped:
        return out.replace(" WHERE ", f" WHERE campaign_id = {campaign} AND ", 1)
    raise ValueError(f"no PostgreSQL form for the journal statement {sql!r}")


_CLAIM: Final = """
WITH due AS (
    SELECT row_no FROM contacts
    WHERE campaign_id = $1
      AND ((state = 'pending' AND due_at <= $3) OR (state = 'redial' AND redial_at <= $3))
      AND EXISTS (SELECT 1 FROM workers WHERE id = $2 AND NOT dead)
    ORDER BY due_at, row_no
    LIMIT $4
    FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE contacts c
    SET state = 'sending', worker_id = $2, dials = c.dials + 1, sent_at = $3, updated_at = $3,
        error = NULL, call_id = NULL, status = NULL, scheduled_at = NULL, queued_at = NULL,
        started_at = NULL, finished_at = NULL, redial_at = NULL
    FROM due
    WHERE c.campaign_id = $1 AND c.row_no = due.row_no
    RETURNING c.row_no, c.input_hash, c.request, c.dials
), attempt AS (
    INSERT INTO attempts (campaign_id, row_no, attempt, state, sent_at, updated_at)
    SELECT $1, row_no, dials, 'sending', $3, $3 FROM marked
    ON CONFLICT (campaign_id, row_no, attempt) DO UPDATE SET state = 'sending',
        call_id = NULL, status = NULL, error = NULL, sent_at = excluded.sent_at,
        updated_at = excluded.updated_at
)
SELECT row_no, input_hash, request, dials FROM marked
"""

_AMBIGUOUS_DEAD: Final = (
    "the worker that was sending this row's trigger stopped answering: the call may have "
    "been placed; check VoiceHub before dialing it again"
)


class CampaignExistsError(JournalError):
    """A campaign of that name was loaded from another file."""


def _split_url(url: str) -> tuple[str, str]:
    """(the URL asyncpg is given, the schema): ``?schema=NAME`` is ours, not a
    server setting."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = DEFAULT_SCHEMA
    rest = []
    for key, value in query:
        if key == "schema":
            schema = value
        else:
            rest.append((key, value))
    if not schema.replace("_", "").isalnum() or schema[0].isdigit():
        raise JournalError(f"the schema name {schema!r} must be letters, digits and _")
    return urlunsplit(parts._replace(query=urlencode(rest))), schema


def describe_url(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    user = parts.username or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


@attrs.frozen(slots=True)
class CampaignInfo:
    """A campaign as the store knows it."""

    id: int
    name: str
    source_name: str
    source_sha256: str
    agent_id: str
    total: int
    rate_limit: float | None
    max_live: int | None
    max_call_time: float


@attrs.frozen(slots=True)
class LoadResult:
    """What :meth:`PostgresStore.load` did: ``loaded`` False means the same file
    was already loaded under that name (nothing changed)."""

    campaign: CampaignInfo
    loaded: bool
    counts: dict[str, int]


@attrs.frozen(slots=True)
class Claim:
    """A row this worker now holds ``sending`` (committed), with its request."""

    row: int
    digest: str
    request: CallRequest
    attempt: int = 1


@attrs.frozen(slots=True)
class PlacedCall:
    """A call placed by a worker that died, now followed by this one."""

    row: int
    call_id: str
    state: str
    attempt: int = 1


@attrs.frozen(slots=True)
class Lease:
    """What one renewal gave a worker (see :mod:`.limits`).

    ``rate``: its share of the campaign's calls per second (None: no limit);
    ``spare``: live-call slots it may take before the next renewal (None: no
    cap); ``paused_for``: seconds nobody may trigger (a 429 seen by anyone);
    ``dead``: this worker was declared dead and must stop.
    """

    rate: float | None
    spare: int | None
    paused_for: float
    workers: int
    dead: bool = False


@attrs.frozen(slots=True)
class WorkerInfo:
    """A worker as ``voicehub campaign status`` shows it."""

    id: str
    name: str
    alive: bool
    heartbeat_age: float
    held: int


def _request_json(request: CallRequest) -> str:
    when = request.scheduled_at
    return json.dumps(
        {
            "to": request.to,
            "agent_id": request.agent_id,
            "context": None if request.context is None else dict(request.context),
            "scheduled_at": None if when is None else when.isoformat(),
            "from_number": request.from_number,
        },
        separators=(",", ":"),
    )


def _request_from_json(text: str) -> CallRequest:
    data = json.loads(text)
    when = data.get("scheduled_at")
    return CallRequest(
        to=data["to"],
        agent_id=data["agent_id"],
        context=data.get("context"),
        scheduled_at=None if when is None else datetime.fromisoformat(when),
        from_number=data.get("from_number"),
    )


def _invalid_reason(error: InvalidRequestError) -> str:
    return f"{error.field}: {error.reason}"


def _contact_record(
    campaign: int,
    contact: ContactRow,
    agent_id: str | None,
    region: str | None,
    now_dt: datetime,
    now: float,
) -> tuple[Any, ...]:
    """One ``contacts`` row for COPY: a pending row with its request, or an
    invalid one with its reason."""
    try:
        request = prepare_request(
            contact_request(contact, agent_id), default_region=region, now=now_dt
        )
    except InvalidRequestError as error:
        raw = contact.fields.get("to")
        number = None if raw is None else str(raw)
        return (
            campaign,
            contact.row,
            contact.digest,
            number,
            None,
            "invalid",
            _invalid_reason(error),
            now,
            now,
        )
    return (
        campaign,
        contact.row,
        contact.digest,
        request.to,
        _request_json(request),
        "pending",
        None,
        None,
        now,
    )


def _chunk(rows: Iterator[ContactRow], make: Any, size: int) -> list[tuple[Any, ...]]:
    return [make(contact) for contact in islice(rows, size)]


class PostgresStore:
    """A pool of connections to one schema of one database. Use :meth:`open`.

    One store serves every campaign in its schema; methods take the
    campaign's id (from :meth:`load` or :meth:`campaign`).
    """

    def __init__(self, pool: asyncpg.Pool, schema: str, url: str) -> None:
        self._pool = pool
        self.schema = schema
        self.url = url

    @classmethod
    async def open(cls, url: str, *, min_size: int = 1, max_size: int = 4) -> PostgresStore:
        """Connect to ``url`` and bring its schema up to date (see the module doc)."""
        try:
            import asyncpg
        except ImportError:  # pragma: no cover - depends on the installation
            raise JournalError(
                "a postgresql:// journal needs the PostgreSQL driver: "
                "pip install 'voicehub-async[postgres]'"
            ) from None
        dsn, schema = _split_url(url)
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                server_settings={"search_path": schema, "application_name": "voicehub-async"},
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise JournalError(f"cannot connect to {describe_url(url)}: {exc}") from None
        store = cls(pool, schema, url)
        try:
            await store._migrate()
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _migrate(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            # Serialises concurrent starts: the second one waits here, then
            # finds the schema at the current version and does nothing.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"voicehub-async {self.schema}"
            )
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS voicehub_meta "
                "(key text PRIMARY KEY, value text NOT NULL)"
            )
            found = await conn.fetchval(
                "SELECT value FROM voicehub_meta WHERE key = 'schema_version'"
            )
            version = int(found) if found is not None else 0
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"the schema {self.schema!r} of {describe_url(self.url)} has version "
                    f"{version}; this version of voicehub-async reads up to {SCHEMA_VERSION}: "
                    "upgrade voicehub-async"
                )
            for step, sql in MIGRATIONS:
                if step > version:
                    await conn.execute(sql)
            await conn.execute(
                "INSERT INTO voicehub_meta (key, value) VALUES ('schema_version', $1) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                str(SCHEMA_VERSION),
            )

    async def schema_version(self) -> int:
        value = await self._pool.fetchval(
            "SELECT value FROM voicehub_meta WHERE key = 'schema_version'"
        )
        return int(value)

    # -- campaigns ---------------------------------------------------------------------

    async def campaign(self, name: str) -> CampaignInfo:
        """The campaign called ``name``; :class:`JournalError` if none was loaded."""
        row = await self._pool.fetchrow(
            "SELECT id, name, source_name, source_sha256, agent_id, total, rate_limit, "
            "max_live, max_call_time FROM campaigns WHERE name = $1",
            name,
        )
        if row is None:
            raise JournalError(
                f"no campaign {name!r} in {describe_url(self.url)}: load it first with "
                f"voicehub campaign load CONTACTS --journal URL --campaign {name}"
            )
        return CampaignInfo(*row.values())

    async def set_limits(
        self,
        campaign: int,
        *,
        rate_limit: float | None = None,
        max_live: int | None = None,
        max_call_time: float | None = None,
    ) -> None:
        """Set the campaign's shared limits (those given; the others stay)."""
        await self._pool.execute(
            "UPDATE campaigns SET rate_limit = COALESCE($2, rate_limit), "
            "max_live = COALESCE($3, max_live), "
            "max_call_time = COALESCE($4, max_call_time) WHERE id = $1",
            campaign,
            rate_limit,
            max_live,
            max_call_time,
        )

    async def load(
        self,
        name: str,
        path: str | Path,
        *,
        agent_id: str | None = None,
        format: ContactsFormat | None = None,
        default_region: str | None = None,
        now: datetime | None = None,
    ) -> LoadResult:
        """Stream the contacts file at ``path`` into campaign ``name`` (see the module doc).

        Raises :class:`~..contacts.ContactsError` for an unusable file and
        :class:`CampaignExistsError` when ``name`` holds another file.
        """
        path = Path(path)
        fingerprint = await asyncio.to_thread(fingerprint_file, path)
        kind = format or detect_format(path)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"campaign {name}")
            existing = await conn.fetchrow(
                "SELECT id, source_sha256, source_name FROM campaigns WHERE name = $1", name
            )
            if existing is not None:
                if existing["source_sha256"] != fingerprint.sha256:
                    raise CampaignExistsError(
                        f"the campaign {name!r} was loaded from another file "
                        f"({existing['source_name']}); give this one another --campaign name"
                    )
                info = await self.campaign(name)
                return LoadResult(info, False, await self.counts(info.id))
            campaign = await conn.fetchval(
                "INSERT INTO campaigns (name, source_name, source_sha256, source_size, agent_id) "
                "VALUES ($1, $2, $3, $4, $5) RETURNING id",
                name,
                path.name,
                fingerprint.sha256,
                fingerprint.size,
                agent_id or "",
            )
            stamp = now or datetime.now(timezone.utc)
            seconds = stamp.timestamp()

            def make(contact: ContactRow) -> tuple[Any, ...]:
                return _contact_record(campaign, contact, agent_id, default_region, stamp, seconds)

            rows = read_contacts(path, kind)
            try:
                await conn.copy_records_to_table(
                    "contacts",
                    records=_records(rows, make),
                    columns=_COPY_COLUMNS,
                    schema_name=self.schema,
                )
            finally:
                close = getattr(rows, "close", None)
                if close is not None:
                    close()
            # A number already in the campaign: the later rows are duplicates
            # of the first, never dialed (one dial per person).
            await conn.execute(
                """
                UPDATE contacts c
                SET state = 'duplicate', finished_at = $2, duplicate_of = d.first_row,
                    note = 'same number as row ' || d.first_row || ': dialed once per campaign'
                FROM (
                    SELECT row_no, min(row_no) OVER (PARTITION BY number) AS first_row
                    FROM contacts WHERE campaign_id = $1 AND state = 'pending'
                ) d
                WHERE c.campaign_id = $1 AND c.row_no = d.row_no AND d.row_no <> d.first_row
                """,
                campaign,
                seconds,
            )
            total = await conn.fetchval(
                "SELECT count(*) FROM contacts WHERE campaign_id = $1", campaign
            )
            await conn.execute("UPDATE campaigns SET total = $2 WHERE id = $1", campaign, total)
            # The identity a one-process run binds to (JournalStore.bind), so that
            # `voicehub campaign CONTACTS --journal URL` resumes a loaded campaign.
            await conn.executemany(
                "INSERT INTO campaign_meta (campaign_id, key, value) VALUES ($1, $2, $3)",
                [
                    (campaign, key, value)
                    for key, value in {
                        "source_sha256": fingerprint.sha256,
                        "agent_id": agent_id or "",
                        "source_name": path.name,
                        "source_size": str(fingerprint.size),
                        "source_rows": str(fingerprint.approx_rows),
                        "created_at": f"{seconds:.3f}",
                    }.items()
                ],
            )
        info = await self.campaign(name)
        return LoadResult(info, True, await self.counts(info.id))

    async def ensure_campaign(self, name: str) -> int:
        """The id of campaign ``name``, made empty if new (the one-process
        journal: its rows arrive as the file is read, its identity with
        ``bind``)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"campaign {name}")
            found = await conn.fetchval("SELECT id FROM campaigns WHERE name = $1", name)
            if found is not None:
                return int(found)
            return int(
                await conn.fetchval(
                    "INSERT INTO campaigns (name, source_name, source_sha256, source_size) "
                    "VALUES ($1, '', '', 0) RETURNING id",
                    name,
                )
            )

    async def meta(self, campaign: int) -> dict[str, str]:
        records = await self._pool.fetch(
            "SELECT key, value FROM campaign_meta WHERE campaign_id = $1", campaign
        )
        return {r[0]: r[1] for r in records}

    async def set_meta(self, campaign: int, values: dict[str, str]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO campaign_meta (campaign_id, key, value) VALUES ($1, $2, $3) "
                "ON CONFLICT (campaign_id, key) DO UPDATE SET value = excluded.value",
                [(campaign, key, value) for key, value in values.items()],
            )
            if "source_sha256" in values:
                await conn.execute(
                    "UPDATE campaigns SET source_sha256 = $2, "
                    "source_name = COALESCE($3, source_name), agent_id = COALESCE($4, agent_id) "
                    "WHERE id = $1",
                    campaign,
                    values["source_sha256"],
                    values.get("source_name"),
                    values.get("agent_id"),
                )

    async def apply_ops(self, campaign: int, ops: Sequence[JournalOp]) -> None:
        """The journal's typed writes, as one transaction (see :func:`translate`):
        statements grouped by SQL, each group one ``executemany``, in ``phase``
        order, as the SQLite journal applies them."""
        groups: dict[str, tuple[int, list[tuple[Any, ...]]]] = {}
        for op in ops:
            phase = op.phase
            for sql, params in op.statements():
                group = groups.get(sql)
                if group is None:
                    groups[sql] = group = (phase, [])
                group[1].append((*params, campaign))
        async with self._pool.acquire() as conn, conn.transaction():
            for sql, (_, batch) in sorted(groups.items(), key=lambda item: item[1][0]):
                await conn.executemany(translate(sql), batch)

    # -- workers, claims and leases ----------------------------------------------------------

    async def register_worker(self, campaign: int, name: str) -> str:
        """A new worker id (a restarted process is a new worker)."""
        worker = str(uuid.uuid4())
        await self._pool.execute(
            "INSERT INTO workers (id, campaign_id, name) VALUES ($1, $2, $3)",
            worker,
            campaign,
            name,
        )
        return worker

    async def leave(self, worker: str) -> None:
        """A worker stopping on purpose: its placed calls go to the others
        (anything it still held ``sending`` becomes ``ambiguous``)."""
        await self._pool.execute(
            "UPDATE workers SET dead = true, live_spare = 0 WHERE id = $1", worker
        )

    async def claim(self, campaign: int, worker: str, limit: int, now: float) -> list[Claim]:
        """Up to ``limit`` due rows, now committed ``sending`` for ``worker``."""
        if limit < 1:
            return []
        records = await self._pool.fetch(_CLAIM, campaign, worker, now, limit)
        claims = [
            Claim(r["row_no"], r["input_hash"], _request_from_json(r["request"]), r["dials"])
            for r in records
        ]
        claims.sort(key=lambda claim: claim.row)
        return claims

    async def adopt(self, campaign: int, worker: str, limit: int = 500) -> list[PlacedCall]:
        """Placed calls of dead workers, now followed by ``worker``."""
        records = await self._pool.fetch(
            """
            WITH orphan AS (
                SELECT c.row_no FROM contacts c
                WHERE c.campaign_id = $1 AND c.call_id IS NOT NULL
                  AND c.state = ANY($4)
                  AND (c.worker_id IS NULL OR c.worker_id IN
                       (SELECT id FROM workers WHERE campaign_id = $1 AND dead))
                LIMIT $3
                FOR UPDATE SKIP LOCKED
            )
            UPDATE contacts c SET worker_id = $2 FROM orphan
            WHERE c.campaign_id = $1 AND c.row_no = orphan.row_no
            RETURNING c.row_no, c.call_id, c.state, c.dials
            """,
            campaign,
            worker,
            limit,
            list(PLACED_STATES),
        )
        return [PlacedCall(r["row_no"], r["call_id"], r["state"], r["dials"]) for r in records]

    async def renew(
        self,
        campaign: int,
        worker: str,
        *,
        want: int,
        rate_limited: bool,
        retry_after: float,
        worker_timeout: float,
        now: float,
    ) -> Lease:
        """Heartbeat, find dead workers, and lease this worker's share of the
        campaign's limits; one transaction (see :mod:`.limits`)."""
        async with self._pool.acquire() as conn, conn.transaction():
            # One renewal at a time per campaign: the slot arithmetic below
            # reads the others' grants and must not interleave with theirs.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", campaign)
            alive = await conn.fetchval(
                "UPDATE workers SET heartbeat_at = clock_timestamp() "
                "WHERE id = $1 AND NOT dead RETURNING true",
                worker,
            )
            if not alive:
                return Lease(None, 0, 0.0, 0, dead=True)
            await conn.execute(
                "UPDATE workers SET dead = true, live_spare = 0 WHERE campaign_id = $1 "
                "AND NOT dead AND heartbeat_at < clock_timestamp() - make_interval(secs => $2)",
                campaign,
                worker_timeout,
            )
            # Every renewal, not only when a death is found: a claim that
            # raced the verdict committed after it, and is caught here.
            await conn.execute(
                "UPDATE attempts a SET state = 'ambiguous', error = $3, finished_at = $2, "
                "updated_at = $2 FROM contacts c WHERE a.campaign_id = $1 "
                "AND c.campaign_id = $1 AND c.row_no = a.row_no AND a.attempt = c.dials "
                "AND a.state = 'sending' AND c.state = 'sending' AND c.worker_id IN "
                "(SELECT id FROM workers WHERE campaign_id = $1 AND dead)",
                campaign,
                now,
                _AMBIGUOUS_DEAD,
            )
            await conn.execute(
                "UPDATE contacts SET state = 'ambiguous', error = $3, finished_at = $2, "
                "updated_at = $2 WHERE campaign_id = $1 AND state = 'sending' AND worker_id IN "
                "(SELECT id FROM workers WHERE campaign_id = $1 AND dead)",
                campaign,
                now,
                _AMBIGUOUS_DEAD,
            )
            if rate_limited:
                await conn.execute(
                    "UPDATE campaigns SET rate_factor = greatest(0.05, rate_factor * 0.5), "
                    "rate_changed_at = clock_timestamp(), paused_until = greatest(paused_until, "
                    "clock_timestamp() + make_interval(secs => $2)) WHERE id = $1",
                    campaign,
                    retry_after,
                )
            else:
                # Grows back by 10% a second at most, whoever renews.
                await conn.execute(
                    "UPDATE campaigns SET rate_factor = least(1.0, rate_factor * 1.1), "
                    "rate_changed_at = clock_timestamp() WHERE id = $1 AND rate_factor < 1 "
                    "AND rate_changed_at < clock_timestamp() - interval '1 second'",
                    campaign,
                )
            limits = await conn.fetchrow(
                "SELECT rate_limit, max_live, max_call_time, rate_factor, "
                "greatest(0, extract(epoch FROM paused_until - clock_timestamp()))::float8 "
                "AS paused_for FROM campaigns WHERE id = $1",
                campaign,
            )
            assert limits is not None
            workers = await conn.fetchval(
                "SELECT count(*) FROM workers WHERE campaign_id = $1 AND NOT dead", campaign
            )
            rate = None
            if limits["rate_limit"] is not None:
                rate = limits["rate_limit"] * limits["rate_factor"] / max(1, workers)
            spare = None
            max_live = limits["max_live"]
            if max_live is not None:
                live = await conn.fetchval(
                    "SELECT count(*) FROM contacts WHERE campaign_id = $1 AND (state = ANY($2) "
                    "OR (state = 'ambiguous' AND sent_at > $3))",
                    campaign,
                    list(LIVE_STATES),
                    now - limits["max_call_time"],
                )
                mine = await conn.fetchval(
                    "SELECT count(*) FROM contacts WHERE campaign_id = $1 AND worker_id = $2 "
                    "AND (state = ANY($3) OR (state = 'ambiguous' AND sent_at > $4))",
                    campaign,
                    worker,
                    list(LIVE_STATES),
                    now - limits["max_call_time"],
                )
                others = await conn.fetchval(
                    "SELECT COALESCE(sum(live_spare), 0) FROM workers WHERE campaign_id = $1 "
                    "AND NOT dead AND id <> $2",
                    campaign,
                    worker,
                )
                fair = -(-max_live // max(1, workers))
                spare = max(0, min(want, fair - mine, max_live - live - others))
            await conn.execute(
                "UPDATE workers SET live_spare = $2, rate_share = $3 WHERE id = $1",
                worker,
                spare or 0,
                rate or 0.0,
            )
            return Lease(rate, spare, float(limits["paused_for"]), int(workers))

    # -- writes ---------------------------------------------------------------------------------

    async def record_statuses(self, events: Sequence[tuple[str, str, str, float | None]]) -> int:
        """Webhook statuses, by call id, wherever the call was placed:
        ``(call_id, state, status, event_time)``; returns the rows changed.

        A row already in a final state is left alone (a late or repeated event
        never undoes an end). A status for a call no row knows yet, whose
        ``userNumber`` is the number of a row left ``ambiguous`` (see
        :meth:`reconcile`), is the caller's to pass there.
        """
        if not events:
            return 0
        now = time.time()
        async with self._pool.acquire() as conn, conn.transaction():
            changed = 0
            for call_id, state, status, _when in events:
                final = state in TERMINAL_STATUSES
                result = await conn.execute(
                    "UPDATE contacts SET state = $2, status = $3, "
                    "started_at = COALESCE(started_at, CASE WHEN $2 IN ('started', "
                    "'in-progress') THEN $4::float8 END), finished_at = CASE WHEN $5 THEN $4 "
                    "ELSE finished_at END, updated_at = $4 "
                    "WHERE call_id = $1 AND NOT (state = ANY($6))",
                    call_id,
                    state,
                    status,
                    now,
                    final,
                    list(TERMINAL_STATUSES | {"lost", "timed_out"}),
                )
                changed += int(result.split()[-1])
                await conn.execute(
                    "UPDATE attempts SET state = $2, status = $3, "
                    "finished_at = CASE WHEN $5 THEN $4 ELSE finished_at END, updated_at = $4 "
                    "WHERE call_id = $1 AND NOT (state = ANY($6))",
                    call_id,
                    state,
                    status,
                    now,
                    final,
                    list(TERMINAL_STATUSES | {"lost", "timed_out"}),
                )
        return changed

    async def reconcile(
        self, call_id: str, user_number: str, agent_id: str | None, event_time: float
    ) -> int | None:
        """A webhook for a call no row has: if ``user_number`` is the number of a
        row left ``ambiguous`` whose sending mark came before the event (and
        its agent matches), that row's trigger did place this call: record the
        call id (state ``reconciled``, its attempt too). Returns the row."""
        async with self._pool.acquire() as conn, conn.transaction():
            # worker_id NULL: whichever worker renews next adopts the call and
            # follows it to its end (its later events may have come already).
            found = await conn.fetchrow(
                "UPDATE contacts SET state = 'reconciled', call_id = $1, updated_at = $4, "
                "worker_id = NULL, "
                "error = 'reconciled from a webhook: the ambiguous trigger placed call ' || $1 "
                "WHERE number = $2 AND state = 'ambiguous' AND call_id IS NULL AND sent_at <= $4 "
                "AND ($3::text IS NULL OR request->>'agent_id' = $3) "
                "AND NOT EXISTS (SELECT 1 FROM contacts k WHERE k.call_id = $1) "
                "RETURNING campaign_id, row_no, dials",
                call_id,
                user_number,
                agent_id,
                event_time,
            )
            if found is None:
                return None
            await conn.execute(
                "UPDATE attempts SET state = 'reconciled', call_id = $4, updated_at = $5 "
                "WHERE campaign_id = $1 AND row_no = $2 AND attempt = $3",
                found["campaign_id"],
                found["row_no"],
                found["dials"],
                call_id,
                event_time,
            )
            return int(found["row_no"])

    # -- reads ------------------------------------------------------------------------------------

    async def counts(self, campaign: int) -> dict[str, int]:
        """Rows per state."""
        records = await self._pool.fetch(
            "SELECT state, count(*) FROM contacts WHERE campaign_id = $1 GROUP BY state", campaign
        )
        return {r[0]: int(r[1]) for r in records}

    async def unfinished(self, campaign: int, *, placed: bool = True) -> int:
        """Rows that still need a worker: pending, being sent, or (``placed``)
        placed and not final yet."""
        states = ["pending", "sending", "redial", *(PLACED_STATES if placed else ())]
        value = await self._pool.fetchval(
            "SELECT count(*) FROM contacts WHERE campaign_id = $1 AND state = ANY($2)",
            campaign,
            states,
        )
        return int(value)

    async def rows_after(self, campaign: int, row: int, limit: int = 2000) -> list[JournalRow]:
        records = await self._pool.fetch(
            f"SELECT {_ROW_COLUMNS} FROM contacts WHERE campaign_id = $1 AND row_no > $2 "
            "ORDER BY row_no LIMIT $3",
            campaign,
            row,
            limit,
        )
        return [JournalRow(*r.values()) for r in records]

    async def iter_rows(self, campaign: int, chunk: int = 2000) -> AsyncIterator[JournalRow]:
        """Every row in order, read in chunks (flat memory)."""
        last = 0
        while True:
            rows = await self.rows_after(campaign, last, chunk)
            if not rows:
                return
            for row in rows:
                yield row
            last = rows[-1].row

    async def attempts_after(
        self, campaign: int, after: tuple[int, int], limit: int = 2000
    ) -> list[AttemptRow]:
        records = await self._pool.fetch(
            f"SELECT {_ATTEMPT_COLUMNS} FROM attempts a JOIN contacts c "
            "ON c.campaign_id = a.campaign_id AND c.row_no = a.row_no "
            "WHERE a.campaign_id = $1 AND (a.row_no, a.attempt) > ($2, $3) "
            "ORDER BY a.row_no, a.attempt LIMIT $4",
            campaign,
            after[0],
            after[1],
            limit,
        )
        return [AttemptRow(*r.values()) for r in records]

    async def total_attempts(self, campaign: int) -> tuple[int, int]:
        """(trigger requests, retries) over every attempt."""
        record = await self._pool.fetchrow(
            "SELECT COALESCE(sum(requests), 0), "
            "COALESCE(sum(CASE WHEN requests > 1 THEN requests - 1 ELSE 0 END), 0) "
            "FROM attempts WHERE campaign_id = $1",
            campaign,
        )
        assert record is not None
        return int(record[0]), int(record[1])

    async def redials(self, campaign: int) -> int:
        """Dial attempts after a contact's first."""
        value = await self._pool.fetchval(
            "SELECT count(*) FROM attempts WHERE campaign_id = $1 AND attempt > 1", campaign
        )
        return int(value)

    async def workers(self, campaign: int) -> list[WorkerInfo]:
        records = await self._pool.fetch(
            """
            SELECT w.id::text, w.name, NOT w.dead,
                   extract(epoch FROM clock_timestamp() - w.heartbeat_at)::float8,
                   (SELECT count(*) FROM contacts c WHERE c.campaign_id = w.campaign_id
                      AND c.worker_id = w.id
                      AND c.state IN ('sending', 'queued', 'scheduled', 'started', 'in-progress'))
            FROM workers w WHERE w.campaign_id = $1 ORDER BY w.started_at
            """,
            campaign,
        )
        return [WorkerInfo(r[0], r[1], r[2], r[3], int(r[4])) for r in records]

    async def drop_schema(self) -> None:
        """Drop this store's schema and everything in it (tests, cleanup)."""
        await self._pool.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


async def _records(
    rows: Iterator[ContactRow], make: Any, size: int = _LOAD_CHUNK
) -> AsyncIterator[tuple[Any, ...]]:
    """The file's rows as COPY records, read and validated in a thread a chunk
    at a time: the event loop stays free and only one chunk is in memory."""
    while True:
        chunk = await asyncio.to_thread(_chunk, rows, make, size)
        if not chunk:
            return
        for record in chunk:
            yield record
