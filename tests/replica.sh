#!/usr/bin/env bash
# Read replicas: a model stored in the database reaches a streaming standby through WAL, and the standby
# answers with it (writing the files out once into its own data directory); registering on the standby is
# refused as any write is. Run as root by scripts/test.sh, with pg_ai installed.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=/usr/lib/postgresql/15/bin
name=replica
source tests/lib.sh
# A primary and a standby of their own, not the cluster of scripts/cluster.sh.
root=/tmp/pg_ai-replica
psql_at() { local port=$1; shift; as_postgres psql -X -q -h "$root" -p "$port" -U postgres -d postgres -At "$@"; }
stop() {
    as_postgres "$bin/pg_ctl" -D "$root/standby" -m immediate stop >/dev/null 2>&1 || true
    as_postgres "$bin/pg_ctl" -D "$root/primary" -m immediate stop >/dev/null 2>&1 || true
}
stop
rm -rf "$root"
mkdir -p "$root"
chown postgres: "$root"
trap stop EXIT
opts="-c listen_addresses='' -c unix_socket_directories=$root"
as_postgres "$bin/initdb" -D "$root/primary" -A trust -U postgres >/dev/null
RUST_BACKTRACE=0 as_postgres "$bin/pg_ctl" -D "$root/primary" -l "$root/primary.log" -w -o "-p 28818 $opts" start >/dev/null
as_postgres "$bin/pg_basebackup" -h "$root" -p 28818 -U postgres -D "$root/standby" -R
RUST_BACKTRACE=0 as_postgres "$bin/pg_ctl" -D "$root/standby" -l "$root/standby.log" -w -o "-p 28819 $opts" start >/dev/null

# Stored in the database, with its source pointing nowhere: the standby can only answer from WAL.
psql_at 28818 -v ON_ERROR_STOP=1 -o /dev/null <<SQL
CREATE EXTENSION pg_ai;
SELECT ai_load_model('topic', '$PWD/tests/fixtures/models/bert-classifier', store => true);
UPDATE ai.models SET source = '/nonexistent' WHERE name = 'topic';
SQL
lsn=$(psql_at 28818 -c "SELECT pg_current_wal_lsn()")
for _ in $(seq 100); do
    [ "$(psql_at 28819 -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'")" = t ] && break
    sleep 0.1
done
label=$(psql_at 28819 -c "SELECT ai_classify_label('grace won the tennis game .', 'topic')")
refused=$(psql_at 28819 -c "SELECT ai_load_model('x', '$PWD/tests/fixtures/models/bert-mlm')" 2>&1 || true)
written=$(find "$root/standby/pg_ai/models" -mindepth 2 -maxdepth 2 -type d -not -name ".*" 2>/dev/null | wc -l)
echo "standby answers: $label; files written out on the standby: $written model(s)"
echo "registering on the standby: $refused"
[ "$label" = sport ] && [ "$written" = 1 ] && [[ "$refused" == *"cannot execute ai_load_model() in a read-only transaction"* ]] || { echo "FAIL replica"; exit 1; }
echo "ok   replica"
