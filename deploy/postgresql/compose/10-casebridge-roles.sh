#!/bin/sh
# Run once by the postgres image, when deploy/compose.yaml's database volume is first
# initialised: the roles and the database of roles.sql, then each login role's password
# from its compose secret (read by psql itself, so it is on no command line).
# CASEBRIDGE_ROLES_SQL and CASEBRIDGE_SECRETS_DIR default to where compose.yaml mounts them.
set -eu
roles_sql=${CASEBRIDGE_ROLES_SQL:-/casebridge/roles.sql}
secrets=${CASEBRIDGE_SECRETS_DIR:-/run/secrets}

psql -X -q -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v dbname=casebridge -f "$roles_sql"

for role in casebridge_owner casebridge_app casebridge_backup; do
    if [ ! -s "$secrets/${role}_password" ]; then
        echo "no password for $role: create the secret file ${role}_password" >&2
        exit 1
    fi
    psql -X -q -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -v role="$role" <<SQL
\\set password \`cat "$secrets/${role}_password"\`
ALTER ROLE :"role" PASSWORD :'password';
SQL
done
