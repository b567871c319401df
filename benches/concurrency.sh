#!/usr/bin/env bash
# Many connections at once: 16 sessions each make 200 mixed calls (embed, fill-mask, classify, generate,
# translate) on the fixture models, through pgbench. Passes when every call succeeds, the server log has
# no ERROR, FATAL or PANIC from the run, and the postmaster did not restart.
#   benches/concurrency.sh [clients] [calls per client]
# Uses the cluster of scripts/cluster.sh (PG_AI_CLUSTER, PG_AI_PORT), with pg_ai installed.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-16}
calls=${2:-200}
name=concurrency
source tests/lib.sh
log="$root/server.log"
db=pg_ai_concurrency
fixtures="$PWD/tests/fixtures/models"

scripts/cluster.sh psql -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
scripts/cluster.sh psql -q -d $db -v ON_ERROR_STOP=1 -o /dev/null <<SQL
CREATE EXTENSION pg_ai;
SELECT ai_load_model('topic', '$fixtures/bert-classifier');
SELECT ai_load_model('mlm', '$fixtures/bert-mlm');
SELECT ai_load_model('gpt2', '$fixtures/gpt2');
SELECT ai_load_model('t5', '$fixtures/t5');
SQL
before_pid=$(postmaster_pid)
log_start=$(stat -c %s "$log")
# Two compute threads per backend would oversubscribe the cores sixteen times over.
out=$(PGOPTIONS="-c pg_ai.threads=1" runuser -u postgres -- /usr/lib/postgresql/15/bin/pgbench \
    -h "$root" -p "$port" -U postgres -n -c "$clients" -j 2 -t "$calls" \
    -f benches/pgbench/embed.sql -f benches/pgbench/fill_mask.sql -f benches/pgbench/classify.sql \
    -f benches/pgbench/generate.sql -f benches/pgbench/translate.sql $db 2>&1) || { echo "$out"; exit 1; }
echo "$out" | grep -E "^(number of (clients|transactions actually processed|failed)|latency average|tps)"
problems=$(tail -c +"$((log_start + 1))" "$log" | grep -E "ERROR|FATAL|PANIC|terminated by signal" || true)
processed=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
failed=0
if [ "$processed" != "$((clients * calls))" ]; then
    echo "FAIL: $processed of $((clients * calls)) calls completed"; failed=1
fi
if [ -n "$problems" ]; then
    echo "FAIL: the server log has errors:"; echo "$problems" | head -20; failed=1
fi
if [ "$(postmaster_pid)" != "$before_pid" ]; then
    echo "FAIL: the postmaster restarted"; failed=1
fi
scripts/cluster.sh psql -q -c "DROP DATABASE $db"
[ $failed = 0 ] && echo "ok   $clients sessions x $calls mixed calls, no errors in the server log"
exit $failed
