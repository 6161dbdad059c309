"""Tamper evidence: recompute every stream's hash chain, and export the log so a
third party can do the same without our code or database.

Each link is checked in SQL against the previous event of its stream (window
`lag`), which is equivalent to walking every chain: a changed payload breaks its
own link; a rewritten hash breaks the next one; a deleted event breaks version
continuity. Rewriting a stream's whole tail consistently would need the head
hashes anchored elsewhere (see docs); this verifier reports what the log shows.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from datetime import datetime

import msgspec

from eventstore.records import LogPosition
from eventstore.store import BELOW_HORIZON, EventStore

GENESIS = bytes(32)

_LINKS = f"""
WITH links AS (
    SELECT position, stream_id, version, event_id, hash,
           lag(version) OVER w AS previous_version,
           event_hash(coalesce(lag(hash) OVER w, '\\x{GENESIS.hex()}'::bytea), stream_id, version,
                      event_id, type, schema_version, recorded_at, data, metadata) AS expected
    FROM events
    WINDOW w AS (PARTITION BY stream_id ORDER BY version)
)
SELECT position, stream_id, version, event_id::text AS event_id,
       CASE WHEN version <> coalesce(previous_version, 0) + 1 THEN 'version gap'
            ELSE 'hash mismatch' END AS problem,
       count(*) OVER () AS broken
FROM links
WHERE hash <> expected OR version <> coalesce(previous_version, 0) + 1
ORDER BY position
LIMIT 1
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
    async with store.pool.acquire() as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            totals = await conn.fetchrow(
                "SELECT count(*) AS events, count(DISTINCT stream_id) AS streams FROM events")
            row = await conn.fetchrow(_LINKS)
    first = None if row is None else BrokenLink(
        position=row["position"], stream_id=row["stream_id"], version=row["version"],
        event_id=row["event_id"], problem=row["problem"])
    return VerifyReport(events=totals["events"], streams=totals["streams"],
                        broken_links=0 if row is None else row["broken"], first_broken=first)


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
