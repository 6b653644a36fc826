-- CaseBridge broker schema, version 2 (PostgreSQL): the audit log's Merkle tree, its checkpoints
-- and their witness cosignatures, and which leaves name which envelope (as SQLite's 0002). Every
-- table here, like audit_log, is append-only: triggers refuse UPDATE, DELETE and TRUNCATE, the
-- primary keys refuse a second row with the same key, and the broker's role gets only SELECT
-- and INSERT on them.

-- Every full-subtree hash of the RFC 6962 tree over audit_log.leaf: node (level, idx) covers
-- leaves [idx << level, (idx + 1) << level); level 0 holds the leaf hashes. Each node is
-- written in the transaction that appends the leaf completing it.
CREATE TABLE audit_nodes (
    level integer NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx   bigint NOT NULL CHECK (idx >= 0),
    hash  bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- The leaves that name each envelope, for tracing one referral through the log.
CREATE TABLE audit_envelope_leaves (
    envelope_id bytea NOT NULL,
    idx         bigint NOT NULL REFERENCES audit_log (idx),
    PRIMARY KEY (envelope_id, idx)
);

-- Every checkpoint the broker signed, in order; the tree size never goes down.
CREATE TABLE audit_checkpoints (
    seq       bigint PRIMARY KEY CHECK (seq >= 0),
    size      bigint NOT NULL CHECK (size >= 0),
    root_hash bytea NOT NULL CHECK (length(root_hash) = 32),
    note      bytea NOT NULL,
    signed_at bigint NOT NULL
);

CREATE FUNCTION casebridge_audit_checkpoints_in_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq IS DISTINCT FROM (SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_checkpoints)
       OR NEW.size < (SELECT COALESCE(MAX(size), 0) FROM audit_checkpoints) THEN
        RAISE EXCEPTION 'audit checkpoints are appended in order, and the tree never shrinks'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER audit_checkpoints_in_order BEFORE INSERT ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION casebridge_audit_checkpoints_in_order();

-- Witness cosignatures (c2sp.org/tlog-cosignature), each verified before it is stored: `line`
-- is the signature line to append to the checkpoint's note.
CREATE TABLE audit_cosignatures (
    checkpoint_seq bigint NOT NULL REFERENCES audit_checkpoints (seq),
    witness        text NOT NULL,
    line           text NOT NULL,
    cosigned_at    bigint NOT NULL,
    received_at    bigint NOT NULL,
    PRIMARY KEY (checkpoint_seq, witness)
);

CREATE TRIGGER audit_nodes_no_rewrite BEFORE UPDATE OR DELETE ON audit_nodes
    FOR EACH ROW EXECUTE FUNCTION casebridge_refuse_rewrite();
CREATE TRIGGER audit_nodes_no_truncate BEFORE TRUNCATE ON audit_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION casebridge_refuse_rewrite();
CREATE TRIGGER audit_envelope_leaves_no_rewrite BEFORE UPDATE OR DELETE ON audit_envelope_leaves
    FOR EACH ROW EXECUTE FUNCTION casebridge_refuse_rewrite();
CREATE TRIGGER audit_envelope_leaves_no_truncate BEFORE TRUNCATE ON audit_envelope_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION casebridge_refuse_rewrite();
CREATE TRIGGER audit_checkpoints_no_rewrite BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION casebridge_refuse_rewrite();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION casebridge_refuse_rewrite();
CREATE TRIGGER audit_cosignatures_no_rewrite BEFORE UPDATE OR DELETE ON audit_cosignatures
    FOR EACH ROW EXECUTE FUNCTION casebridge_refuse_rewrite();
CREATE TRIGGER audit_cosignatures_no_truncate BEFORE TRUNCATE ON audit_cosignatures
    FOR EACH STATEMENT EXECUTE FUNCTION casebridge_refuse_rewrite();

GRANT SELECT, INSERT ON audit_nodes, audit_envelope_leaves, audit_checkpoints, audit_cosignatures
    TO casebridge_broker;
