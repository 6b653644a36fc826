#!/usr/bin/env bash
# restore.sh: restore a CaseBridge backup into a NEW database, then check its audit log.
#
#   restore.sh --dump BACKUP/database.dump --database NAME [check options]
#   restore.sh --check-only --database NAME [check options]
#
# 1. Creates database NAME, owned by casebridge_owner (--owner), restores the dump into it in
#    one transaction (all or nothing), then applies roles.sql (beside this script) to it, so
#    that it has the same privileges as the original. An existing database is never
#    touched: restoring over the live one is not something this script does. Run it as a
#    superuser (PGUSER=postgres): the roles of deploy/postgresql/roles.sql must exist.
# 2. Checks the restored data: starts `casebridge broker serve` on it, on 127.0.0.1 with a
#    port of its own, with no witnesses and its own settings otherwise (--config). The broker
#    refuses to start unless its audit log agrees with its latest signed checkpoint (the
#    stored tree recomputed from the leaves). Then, given an auditor's or operator's keystore
#    (CASEBRIDGE_KEYSTORE, its passphrase in CASEBRIDGE_PASSPHRASE) and the log's checkpoint
#    key (CASEBRIDGE_AUDIT_LOG_KEY), `casebridge audit verify` recomputes the whole log from
#    leaf 0 and checks every signature, as a security officer would. The check broker is
#    stopped afterwards. It appends its start and stop to the restored log and signs
#    checkpoints with the broker's key: that is a log that continues the backup, and it is
#    never shown to a witness.
#
# Check options:
#   --config FILE       the broker's settings (default /etc/casebridge/broker.toml); its
#                       keystore passphrase comes from the variable its passphrase_env names
#   --app-url URL       the broker's connection to NAME (default: casebridge_app on the
#                       host and port of PGHOST and PGPORT)
#   --owner ROLE        the role that owns the restored database (default casebridge_owner)
#   --owner-url URL     the owner's connection to NAME, to apply migrations if the backup is
#                       older than this CaseBridge (default: the --owner role on that host)
#   --state DIR         the audit verifier's state directory (default: a new temporary one;
#                       an officer's real state would rightly call an older backup a rollback)
#
# The server comes from libpq's environment (PGHOST, PGPORT, PGUSER, PGPASSFILE). `casebridge`
# is found on PATH or in CASEBRIDGE_BIN. Exit status 0 only if every check passed.
set -euo pipefail
umask 077

usage() {
    echo "usage: restore.sh (--dump FILE | --check-only) --database NAME [--config FILE]" \
        "[--app-url URL] [--owner ROLE] [--owner-url URL] [--state DIR]" >&2
    exit 2
}

dump=""
check_only=0
database=""
config=/etc/casebridge/broker.toml
app_url=""
owner=casebridge_owner
owner_url=""
state=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --dump) [ "$#" -ge 2 ] || usage; dump=$2; shift 2 ;;
        --check-only) check_only=1; shift ;;
        --database) [ "$#" -ge 2 ] || usage; database=$2; shift 2 ;;
        --config) [ "$#" -ge 2 ] || usage; config=$2; shift 2 ;;
        --app-url) [ "$#" -ge 2 ] || usage; app_url=$2; shift 2 ;;
        --owner) [ "$#" -ge 2 ] || usage; owner=$2; shift 2 ;;
        --owner-url) [ "$#" -ge 2 ] || usage; owner_url=$2; shift 2 ;;
        --state) [ "$#" -ge 2 ] || usage; state=$2; shift 2 ;;
        -h | --help) usage ;;
        *) echo "restore.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
[ -n "$database" ] || usage
if [ "$check_only" -eq 0 ] && [ -z "$dump" ]; then usage; fi
if [ "$check_only" -eq 1 ] && [ -n "$dump" ]; then usage; fi
case "$database" in
    *[!A-Za-z0-9_]* | [0-9]*) echo "restore.sh: --database takes a plain name (letters, digits, _)" >&2; exit 2 ;;
esac
casebridge=${CASEBRIDGE_BIN:-$(command -v casebridge || true)}
if [ -z "$casebridge" ]; then
    echo "restore.sh: casebridge is not on PATH; set CASEBRIDGE_BIN" >&2
    exit 2
fi
[ -r "$config" ] || { echo "restore.sh: cannot read the settings file $config (--config)" >&2; exit 2; }

# A URL for role $1 on database $database, on the server libpq's environment names.
url_for() {
    local host=${PGHOST:-localhost} port=${PGPORT:-5432}
    case "$host" in
        /*) echo "postgresql://$1@/$database?host=$host&port=$port" ;;
        *:*) echo "postgresql://$1@[$host]:$port/$database" ;;
        *) echo "postgresql://$1@$host:$port/$database" ;;
    esac
}
app_url=${app_url:-$(url_for casebridge_app)}
owner_url=${owner_url:-$(url_for "$owner")}
roles_sql="$(dirname -- "$0")/roles.sql"

if [ "$check_only" -eq 0 ]; then
    [ -r "$dump" ] || { echo "restore.sh: cannot read $dump" >&2; exit 2; }
    exists=$(psql -X --no-password -d postgres -At -v ON_ERROR_STOP=1 -v name="$database" \
        <<<"SELECT count(*) FROM pg_database WHERE datname = :'name'")
    if [ "$exists" != 0 ]; then
        echo "restore.sh: database $database already exists; choose a new name" >&2
        exit 1
    fi
    createdb --no-password --encoding=UTF8 --template=template0 --owner="$owner" "$database"
    if ! pg_restore --no-password --exit-on-error --single-transaction --dbname="$database" "$dump"; then
        echo "restore.sh: the restore failed; database $database is left empty for inspection" >&2
        exit 1
    fi
    echo "restored $dump into database $database"
    if [ -r "$roles_sql" ]; then
        psql -X --no-password --quiet -v ON_ERROR_STOP=1 -v dbname="$database" -d postgres \
            -f "$roles_sql" >/dev/null
        echo "applied $roles_sql to $database"
    else
        echo "restore.sh: warning: no roles.sql beside this script; apply it to $database by hand" >&2
    fi
fi

work=$(mktemp -d)
broker_pid=""
stop_broker() {
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        for _ in $(seq 1 240); do
            kill -0 "$broker_pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    broker_pid=""
}
trap 'stop_broker; rm -rf -- "$work"' EXIT

echo "checking the audit log of $database: starting a broker on it (log: $work/broker.log)"
CASEBRIDGE_DATABASE_URL=$app_url \
CASEBRIDGE_DATABASE_OWNER_URL=$owner_url \
CASEBRIDGE_LISTEN_HOST=127.0.0.1 \
CASEBRIDGE_LISTEN_PORT=0 \
CASEBRIDGE_PUBLIC_AUTHORITY="" \
CASEBRIDGE_TLS_CERT_FILE="" \
CASEBRIDGE_TLS_KEY_FILE="" \
CASEBRIDGE_WITNESSES="" \
CASEBRIDGE_RETENTION_INTERVAL_SECONDS=86400 \
    "$casebridge" broker serve --config "$config" >"$work/url" 2>"$work/broker.log" </dev/null &
broker_pid=$!

url=""
for _ in $(seq 1 240); do
    url=$(head -n 1 "$work/url" 2>/dev/null || true)
    [ -n "$url" ] && break
    if ! kill -0 "$broker_pid" 2>/dev/null; then
        break
    fi
    sleep 0.5
done
if [ -z "$url" ]; then
    echo "restore.sh: FAILED: the broker did not start on the restored data:" >&2
    tail -n 20 "$work/broker.log" >&2
    exit 1
fi
echo "the broker's start check passed: the stored audit tree agrees with the latest checkpoint ($url)"

status=0
if [ -n "${CASEBRIDGE_KEYSTORE:-}" ] && [ -n "${CASEBRIDGE_AUDIT_LOG_KEY:-}" ]; then
    state=${state:-$work/audit-state}
    if "$casebridge" audit verify --broker "$url" --state "$state" --fetch tiles </dev/null; then
        echo "casebridge audit verify: the whole restored log verified"
    else
        status=1
        echo "restore.sh: FAILED: casebridge audit verify found problems in the restored log" >&2
    fi
else
    echo "audit verify skipped: set CASEBRIDGE_KEYSTORE (an auditor's or operator's keystore)," \
        "CASEBRIDGE_PASSPHRASE and CASEBRIDGE_AUDIT_LOG_KEY to recompute the whole log"
fi

stop_broker
if [ "$status" -eq 0 ]; then
    echo "restore check of $database: OK"
fi
exit "$status"
