#!/usr/bin/env bash
# backup.sh: one backup of a CaseBridge broker on PostgreSQL.
#
#   backup.sh --dir DIR [--keep-days N] [--with FILE]...
#
# Writes DIR/casebridge-<UTC time>/ holding
#   database.dump   pg_dump's custom format (online: one consistent snapshot, the broker
#                   keeps serving); restore it with restore.sh, which checks the audit log;
#   files/          copies of each --with FILE (the sealed broker keystore and the settings:
#                   without the keystore the broker's receipt and checkpoint keys are lost);
#   contents.txt    what was dumped (pg_restore --list: proves the dump reads back);
#   SHA256SUMS      a checksum of every file above.
# The directory appears under its final name only once complete (written as *.partial,
# synced, then renamed). Backups older than N days (default 30) are removed afterwards, the
# newest one never.
#
# The database connection comes from libpq's environment: PGHOST, PGPORT, PGDATABASE, PGUSER
# (casebridge_backup, which may read and change nothing) and PGPASSFILE or a client
# certificate. Backups hold ciphertext, receipts and the audit log, never plaintext; keep
# them with the same care as the database (mode 0700 directories, 0600 files).
set -euo pipefail
umask 077

usage() {
    echo "usage: backup.sh --dir DIR [--keep-days N] [--with FILE]..." >&2
    exit 2
}

dir=""
keep_days=30
with=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --dir) [ "$#" -ge 2 ] || usage; dir=$2; shift 2 ;;
        --keep-days) [ "$#" -ge 2 ] || usage; keep_days=$2; shift 2 ;;
        --with) [ "$#" -ge 2 ] || usage; with+=("$2"); shift 2 ;;
        -h | --help) usage ;;
        *) echo "backup.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
[ -n "$dir" ] || usage
case "$keep_days" in
    '' | *[!0-9]*) echo "backup.sh: --keep-days takes a whole number of days" >&2; exit 2 ;;
esac
: "${PGDATABASE:?set PGDATABASE (and PGHOST, PGPORT, PGUSER) to the broker database}"

mkdir -p "$dir"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
target="$dir/casebridge-$stamp"
partial="$target.partial"
if [ -e "$target" ] || [ -e "$partial" ]; then
    echo "backup.sh: $target already exists; wait a second and run again" >&2
    exit 1
fi
mkdir "$partial"
trap 'rm -rf -- "$partial"' EXIT

pg_dump --format=custom --no-password --file="$partial/database.dump"
pg_restore --list "$partial/database.dump" >"$partial/contents.txt"
for table in audit_log audit_checkpoints envelopes inbox; do
    if ! grep -Eq "TABLE DATA public $table " "$partial/contents.txt"; then
        echo "backup.sh: the dump has no data for table $table: is PGDATABASE the broker's database?" >&2
        exit 1
    fi
done

if [ "${#with[@]}" -gt 0 ]; then
    mkdir "$partial/files"
    for file in "${with[@]}"; do
        cp -p -- "$file" "$partial/files/"
    done
fi

sums=$(cd "$partial" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
printf '%s\n' "$sums" >"$partial/SHA256SUMS"
sync -f "$partial/database.dump" 2>/dev/null || sync
mv -- "$partial" "$target"
trap - EXIT
echo "backup written: $target"

# Prune: only our own directories, only complete ones, never the one just written.
find "$dir" -mindepth 1 -maxdepth 1 -type d -name 'casebridge-*' ! -name '*.partial' \
    -mtime +"$keep_days" ! -path "$target" -print0 |
    while IFS= read -r -d '' old; do
        rm -rf -- "$old"
        echo "removed old backup: $old"
    done
