-- CaseBridge on PostgreSQL: the roles, the database and the privileges that keep the broker
-- from rewriting its own audit log. Run it as a superuser with psql, before the first start
-- and again after every upgrade (it is idempotent):
--
--   psql -v ON_ERROR_STOP=1 -v dbname=casebridge -f roles.sql
--
-- Roles (cluster-wide):
--   casebridge_owner   LOGIN; owns the database and its schema, applies the migrations (the
--                      broker's `database_owner_url`). Used only at start and for restores.
--   casebridge_broker  NOLOGIN; what the broker may do (the grants are in migration 0001).
--   casebridge_app     LOGIN, member of casebridge_broker: the broker's `database_url`.
--   casebridge_backup  LOGIN; reads every table, changes nothing: pg_dump (backup.sh).
-- None is a superuser or may create roles or databases. Passwords are set separately
-- (`\password casebridge_app`), or use certificate authentication in pg_hba.conf.
--
-- On the log tables (the audit log and its tree, checkpoints and cosignatures, receipts,
-- and the directory's roots, certificates, encryption keys and revocation lists) nobody but
-- the owner may UPDATE, DELETE or TRUNCATE; triggers refuse those to everyone, the owner
-- included. The revocations below apply to tables that exist, so run this again after the
-- first start has created them.

\set ON_ERROR_STOP on
\if :{?dbname}
\else
\set dbname casebridge
\endif

SELECT 'CREATE ROLE casebridge_owner LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'casebridge_owner') \gexec
SELECT 'CREATE ROLE casebridge_broker NOLOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'casebridge_broker') \gexec
SELECT 'CREATE ROLE casebridge_app LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'casebridge_app') \gexec
SELECT 'CREATE ROLE casebridge_backup LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'casebridge_backup') \gexec

ALTER ROLE casebridge_owner NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE casebridge_broker NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOLOGIN;
ALTER ROLE casebridge_app NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
ALTER ROLE casebridge_backup NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
GRANT casebridge_broker TO casebridge_app;

SELECT format('CREATE DATABASE %I OWNER casebridge_owner ENCODING ''UTF8'' TEMPLATE template0', :'dbname')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'dbname') \gexec

REVOKE ALL ON DATABASE :"dbname" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"dbname" TO casebridge_broker, casebridge_backup;

\connect :"dbname"

-- Only the owner creates objects; the others may only use what it created.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO casebridge_owner;
GRANT USAGE ON SCHEMA public TO casebridge_broker, casebridge_backup;

-- The backup role reads every table, now and after later migrations.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO casebridge_backup;
ALTER DEFAULT PRIVILEGES FOR ROLE casebridge_owner IN SCHEMA public GRANT SELECT ON TABLES TO casebridge_backup;
ALTER DEFAULT PRIVILEGES FOR ROLE casebridge_owner IN SCHEMA public
    REVOKE UPDATE, DELETE, TRUNCATE ON TABLES FROM PUBLIC;

-- The log tables: named here, and any table whose rows a CaseBridge trigger refuses to change.
DO $$
DECLARE
    log_table text;
BEGIN
    FOR log_table IN
        SELECT name FROM unnest(ARRAY[
            'audit_log', 'audit_nodes', 'audit_envelope_leaves', 'audit_checkpoints',
            'audit_cosignatures', 'receipts', 'roots', 'certificates', 'encryption_keys',
            'revocation_lists'
        ]) AS name
        WHERE to_regclass(format('public.%I', name)) IS NOT NULL
        UNION
        SELECT c.relname::text
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_proc p ON p.oid = t.tgfoid
        WHERE n.nspname = 'public' AND p.proname = 'casebridge_refuse_rewrite'
    LOOP
        EXECUTE format(
            'REVOKE UPDATE, DELETE, TRUNCATE ON public.%I FROM PUBLIC, casebridge_broker, casebridge_app, casebridge_backup',
            log_table
        );
    END LOOP;
END;
$$;
