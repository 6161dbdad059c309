"""The event log and the bookkeeping tables around it.

Revision ID: 0001
Revises:
"""

from migrations.sql_script import execute_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The log is append-only. Ordering for readers is (tx_id, position): a reader only
# takes rows whose transaction id is below the oldest running transaction
# (pg_snapshot_xmin), so a transaction that commits late can never be skipped.
# append_events() reads the stream head *before* its first write, so a stream's
# later versions always get a larger transaction id than its earlier ones.
UPGRADE = r"""
CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text        NOT NULL,
    category        text        NOT NULL,
    version         integer     NOT NULL CHECK (version > 0),
    event_id        uuid        NOT NULL,
    type            text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version > 0),
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL,
    hash            bytea       NOT NULL,
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);
CREATE INDEX events_log_order_idx ON events (tx_id, position);
CREATE INDEX events_category_order_idx ON events (category, tx_id, position);
CREATE INDEX events_recorded_at_idx ON events (recorded_at);

CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % is not allowed on events', TG_OP
        USING ERRCODE = 'ES403';
END $$;
CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

-- Wakes tailing readers at commit instead of making them poll blindly.
CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('events_appended', '');
    RETURN NULL;
END $$;
CREATE TRIGGER events_notify_on_insert AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();

CREATE TABLE idempotency_keys (
    key          text PRIMARY KEY,
    stream_id    text        NOT NULL,
    versions     integer[]   NOT NULL,
    positions    bigint[]    NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

-- The hashed text of an event: fields joined by newlines, with the payloads in
-- Postgres' canonical jsonb rendering, so a verifier can recompute it exactly.
CREATE FUNCTION event_hash(prev_hash bytea, p_stream_id text, p_version integer,
                           p_event_id uuid, p_type text, p_schema_version integer,
                           p_recorded_at timestamptz, p_data jsonb, p_metadata jsonb)
RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sha256(prev_hash || convert_to(concat_ws(E'\n',
        p_stream_id, p_version::text, p_event_id::text, p_type, p_schema_version::text,
        (extract(epoch FROM p_recorded_at) * 1000000)::bigint::text,
        p_data::text, p_metadata::text), 'UTF8'))
$$;

CREATE FUNCTION append_events(
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
    versions     integer[] := '{}';
    hashes       bytea[]   := '{}';
    positions    bigint[];
BEGIN
    IF p_idempotency_key IS NOT NULL THEN
        RETURN QUERY SELECT unnest(k.versions), unnest(k.positions)
                     FROM idempotency_keys k WHERE k.key = p_idempotency_key;
        IF FOUND THEN RETURN; END IF;
    END IF;
    -- Read the head before the first write (see the note at the top of this file).
    SELECT e.version, e.hash INTO head_version, head_hash
      FROM events e WHERE e.stream_id = p_stream_id ORDER BY e.version DESC LIMIT 1;
    IF NOT FOUND THEN
        head_version := 0;
        head_hash := decode(repeat('00', 32), 'hex');
    END IF;
    IF p_expected_version IS NOT NULL AND p_expected_version <> head_version THEN
        RAISE EXCEPTION 'stream % is at version %, expected %',
            p_stream_id, head_version, p_expected_version
            USING ERRCODE = 'ES409', DETAIL = head_version::text;
    END IF;
    FOR i IN 1 .. n LOOP
        head_hash := event_hash(head_hash, p_stream_id, head_version + i, p_event_ids[i],
                                p_types[i], p_schema_versions[i], at, p_data[i], p_metadata);
        versions := versions || (head_version + i);
        hashes := hashes || head_hash;
    END LOOP;
    WITH inserted AS (
        INSERT INTO events (stream_id, category, version, event_id, type, schema_version,
                            data, metadata, recorded_at, hash)
        SELECT p_stream_id, p_category, u.v, u.id, u.t, u.sv, u.d, p_metadata, at, u.h
          FROM unnest(versions, p_event_ids, p_types, p_schema_versions, p_data, hashes)
               AS u(v, id, t, sv, d, h)
        RETURNING version, position)
    SELECT array_agg(position ORDER BY version) INTO positions FROM inserted;
    IF p_idempotency_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (key, stream_id, versions, positions)
        VALUES (p_idempotency_key, p_stream_id, versions, positions);
    END IF;
    RETURN QUERY SELECT unnest(versions), unnest(positions);
END $$;

-- Where the Kafka relay has published up to, in log order.
CREATE TABLE relay_checkpoints (
    name        text PRIMARY KEY,
    tx_id       xid8   NOT NULL,
    position    bigint NOT NULL,
    published   bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Kafka offsets of projection consumers, written in the same transaction as the
-- projection's rows: a redelivered batch is recognised and changes nothing.
CREATE TABLE consumer_offsets (
    consumer     text    NOT NULL,
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint  NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);

-- Which version of each projection the read path uses, and rebuild progress.
CREATE TABLE projection_versions (
    projection  text    NOT NULL,
    version     integer NOT NULL,
    state       text    NOT NULL CHECK (state IN ('building', 'live', 'retired')),
    log_tx_id   xid8,
    log_position bigint,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, version)
);
CREATE UNIQUE INDEX projection_versions_one_live ON projection_versions (projection)
    WHERE state = 'live';

-- Events a side-effect handler has finished, so redelivery is skipped.
CREATE TABLE handler_inbox (
    handler      text NOT NULL,
    event_id     uuid NOT NULL,
    handled_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (handler, event_id)
);

-- Ordered dead letters: once a stream is parked for a handler, its later events
-- are parked behind it until an operator retries them.
CREATE TABLE dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    handler      text    NOT NULL,
    stream_id    text    NOT NULL,
    event_id     uuid    NOT NULL,
    position     bigint  NOT NULL,
    type         text    NOT NULL,
    topic        text    NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint  NOT NULL,
    payload      bytea   NOT NULL,
    headers      jsonb   NOT NULL,
    attempts     integer NOT NULL,
    last_error   text    NOT NULL,
    status       text    NOT NULL DEFAULT 'parked' CHECK (status IN ('parked', 'retry', 'done')),
    parked_at    timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (handler, event_id)
);
CREATE INDEX dead_letters_open_idx ON dead_letters (handler, stream_id) WHERE status <> 'done';

-- Messages that could not be decoded at all (not ours, truncated, wrong schema).
CREATE TABLE parked_messages (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer     text    NOT NULL,
    topic        text    NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset bigint  NOT NULL,
    key          bytea,
    payload      bytea,
    headers      jsonb   NOT NULL,
    reason       text    NOT NULL,
    parked_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (consumer, topic, kafka_partition, kafka_offset)
);
"""

DOWNGRADE = r"""
DROP TABLE parked_messages, dead_letters, handler_inbox, projection_versions,
           consumer_offsets, relay_checkpoints, idempotency_keys;
DROP FUNCTION append_events(text, text, integer, uuid[], text[], integer[], jsonb[], jsonb, text);
DROP FUNCTION event_hash(bytea, text, integer, uuid, text, integer, timestamptz, jsonb, jsonb);
DROP TRIGGER events_no_truncate ON events;
DROP TRIGGER events_no_update_delete ON events;
DROP TABLE events;
DROP FUNCTION events_are_immutable();
DROP FUNCTION events_notify();
"""


def upgrade() -> None:
    execute_script(UPGRADE)


def downgrade() -> None:
    execute_script(DOWNGRADE)
