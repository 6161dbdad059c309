"""Tamper evidence: recompute every stream's hash chain, and export the log so a
third party can do the same without our code or database.

Every event stores the hash it was chained from (``prev_hash``, migration 0006), so
the chain is checked in two passes over one snapshot, each cheap on its own:

- the seal of each row, ``sha256(prev_hash || canonical text) = hash``: row-local,
  so Postgres runs it with parallel workers (the hashing is most of the work);
- the links: each row's ``prev_hash`` is the previous version's ``hash`` (genesis
  for version 1) and versions have no gaps, over the narrow columns of the
  (stream_id, version) index in stream order.

Together they equal walking every chain: a changed payload or envelope breaks its
seal; a rewritten hash breaks the next link; a deleted event is a version gap.
Rewriting a stream's whole tail consistently would need the head hashes anchored
elsewhere (see docs); this verifier reports what the log shows.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

import msgspec

from eventstore.records import LogPosition
from eventstore.store import BELOW_HORIZON, EventStore

GENESIS = bytes(32)

# Rows whose own hash is not what their parent hash and content give. Counted first:
# an aggregate lets Postgres hash in parallel workers (a plain row list would be
# planned serially, as if most rows could come back); the list is read only when the
# count says the log is broken.
_SEALED = """sha256(prev_hash || convert_to(event_canonical_text(stream_id, version, event_id,
    type, schema_version, recorded_at, data, metadata), 'UTF8')) = hash"""
_BROKEN_SEAL_COUNT = f"SELECT count(*) FROM events WHERE NOT {_SEALED}"
_BROKEN_SEALS = f"SELECT position FROM events WHERE NOT {_SEALED}"

# One pass in stream order over the index columns: the totals, and the rows that do
# not follow the previous event of their stream (normally none).
_LINKS = """
WITH links AS (
    SELECT stream_id, version, prev_hash,
           lag(version) OVER w AS previous_version, lag(hash) OVER w AS previous_hash
    FROM events
    WINDOW w AS (PARTITION BY stream_id ORDER BY version)
), checked AS (
    SELECT stream_id, version, previous_version IS NULL AS first_of_stream,
           version <> coalesce(previous_version, 0) + 1 AS gap,
           prev_hash <> coalesce(previous_hash, $1::bytea) AS unlinked
    FROM links
)
SELECT count(*) AS events, count(*) FILTER (WHERE first_of_stream) AS streams,
       coalesce(array_agg(stream_id) FILTER (WHERE gap OR unlinked), '{}') AS stream_ids,
       coalesce(array_agg(version) FILTER (WHERE gap OR unlinked), '{}') AS versions,
       coalesce(array_agg(gap) FILTER (WHERE gap OR unlinked), '{}') AS gaps
FROM checked
"""

_POSITIONS = """
SELECT position, u.gap FROM unnest($1::text[], $2::integer[], $3::boolean[]) AS u(s, v, gap)
JOIN events ON events.stream_id = u.s AND events.version = u.v
"""


class BrokenLink(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    stream_id: str
    version: int
    event_id: str
    problem: str


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    events: int
    streams: int
    broken_links: int
    first_broken: BrokenLink | None

    @property
    def intact(self) -> bool:
        return self.first_broken is None


async def verify_log(store: EventStore) -> VerifyReport:
    """Both passes, one after the other, in one snapshot. (Running them concurrently on
    two connections sharing an exported snapshot was slower on two cores: the seal pass
    already keeps every core busy.)"""
    async with store.pool.acquire() as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            broken_seals = await _seal_pass(conn)
            chain, broken_links = await _link_pass(conn)
        # A broken row is reported once, as a gap if its link says so.
        problems = dict.fromkeys(broken_seals, "hash mismatch")
        for position, gap in broken_links:
            if gap or position not in problems:
                problems[position] = "version gap" if gap else "hash mismatch"
        first = None
        if problems:
            position = min(problems)
            # Events never change (append-only), so this read needs no snapshot.
            row = await conn.fetchrow(
                "SELECT stream_id, version, event_id::text AS event_id FROM events "
                "WHERE position = $1", position)
            first = BrokenLink(position=position, stream_id=row["stream_id"],
                               version=row["version"], event_id=row["event_id"],
                               problem=problems[position])
    return VerifyReport(events=chain["events"], streams=chain["streams"],
                        broken_links=len(problems), first_broken=first)


async def _seal_pass(conn: Any) -> list[int]:
    """Positions of rows whose hash is not what their parent hash and content give."""
    # fetch, not fetchval: asyncpg executes fetchval/fetchrow with a row limit, and
    # Postgres runs a portal with a row limit without its parallel workers.
    if not (await conn.fetch(_BROKEN_SEAL_COUNT))[0][0]:
        return []
    return [row["position"] for row in await conn.fetch(_BROKEN_SEALS)]


async def _link_pass(conn: Any) -> tuple[Any, list[tuple[int, bool]]]:
    """The totals, and (position, is a gap) of rows that do not follow their stream."""
    chain = await conn.fetchrow(_LINKS, GENESIS)
    broken = [(row["position"], row["gap"]) for row in await conn.fetch(
        _POSITIONS, chain["stream_ids"], chain["versions"], chain["gaps"])]
    return chain, broken


class ExportedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One line of an export: everything a verifier needs, in the hashed form."""

    position: int
    stream_id: str
    version: int
    event_id: str
    type: str
    schema_version: int
    recorded_at: datetime
    recorded_at_us: int
    data: str
    """The payload exactly as hashed (Postgres' canonical jsonb text)."""
    metadata: str
    hash: str


async def export_log(store: EventStore, *, after: LogPosition | None = None,
                     to_position: LogPosition | None = None,
                     batch_size: int = 5000) -> AsyncIterator[bytes]:
    """The log (or a slice of it, in log order) as JSON Lines, streamed."""
    encoder = msgspec.json.Encoder()
    position = after or LogPosition.start()
    async with store.pool.acquire() as conn:
        while True:
            rows = await conn.fetch(
                "SELECT position, tx_id::text::bigint AS tx, stream_id, version, "
                "event_id::text AS event_id, type, schema_version, recorded_at, "
                "(extract(epoch FROM recorded_at) * 1000000)::bigint AS recorded_at_us, "
                "data::text AS data, metadata::text AS metadata, hash FROM events "
                "WHERE (events.tx_id, events.position) > ($1::text::xid8, $2) "
                f"AND {BELOW_HORIZON} "
                + ("AND (events.tx_id, events.position) <= ($4::text::xid8, $5) "
                   if to_position else "")
                + "ORDER BY events.tx_id, events.position LIMIT $3",
                str(position.tx_id), position.position, batch_size,
                *((str(to_position.tx_id), to_position.position) if to_position else ()))
            if not rows:
                return
            for row in rows:
                yield encoder.encode(ExportedEvent(
                    position=row["position"], stream_id=row["stream_id"],
                    version=row["version"], event_id=row["event_id"], type=row["type"],
                    schema_version=row["schema_version"], recorded_at=row["recorded_at"],
                    recorded_at_us=row["recorded_at_us"], data=row["data"],
                    metadata=row["metadata"], hash=bytes(row["hash"]).hex())) + b"\n"
            position = LogPosition(rows[-1]["tx"], rows[-1]["position"])


def link_hash(previous: bytes, event: ExportedEvent) -> bytes:
    """The documented hash of one event: what a third party recomputes."""
    canonical = "\n".join([event.stream_id, str(event.version), event.event_id, event.type,
                           str(event.schema_version), str(event.recorded_at_us),
                           event.data, event.metadata])
    return hashlib.sha256(previous + canonical.encode()).digest()


def verify_export(lines: Iterable[bytes]) -> BrokenLink | None:
    """Verify a whole-log export offline; returns the first broken link, or None.

    A slice that starts mid-stream can be verified from the first exported event of
    each stream on (its stored hash is taken as the starting point).
    """
    decoder = msgspec.json.Decoder(ExportedEvent)
    heads: dict[str, tuple[int, bytes]] = {}
    for line in lines:
        event = decoder.decode(line)
        known = heads.get(event.stream_id)
        previous_version, previous = known if known else (0, GENESIS)
        if known is None and event.version != 1:
            heads[event.stream_id] = (event.version, bytes.fromhex(event.hash))
            continue
        problem = None
        if event.version != previous_version + 1:
            problem = "version gap"
        elif link_hash(previous, event) != bytes.fromhex(event.hash):
            problem = "hash mismatch"
        if problem:
            return BrokenLink(position=event.position, stream_id=event.stream_id,
                              version=event.version, event_id=event.event_id, problem=problem)
        heads[event.stream_id] = (event.version, bytes.fromhex(event.hash))
    return None
