"""Each event carries its parent's hash, so the log verifies in parallel.

Revision ID: 0006
Revises: 0005

Before, checking a link meant hashing the previous event's stored hash with this
event's canonical text, which only a window over each stream (sorted by stream and
version, with every payload in the sort) could pair up: one core, and a sort the
size of the log (8,377 events/s at a million events). Now every row stores
``prev_hash`` (the hash its own hash was chained from), so verification splits in
two checks that are each cheap:

- the seal, row by row: ``sha256(prev_hash || canonical text) = hash``. No ordering
  is needed, so Postgres scans the table with parallel workers;
- the links, over narrow columns only: each row's ``prev_hash`` equals the previous
  version's ``hash`` (genesis for version 1) and versions have no gaps. The unique
  (stream_id, version) index now INCLUDEs ``hash`` and ``prev_hash``, so this is an
  index-only scan in stream order: no sort. (It also turns the head read at every
  append into an index-only scan.)

Tampering is found as before: an edited payload or envelope breaks its seal; an
intruder who also recomputes that row's hash breaks the next row's link; an edited
``prev_hash`` breaks both; a deleted event is a version gap.

``event_canonical_text`` (and ``event_hash``) keep their exact text but are now
declared STABLE: ``extract`` on a timestamptz is STABLE, and Postgres never inlines
an IMMUTABLE SQL function whose body is less than immutable, so every row paid a
function call that cost more than the hashing. Inlined, the same text costs a third.
It is also spelled with ``||`` instead of ``concat_ws``: all its arguments are NOT NULL
columns, where the two give the same text (the upgrade re-checks every stored hash).
"""

from migrations.sql_script import execute_script

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

GENESIS = r"'\x" + "00" * 32 + "'::bytea"

UPGRADE = r"""
CREATE OR REPLACE FUNCTION event_canonical_text(p_stream_id text, p_version integer,
                                                p_event_id uuid, p_type text,
                                                p_schema_version integer,
                                                p_recorded_at timestamptz, p_data jsonb,
                                                p_metadata jsonb)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT p_stream_id || E'\n' || p_version::text || E'\n' || p_event_id::text || E'\n'
        || p_type || E'\n' || p_schema_version::text || E'\n'
        || (extract(epoch FROM p_recorded_at) * 1000000)::bigint::text || E'\n'
        || p_data::text || E'\n' || p_metadata::text
$$;

ALTER FUNCTION event_hash(bytea, text, integer, uuid, text, integer, timestamptz, jsonb, jsonb)
    STABLE;

ALTER TABLE events ADD COLUMN prev_hash bytea;
-- The log is append-only: the backfill is the one sanctioned rewrite of old rows.
ALTER TABLE events DISABLE TRIGGER events_no_update_delete;
UPDATE events e SET prev_hash = coalesce(p.previous, GENESIS)
  FROM (SELECT position, lag(hash) OVER (PARTITION BY stream_id ORDER BY version) AS previous
          FROM events) p
 WHERE p.position = e.position;
ALTER TABLE events ENABLE TRIGGER events_no_update_delete;
ALTER TABLE events ALTER COLUMN prev_hash SET NOT NULL;

-- A migration must not bless a log it cannot verify: every stored hash must still be
-- what the (rewritten) canonical text gives.
DO $$
DECLARE
    broken bigint;
BEGIN
    SELECT count(*) INTO broken FROM events
     WHERE sha256(prev_hash || convert_to(event_canonical_text(stream_id, version,
               event_id, type, schema_version, recorded_at, data, metadata), 'UTF8')) <> hash;
    IF broken > 0 THEN
        RAISE EXCEPTION '% events do not match their hash; verify the log before migrating',
            broken;
    END IF;
END $$;

ALTER TABLE events DROP CONSTRAINT events_stream_version_key;
ALTER TABLE events ADD CONSTRAINT events_stream_version_key
    UNIQUE (stream_id, version) INCLUDE (hash, prev_hash);

CREATE OR REPLACE FUNCTION append_events(
    p_stream_id text, p_category text, p_expected_version integer,
    p_event_ids uuid[], p_types text[], p_schema_versions integer[], p_data jsonb[],
    p_metadata jsonb, p_idempotency_key text)
RETURNS TABLE (out_version integer, out_position bigint)
LANGUAGE plpgsql AS $$
DECLARE
    head_version integer;
    head_hash    bytea;
    at           timestamptz := now();
    n            integer := coalesce(array_length(p_event_ids, 1), 0);
    versions     integer[];
    texts        text[];
    parents      bytea[] := '{}';
    hashes       bytea[] := '{}';
    positions    bigint[];
BEGIN
    IF p_idempotency_key IS NOT NULL THEN
        RETURN QUERY SELECT unnest(k.versions), unnest(k.positions)
                     FROM idempotency_keys k WHERE k.key = p_idempotency_key;
        IF FOUND THEN RETURN; END IF;
    END IF;
    -- Read the head before the first write (see migration 0001).
    SELECT e.version, e.hash INTO head_version, head_hash
      FROM events e WHERE e.stream_id = p_stream_id ORDER BY e.version DESC LIMIT 1;
    IF NOT FOUND THEN
        head_version := 0;
        head_hash := GENESIS;
    END IF;
    IF p_expected_version IS NOT NULL AND p_expected_version <> head_version THEN
        RAISE EXCEPTION 'stream % is at version %, expected %',
            p_stream_id, head_version, p_expected_version
            USING ERRCODE = 'ES409', DETAIL = head_version::text;
    END IF;
    SELECT array_agg(head_version + u.i ORDER BY u.i),
           array_agg(event_canonical_text(p_stream_id, head_version + u.i::integer, u.id,
                     u.t, u.sv, at, u.d, p_metadata) ORDER BY u.i)
      INTO versions, texts
      FROM unnest(p_event_ids, p_types, p_schema_versions, p_data)
           WITH ORDINALITY AS u(id, t, sv, d, i);
    FOR i IN 1 .. n LOOP
        parents := parents || head_hash;
        head_hash := sha256(head_hash || convert_to(texts[i], 'UTF8'));
        hashes := hashes || head_hash;
    END LOOP;
    WITH inserted AS (
        INSERT INTO events (stream_id, category, version, event_id, type, schema_version,
                            data, metadata, recorded_at, hash, prev_hash)
        SELECT p_stream_id, p_category, u.v, u.id, u.t, u.sv, u.d, p_metadata, at, u.h, u.p
          FROM unnest(versions, p_event_ids, p_types, p_schema_versions, p_data, hashes,
                      parents) AS u(v, id, t, sv, d, h, p)
        RETURNING version, position)
    SELECT array_agg(position ORDER BY version) INTO positions FROM inserted;
    IF p_idempotency_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (key, stream_id, versions, positions)
        VALUES (p_idempotency_key, p_stream_id, versions, positions);
    END IF;
    RETURN QUERY SELECT unnest(versions), unnest(positions);
END $$;
""".replace("GENESIS", GENESIS)

# Back to migration 0003's append (without prev_hash) and the plain unique key. The
# canonical text keeps its inlinable spelling (same results).
DOWNGRADE = r"""
ALTER TABLE events DROP CONSTRAINT events_stream_version_key;
ALTER TABLE events ADD CONSTRAINT events_stream_version_key UNIQUE (stream_id, version);
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("2026-11-23_append_without_notify_0003.py")
    spec = importlib.util.spec_from_file_location("migration_0003", path)
    assert spec is not None and spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    script: str = previous.UPGRADE
    append = script[script.index("CREATE OR REPLACE FUNCTION append_events"):]
    execute_script(DOWNGRADE + append + "\nALTER TABLE events DROP COLUMN prev_hash;\n")
