-- CaseBridge broker schema, version 2 (SQLite): the audit log's Merkle tree, its checkpoints and
-- their witness cosignatures, and which leaves name which envelope. Every table here, like
-- audit_log, is append-only: triggers refuse UPDATE, DELETE, and an INSERT over an existing row
-- (which INSERT OR REPLACE would otherwise turn into a silent delete) where a row holds more
-- than its key.

-- The tree: each leaf's row holds the hashes of every full subtree that leaf completes (RFC
-- 6962, lowest level first, its own leaf hash first), written with the leaf in one insert. Rows
-- written by schema 1 have none yet; the broker fills them once, in order, before it appends
-- (broker/storage/sqlite/audit.py), which is the only change a row can ever see.
ALTER TABLE audit_log ADD COLUMN nodes BLOB
    CHECK (nodes IS NULL OR (length(nodes) % 32 = 0 AND length(nodes) BETWEEN 32 AND 2048));

CREATE INDEX audit_log_without_nodes ON audit_log (idx) WHERE nodes IS NULL;

CREATE TRIGGER audit_log_with_nodes BEFORE INSERT ON audit_log
WHEN NEW.nodes IS NULL
BEGIN
    SELECT RAISE(ABORT, 'audit log entries are stored with their tree nodes');
END;

DROP TRIGGER audit_log_no_update;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
WHEN OLD.nodes IS NOT NULL OR NEW.nodes IS NULL
  OR NEW.idx IS NOT OLD.idx OR NEW.leaf IS NOT OLD.leaf OR NEW.recorded_at IS NOT OLD.recorded_at
BEGIN
    SELECT RAISE(ABORT, 'audit log entries cannot be changed');
END;

-- Which leaves name which envelope, for tracing one referral through the log. Each envelope is
-- filed under the index of the first leaf naming it (its acceptance), and its leaves under that
-- index: a new leaf's row lands at the end of audit_envelope_leaves, and only an envelope's
-- first leaf writes at a random place (audit_envelopes). Readers parse every leaf found and
-- drop any that does not name the envelope.
CREATE TABLE audit_envelopes (
    envelope_id BLOB PRIMARY KEY,
    first_idx   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER audit_envelopes_written_once BEFORE INSERT ON audit_envelopes
WHEN EXISTS (SELECT 1 FROM audit_envelopes WHERE envelope_id = NEW.envelope_id)
BEGIN
    SELECT RAISE(ABORT, 'audit envelope entries are written once');
END;

CREATE TRIGGER audit_envelopes_no_update BEFORE UPDATE ON audit_envelopes
BEGIN
    SELECT RAISE(ABORT, 'audit envelope entries cannot be changed');
END;

CREATE TRIGGER audit_envelopes_no_delete BEFORE DELETE ON audit_envelopes
BEGIN
    SELECT RAISE(ABORT, 'audit envelope entries cannot be deleted');
END;

-- A row is all key, so rewriting one with INSERT OR REPLACE changes nothing.
CREATE TABLE audit_envelope_leaves (
    first_idx INTEGER NOT NULL,
    idx       INTEGER NOT NULL,
    PRIMARY KEY (first_idx, idx)
) WITHOUT ROWID;

CREATE TRIGGER audit_envelope_leaves_no_update BEFORE UPDATE ON audit_envelope_leaves
BEGIN
    SELECT RAISE(ABORT, 'audit envelope index entries cannot be changed');
END;

CREATE TRIGGER audit_envelope_leaves_no_delete BEFORE DELETE ON audit_envelope_leaves
BEGIN
    SELECT RAISE(ABORT, 'audit envelope index entries cannot be deleted');
END;

-- Every checkpoint the broker signed, in order; the tree size never goes down. `note` is the
-- signed note as the broker signed it (the log signature only).
CREATE TABLE audit_checkpoints (
    seq       INTEGER PRIMARY KEY,
    size      INTEGER NOT NULL CHECK (size >= 0),
    root_hash BLOB NOT NULL CHECK (length(root_hash) = 32),
    note      BLOB NOT NULL,
    signed_at INTEGER NOT NULL
);

CREATE TRIGGER audit_checkpoints_in_order BEFORE INSERT ON audit_checkpoints
WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_checkpoints)
  OR NEW.size < (SELECT COALESCE(MAX(size), 0) FROM audit_checkpoints)
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are appended in order, and the tree never shrinks');
END;

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints cannot be changed');
END;

CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints cannot be deleted');
END;

-- Witness cosignatures (c2sp.org/tlog-cosignature), each verified before it is stored: `line`
-- is the signature line to append to the checkpoint's note.
CREATE TABLE audit_cosignatures (
    checkpoint_seq INTEGER NOT NULL REFERENCES audit_checkpoints (seq),
    witness        TEXT NOT NULL,
    line           TEXT NOT NULL,
    cosigned_at    INTEGER NOT NULL,
    received_at    INTEGER NOT NULL,
    PRIMARY KEY (checkpoint_seq, witness)
) WITHOUT ROWID;

CREATE TRIGGER audit_cosignatures_written_once BEFORE INSERT ON audit_cosignatures
WHEN EXISTS (
    SELECT 1 FROM audit_cosignatures WHERE checkpoint_seq = NEW.checkpoint_seq AND witness = NEW.witness
)
BEGIN
    SELECT RAISE(ABORT, 'audit cosignatures are written once per witness and checkpoint');
END;

CREATE TRIGGER audit_cosignatures_no_update BEFORE UPDATE ON audit_cosignatures
BEGIN
    SELECT RAISE(ABORT, 'audit cosignatures cannot be changed');
END;

CREATE TRIGGER audit_cosignatures_no_delete BEFORE DELETE ON audit_cosignatures
BEGIN
    SELECT RAISE(ABORT, 'audit cosignatures cannot be deleted');
END;
