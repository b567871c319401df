#!/usr/bin/env bash
# How pg_ai shares a busy machine: throughput of per-row MiniLM embeds, MiniLM array embeds, SmolLM2
# generation and MLM training steps, quiet and beside N busy loops (N = 1, 2, 4) or another pg_ai session doing
# the same work; and N concurrent sessions of per-row embeds (N = 1, 2, 4, 8, 16) together. As root, on the release build that
# scripts/demo.sh installs (or `cargo pgrx install --release`):
#
#   benches/fairness.sh                      (about 8 minutes on 2 cores)
#
# Environment: PG_AI_CLUSTER, PG_AI_PORT (default /tmp/pg_ai-fairness, 28841); FAIRNESS_ROWS (default 200);
# any server setting to compare, e.g. CANDLE_NUM_THREADS=2 (candle's barrier pool with a worker, as before) or
# FAIRNESS_OPTIONS="-c pg_ai.threads=1" (for every session); FAIRNESS_ONLY, a pattern of workload names to
# run (e.g. "generation", "embeds|sessions").
set -euo pipefail
cd "$(dirname "$0")/.."
export PG_AI_CLUSTER=${PG_AI_CLUSTER:-/tmp/pg_ai-fairness} PG_AI_PORT=${PG_AI_PORT:-28841} RUST_BACKTRACE=0
export PGOPTIONS="-c client_min_messages=warning ${FAIRNESS_OPTIONS:-}"
rows=${FAIRNESS_ROWS:-200}
db=pg_ai_fairness
sql() { scripts/cluster.sh sql -d $db "$@"; }

[ -f .models/all-MiniLM-L6-v2/model.safetensors ] || scripts/fetch-minilm.sh
[ -f .models/SmolLM2-135M-Instruct.Q4_1.gguf ] || scripts/fetch-smollm2.sh
# Restarted, so that the server has this environment (CANDLE_NUM_THREADS, say).
scripts/cluster.sh stop
scripts/cluster.sh start
scripts/cluster.sh sql -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
# Fortunes of 200-400 characters (about 60 tokens), as in the issue that asked for this benchmark.
find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' -print0 | xargs -0 cat |
    python3 -c "
import sys
for e in sys.stdin.read().split('\n%\n'):
    e = ' '.join(e.split())
    if 200 <= len(e) <= 400 and '\\\\' not in e: print(e)" | head -n 5000 > /tmp/pg_ai-fairness.txt
chmod a+r /tmp/pg_ai-fairness.txt
sql >/dev/null <<SQL
CREATE EXTENSION pg_ai;
SELECT ai_load_model('minilm', '$PWD/.models/all-MiniLM-L6-v2');
SELECT ai_load_model('smollm2', '$PWD/.models/SmolLM2-135M-Instruct.Q4_1.gguf');
CREATE TABLE fortunes (id serial, body text);
COPY fortunes (body) FROM '/tmp/pg_ai-fairness.txt';
SQL

# Each workload: a warm-up, then one timed statement; prints its rate.
per_row="SELECT count(ai_embed(body, 'minilm')) FROM (SELECT body FROM fortunes ORDER BY id LIMIT $rows) AS t"
array="SELECT count(*) FROM ai_embed((SELECT array_agg(body ORDER BY id) FROM (SELECT * FROM fortunes ORDER BY id LIMIT $rows) AS t), 'minilm')"
generate="SELECT ai_generate('Once upon a time there was a', 'smollm2', max_tokens => 64)"
# 20 MLM steps of a small BERT (as engine/benches/train.rs trains), its tokenizer trained first on the same rows.
options='{"max_steps": 20, "batch_size": 16, "max_length": 128, "hidden_size": 128, "layers": 2, "heads": 4,
          "intermediate_size": 512, "vocab_size": 2000}'
train="SELECT ai_pretrain(concat('fairness-', md5(random()::text)), 'SELECT body AS text FROM fortunes LIMIT 2000', 'mlm', '$(echo $options)') IS NOT NULL"
timed() { # workload statement, units in it -> units per second
    local ms
    ms=$(sql -c "SELECT ai_embed('warm up', 'minilm') IS NOT NULL, ai_generate('warm', 'smollm2', max_tokens => 2) IS NOT NULL" \
        -c "CREATE TEMP TABLE t0 AS SELECT clock_timestamp() AS t" -c "$1" \
        -c "SELECT round(extract(epoch FROM clock_timestamp() - t) * 1000) FROM t0" | tail -n 1)
    python3 -c "print(f'{$2 / ($ms / 1000):.1f}')"
}
workloads=("per-row embeds|$per_row|$rows|rows/s" "array embeds|$array|$rows|rows/s" "generation|$generate|64|tokens/s"
           "training|$train|20|steps/s")

others=()
start_busy() { for _ in $(seq "$1"); do (exec sh -c 'while :; do :; done') & others+=($!); done; }
start_pg_ai() { (while :; do PGAPPNAME=fairness-competitor sql -c "$1" >/dev/null 2>&1 || true; done) & others+=($!); }
stop_others() {
    for p in "${others[@]}"; do kill "$p" 2>/dev/null || true; done
    others=()
    wait 2>/dev/null || true
    scripts/cluster.sh sql -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                               WHERE application_name = 'fairness-competitor'" >/dev/null
}
trap stop_others EXIT

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); pg_ai $(git rev-parse --short HEAD)"
echo "settings: CANDLE_NUM_THREADS=${CANDLE_NUM_THREADS:-pg_ai default}; options: ${FAIRNESS_OPTIONS:-none}"
printf '%-16s %10s %10s %10s %10s %14s\n' workload quiet "busy 1" "busy 2" "busy 4" "pg_ai beside"
for w in "${workloads[@]}"; do
    IFS='|' read -r name statement units unit <<< "$w"
    [[ $name =~ ${FAIRNESS_ONLY:-.} ]] || continue
    line=$(printf '%-16s' "$name")
    quiet=$(timed "$statement" "$units"); line+=$(printf ' %10s' "$quiet")
    for n in 1 2 4; do
        start_busy "$n"; sleep 0.5
        r=$(timed "$statement" "$units"); stop_others
        line+=$(printf ' %10s' "$r ($(python3 -c "print(round(100 * $r / $quiet))")%)")
    done
    start_pg_ai "$statement"; sleep 1
    r=$(timed "$statement" "$units"); stop_others
    line+=$(printf ' %14s' "$r ($(python3 -c "print(round(100 * $r / $quiet))")%)")
    echo "$line $unit"
done

# Concurrent sessions: each warms up, waits for a common start, embeds its share row by row; the rate is all rows
# over the time from the common start to the last session's end.
[[ sessions =~ ${FAIRNESS_ONLY:-.} ]] || exit 0
echo "concurrent sessions of per-row embeds ($rows rows in all), together:"
for n in 1 2 4 8 16; do
    share=$(( rows / n ))
    ends=$(mktemp -d)
    go=$(sql -c "SELECT extract(epoch FROM clock_timestamp()) + 3 + $n * 0.3")
    for i in $(seq 0 $(( n - 1 ))); do
        sql -c "SELECT ai_embed('warm up', 'minilm') IS NOT NULL" \
            -c "SELECT pg_sleep(greatest(0, $go - extract(epoch FROM clock_timestamp())))" \
            -c "SELECT count(ai_embed(body, 'minilm')) FROM (SELECT body FROM fortunes ORDER BY id OFFSET $(( i * share )) LIMIT $share) AS t" \
            -c "SELECT extract(epoch FROM clock_timestamp())" | tail -n 1 > "$ends/$i" &
    done
    wait
    last=$(cat "$ends"/* | sort -n | tail -n 1)
    rm -rf "$ends"
    python3 -c "print(f'  {$n:2d} sessions: {$share * $n / ($last - $go):.1f} rows/s')"
done
