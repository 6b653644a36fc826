-- CaseBridge broker schema, version 1 (SQLite).
-- Times are Unix seconds; ids, hashes and key ids are raw bytes; agency ids are text.

CREATE TABLE roots (
    key_id      BLOB PRIMARY KEY,
    country     TEXT NOT NULL,
    raw         BLOB NOT NULL,
    added_at    INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE certificates (
    key_id        BLOB PRIMARY KEY,
    agency_id     TEXT NOT NULL,
    raw           BLOB NOT NULL,
    registered_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX certificates_by_agency ON certificates (agency_id);

CREATE TABLE encryption_keys (
    key_id        BLOB PRIMARY KEY,
    agency_id     TEXT NOT NULL,
    raw           BLOB NOT NULL,
    registered_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX encryption_keys_by_agency ON encryption_keys (agency_id);

-- Every revocation list ever accepted; the newest number of each country is the one in force.
CREATE TABLE revocation_lists (
    country       TEXT NOT NULL,
    number        INTEGER NOT NULL,
    raw           BLOB NOT NULL,
    registered_at INTEGER NOT NULL,
    PRIMARY KEY (country, number)
) WITHOUT ROWID;

-- open_recipients counts inbox entries still pending or delivered: expiry looks at envelopes
-- with open recipients, purging at those with none.
CREATE TABLE envelopes (
    envelope_id     BLOB PRIMARY KEY,
    envelope_hash   BLOB NOT NULL UNIQUE,
    sender_id       TEXT NOT NULL,
    sender_key_id   BLOB NOT NULL,
    header          BLOB,
    header_length   INTEGER NOT NULL,
    accepted_at     INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    accepted_index  INTEGER NOT NULL,
    open_recipients INTEGER NOT NULL CHECK (open_recipients >= 0),
    purged_at       INTEGER
) WITHOUT ROWID;
CREATE INDEX envelopes_expiring ON envelopes (expires_at) WHERE open_recipients > 0;
CREATE INDEX envelopes_purgeable ON envelopes (accepted_at) WHERE open_recipients = 0 AND purged_at IS NULL;

-- A part's ciphertext is either inline (small parts, in the acceptance transaction) or a file.
CREATE TABLE parts (
    envelope_id BLOB NOT NULL REFERENCES envelopes (envelope_id),
    part_no     INTEGER NOT NULL,
    length      INTEGER NOT NULL,
    digest      BLOB NOT NULL,
    stored_inline INTEGER NOT NULL CHECK (stored_inline IN (0, 1)),
    inline_data BLOB,
    PRIMARY KEY (envelope_id, part_no)
) WITHOUT ROWID;

-- One entry per (envelope, recipient); cursor increases per recipient.
CREATE TABLE inbox (
    recipient_id TEXT NOT NULL,
    cursor       INTEGER NOT NULL,
    envelope_id  BLOB NOT NULL REFERENCES envelopes (envelope_id),
    state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'verified', 'rejected', 'expired')),
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (recipient_id, cursor),
    UNIQUE (envelope_id, recipient_id)
) WITHOUT ROWID;
CREATE INDEX inbox_open ON inbox (state) WHERE state IN ('pending', 'delivered');

-- Every receipt recorded, in the order of its sender's feed (seq increases per sender).
CREATE TABLE receipts (
    sender_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    envelope_id  BLOB NOT NULL REFERENCES envelopes (envelope_id),
    recipient_id TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('accepted', 'delivered', 'verified', 'rejected', 'expired')),
    raw          BLOB NOT NULL UNIQUE,
    recorded_at  INTEGER NOT NULL,
    log_index    INTEGER NOT NULL,
    PRIMARY KEY (sender_id, seq)
) WITHOUT ROWID;
CREATE INDEX receipts_by_envelope ON receipts (envelope_id, recipient_id);

CREATE TABLE nonces (
    key_id     BLOB NOT NULL,
    nonce      BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, nonce)
) WITHOUT ROWID;
CREATE INDEX nonces_by_expiry ON nonces (expires_at);

-- The audit log: append-only, gapless, leaves stored verbatim.
CREATE TABLE audit_log (
    idx         INTEGER PRIMARY KEY,
    leaf        BLOB NOT NULL,
    recorded_at INTEGER NOT NULL
);

CREATE TRIGGER audit_log_gapless BEFORE INSERT ON audit_log
WHEN NEW.idx IS NOT (SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log)
BEGIN
    SELECT RAISE(ABORT, 'audit log entries are appended in order, without gaps');
END;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit log entries cannot be changed');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit log entries cannot be deleted');
END;
