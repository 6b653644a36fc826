-- CaseBridge broker schema, version 1 (PostgreSQL): the tables of SQLite's 0001_init, plus what
-- only a shared database needs (blob chunks, rate-limit buckets), the broker's role and grants.
-- Times are Unix seconds; ids, hashes and key ids are raw bytes; agency ids are text.

CREATE TABLE roots (
    key_id      bytea PRIMARY KEY,
    country     text NOT NULL,
    raw         bytea NOT NULL,
    added_at    bigint NOT NULL
);

CREATE TABLE certificates (
    key_id        bytea PRIMARY KEY,
    agency_id     text NOT NULL,
    raw           bytea NOT NULL,
    registered_at bigint NOT NULL
);
CREATE INDEX certificates_by_agency ON certificates (agency_id);

CREATE TABLE encryption_keys (
    key_id        bytea PRIMARY KEY,
    agency_id     text NOT NULL,
    raw           bytea NOT NULL,
    registered_at bigint NOT NULL
);
CREATE INDEX encryption_keys_by_agency ON encryption_keys (agency_id);

-- Every revocation list ever accepted; the newest number of each country is the one in force.
CREATE TABLE revocation_lists (
    country       text NOT NULL,
    number        bigint NOT NULL,
    raw           bytea NOT NULL,
    registered_at bigint NOT NULL,
    PRIMARY KEY (country, number)
);

-- open_recipients counts inbox entries still pending or delivered: expiry looks at envelopes
-- with open recipients, purging at those with none.
CREATE TABLE envelopes (
    envelope_id     bytea PRIMARY KEY,
    envelope_hash   bytea NOT NULL UNIQUE,
    sender_id       text NOT NULL,
    sender_key_id   bytea NOT NULL,
    header          bytea,
    header_length   integer NOT NULL,
    accepted_at     bigint NOT NULL,
    expires_at      bigint NOT NULL,
    accepted_index  bigint NOT NULL,
    open_recipients integer NOT NULL CHECK (open_recipients >= 0),
    purged_at       bigint
);
CREATE INDEX envelopes_expiring ON envelopes (expires_at) WHERE open_recipients > 0;
CREATE INDEX envelopes_purgeable ON envelopes (accepted_at) WHERE open_recipients = 0 AND purged_at IS NULL;

-- A part's ciphertext is either inline (small parts, in the acceptance transaction) or a blob.
CREATE TABLE parts (
    envelope_id   bytea NOT NULL REFERENCES envelopes (envelope_id),
    part_no       integer NOT NULL,
    length        bigint NOT NULL,
    digest        bytea NOT NULL,
    stored_inline boolean NOT NULL,
    inline_data   bytea,
    PRIMARY KEY (envelope_id, part_no)
);

-- One entry per (envelope, recipient); cursor increases per recipient.
CREATE TABLE inbox (
    recipient_id text NOT NULL,
    cursor       bigint NOT NULL,
    envelope_id  bytea NOT NULL REFERENCES envelopes (envelope_id),
    state        text NOT NULL CHECK (state IN ('pending', 'delivered', 'verified', 'rejected', 'expired')),
    updated_at   bigint NOT NULL,
    PRIMARY KEY (recipient_id, cursor),
    UNIQUE (envelope_id, recipient_id)
);
CREATE INDEX inbox_open ON inbox (state) WHERE state IN ('pending', 'delivered');

-- Every receipt recorded, in the order of its sender's feed (seq increases per sender).
CREATE TABLE receipts (
    sender_id    text NOT NULL,
    seq          bigint NOT NULL,
    envelope_id  bytea NOT NULL REFERENCES envelopes (envelope_id),
    recipient_id text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('accepted', 'delivered', 'verified', 'rejected', 'expired')),
    raw          bytea NOT NULL UNIQUE,
    recorded_at  bigint NOT NULL,
    log_index    bigint NOT NULL,
    PRIMARY KEY (sender_id, seq)
);
CREATE INDEX receipts_by_envelope ON receipts (envelope_id, recipient_id);

CREATE TABLE nonces (
    key_id     bytea NOT NULL,
    nonce      bytea NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX nonces_by_expiry ON nonces (expires_at);

-- The audit log: append-only, gapless, leaves stored verbatim. Appends are serialised by an
-- advisory lock taken inside the appending transaction (broker/storage/postgresql/audit.py).
CREATE TABLE audit_log (
    idx         bigint PRIMARY KEY CHECK (idx >= 0),
    leaf        bytea NOT NULL,
    recorded_at bigint NOT NULL
);

CREATE FUNCTION casebridge_refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit log entries cannot be changed or deleted (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE FUNCTION casebridge_audit_log_gapless() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.idx IS DISTINCT FROM (SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log) THEN
        RAISE EXCEPTION 'audit log entries are appended in order, without gaps'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER audit_log_gapless BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION casebridge_audit_log_gapless();
CREATE TRIGGER audit_log_no_rewrite BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION casebridge_refuse_rewrite();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION casebridge_refuse_rewrite();

-- Part ciphertext in chunks (PostgreSQL only: SQLite keeps files). An upload writes its chunks
-- under a fresh upload id; committing it links (envelope_hash, part_no) to the upload in one
-- statement, so a part is either whole or absent. Chunks are stored uncompressed and out of
-- line, so a ranged read fetches only the bytes it needs.
CREATE TABLE blob_uploads (
    upload_id  bytea PRIMARY KEY,
    started_at bigint NOT NULL
);

CREATE TABLE blob_chunks (
    upload_id bytea NOT NULL REFERENCES blob_uploads (upload_id) ON DELETE CASCADE,
    chunk_no  integer NOT NULL CHECK (chunk_no >= 0),
    data      bytea NOT NULL,
    PRIMARY KEY (upload_id, chunk_no)
);
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE blobs (
    envelope_hash bytea NOT NULL,
    part_no       integer NOT NULL,
    upload_id     bytea NOT NULL UNIQUE REFERENCES blob_uploads (upload_id),
    length        bigint NOT NULL,
    chunk_bytes   integer NOT NULL,
    committed_at  bigint NOT NULL,
    PRIMARY KEY (envelope_hash, part_no)
);

-- Per-agency token buckets shared by the replicas (PostgreSQL only), leased out in small
-- batches; times are the database's clock in (fractional) Unix seconds.
CREATE TABLE rate_buckets (
    agency_id  text PRIMARY KEY,
    tokens     double precision NOT NULL,
    updated_at double precision NOT NULL
);

-- The role the broker serves as (its login role is made a member of it). It may read and add
-- to everything but can never change or remove what the log tables hold: those grants are
-- SELECT and INSERT only, and tables added by later migrations get only those by default.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'casebridge_broker') THEN
        CREATE ROLE casebridge_broker NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END;
$$;

ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT ON TABLES TO casebridge_broker;

GRANT SELECT ON schema_version TO casebridge_broker;
GRANT SELECT, INSERT ON roots, certificates, encryption_keys, revocation_lists, receipts, audit_log
    TO casebridge_broker;
GRANT SELECT, INSERT, UPDATE ON envelopes, parts, inbox, rate_buckets TO casebridge_broker;
GRANT SELECT, INSERT, UPDATE, DELETE ON nonces TO casebridge_broker;
GRANT SELECT, INSERT, DELETE ON blob_uploads, blob_chunks, blobs TO casebridge_broker;
