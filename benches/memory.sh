#!/usr/bin/env bash
# Memory of N backends that each use the same model: resident (RSS) and proportional (PSS, shared pages
# divided among the processes sharing them) per backend and in total, from /proc/<pid>/smaps_rollup.
#   benches/memory.sh [backends] [model directory]     (default 8, .models/all-MiniLM-L6-v2)
#   PG_AI_MERGE=1 benches/memory.sh                    (with pg_ai.merge_memory = on; needs KSM running:
#                                                       echo 1 > /sys/kernel/mm/ksm/run, as root)
# Uses the cluster of scripts/cluster.sh (PG_AI_CLUSTER, PG_AI_PORT), with pg_ai installed.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-8}
model=${2:-$PWD/.models/all-MiniLM-L6-v2}
db=pg_ai_memory
psql_db() { scripts/cluster.sh psql -q -At -d $db "$@"; }
scripts/cluster.sh psql -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql_db -c "CREATE EXTENSION pg_ai" -c "SELECT ai_load_model('m', '$model')" >/dev/null
# Each session embeds once, then waits while its memory is read.
pids=()
for i in $(seq "$n"); do
    PGOPTIONS="-c pg_ai.merge_memory=${PG_AI_MERGE:-0}" psql_db -c "SELECT pg_backend_pid(), array_length(ai_embed('warm up number $i', 'm'), 1)" \
        -c "SELECT pg_sleep(30)" > "/tmp/pg_ai-memory-$i.out" 2>&1 &
    pids+=($!)
done
sleep 8
if [ "${PG_AI_MERGE:-}" = 1 ]; then
    # KSM merges in the background: wait for two full scans after the models loaded.
    scans=$(cat /sys/kernel/mm/ksm/full_scans)
    while [ "$(cat /sys/kernel/mm/ksm/full_scans)" -lt $((scans + 2)) ]; do sleep 1; done
fi
backends=$(psql_db -c "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE datname = '$db' AND query LIKE 'SELECT pg_sleep%'")
total_rss=0; total_pss=0; count=0
for pid in $backends; do
    rss=$(awk '/^Rss:/{print $2}' "/proc/$pid/smaps_rollup"); pss=$(awk '/^Pss:/{print $2}' "/proc/$pid/smaps_rollup")
    total_rss=$((total_rss + rss)); total_pss=$((total_pss + pss)); count=$((count + 1))
done
echo "$count backends with $(basename "$model") loaded: RSS $((total_rss / count / 1024)) MB and PSS $((total_pss / count / 1024)) MB each on average; total RSS $((total_rss / 1024)) MB, PSS $((total_pss / 1024)) MB"
psql_db -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$db' AND pid <> pg_backend_pid()" >/dev/null
wait "${pids[@]}" 2>/dev/null || true
rm -f /tmp/pg_ai-memory-*.out
scripts/cluster.sh psql -q -c "DROP DATABASE $db"
