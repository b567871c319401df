#!/usr/bin/env bash
# What a derived column (ai_derive) costs writers and how fast its worker drains the backlog, on a BERT-base-size
# classifier (benches/families.py's random bert-base), in one sitting:
#   - INSERT of ROWS rows: into a plain table, into one with a derived column (its worker paused, so that only the
#     queueing is timed), and with a synchronous trigger that classifies each row (SYNC_ROWS rows, per row);
#   - the backlog of DRAIN_ROWS rows drained by the worker, against the array form (ai_classify_label over text[])
#     on the same rows;
#   - COPY of COPY_ROWS short rows into a table derived by a tiny classifier: the worker's resident memory while
#     it drains them.
# As root, on a release build (`cargo pgrx install --release`):
#
#   PYTHON=python-with-torch benches/derive.sh
#
# Environment: PG_AI_CLUSTER, PG_AI_PORT (default /tmp/pg_ai-derive, 28842); ROWS (10000), SYNC_ROWS (200),
# DRAIN_ROWS (2000), COPY_ROWS (100000).
set -euo pipefail
cd "$(dirname "$0")/.."
export PG_AI_CLUSTER=${PG_AI_CLUSTER:-/tmp/pg_ai-derive} PG_AI_PORT=${PG_AI_PORT:-28842} RUST_BACKTRACE=0
export PGOPTIONS="-c client_min_messages=warning"
rows=${ROWS:-10000} sync_rows=${SYNC_ROWS:-200} drain_rows=${DRAIN_ROWS:-2000} copy_rows=${COPY_ROWS:-100000}
db=pg_ai_derive_bench
sql() { scripts/cluster.sh sql -d $db "$@"; }
now_ms() { date +%s%3N; }
# Milliseconds that statement $1 takes, the best of three (each on a fresh table made by $2).
best_of_three() {
    best=
    for _ in 1 2 3; do
        sql -c "$2" >/dev/null
        started=$(now_ms)
        sql -c "$1" >/dev/null
        took=$(($(now_ms) - started))
        [ -z "$best" ] || [ "$took" -lt "$best" ] && best=$took
    done
    echo "$best"
}
# Waits in one session (a connection per poll would take CPU from the worker) until nothing is queued.
wait_drained() {
    sql -c "DO \$\$ BEGIN
                WHILE EXISTS (SELECT FROM ai.derivation_queue) LOOP PERFORM pg_sleep(0.2); END LOOP;
            END \$\$" >/dev/null
}

model=.models/bench-families/bert-base
[ -f .models/all-MiniLM-L6-v2/tokenizer.json ] || scripts/fetch-minilm.sh
[ -f "$model/config.json" ] || "${PYTHON:-python3}" benches/families.py make .models/bench-families .models/all-MiniLM-L6-v2
chmod -R a+rX "$model"   # the server reads it as its own user
scripts/cluster.sh start >/dev/null
scripts/cluster.sh sql -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
sql -o /dev/null <<SQL
CREATE EXTENSION pg_ai;
SELECT ai_load_model('base', '$PWD/$model');
SELECT ai_load_model('tiny', '$PWD/tests/fixtures/models/bert-classifier');
CREATE FUNCTION texts(n int) RETURNS TABLE (id int, body text) LANGUAGE sql AS \$\$
    SELECT i, (ARRAY['the cat', 'alice', 'bob', 'the team'])[i % 4 + 1] || ' ' ||
              (ARRAY['sat in', 'ran to', 'looked at', 'found'])[i / 4 % 4 + 1] || ' ' ||
              (ARRAY['the park', 'paris', 'the river', 'a new film'])[i / 16 % 4 + 1] || ' number ' || i || ' .'
    FROM generate_series(1, n) AS i
\$\$;
CREATE FUNCTION label_row() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    NEW.topic := ai_classify_label(NEW.body, 'base');
    RETURN NEW;
END \$\$;
SQL
echo "== $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)"

fresh="SELECT ai_drop_derivation(\"table\", target) FROM ai.derivation_status;
       DROP TABLE IF EXISTS t; CREATE TABLE t (id int PRIMARY KEY, body text, topic text)"
plain=$(best_of_three "INSERT INTO t (id, body) SELECT * FROM texts($rows)" "$fresh")
derived=$(best_of_three "INSERT INTO t (id, body) SELECT * FROM texts($rows)" \
    "$fresh; SELECT ai_derive('t', 'topic', 'body', 'classify_label', 'base'); SELECT ai_pause_derivation('t', 'topic')")
sync=$(best_of_three "INSERT INTO t (id, body) SELECT * FROM texts($sync_rows)" \
    "$fresh; CREATE TRIGGER label BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION label_row()")
echo "INSERT of $rows rows: plain $plain ms; with a derived column $derived ms ($(awk "BEGIN {printf \"%.2f\", $derived / $plain}")x);" \
     "with a synchronous trigger $(awk "BEGIN {printf \"%.1f\", $sync / $sync_rows}") ms a row" \
     "($sync ms for $sync_rows rows, so about $(awk "BEGIN {printf \"%.0f\", $sync / $sync_rows * $rows / 1000}") s for $rows)"

# The backlog: rows queued by an INSERT, drained by the worker; the array form over the same rows. Each side
# loads the model once in its own process (a new connection; the worker at its first batch).
sql -c "$fresh" -c "INSERT INTO t (id, body) SELECT * FROM texts($drain_rows)" >/dev/null
started=$(now_ms)
sql -c "SELECT ai_classify_label(array_agg(body ORDER BY id), 'base') FROM t" >/dev/null
array_ms=$(($(now_ms) - started))
sql -c "$fresh" -c "SELECT ai_derive('t', 'topic', 'body', 'classify_label', 'base')" >/dev/null
started=$(now_ms)
sql -c "INSERT INTO t (id, body) SELECT * FROM texts($drain_rows)" >/dev/null
wait_drained
drain_ms=$(($(now_ms) - started))
wrong=$(sql -c "SELECT count(*) FROM t WHERE topic IS DISTINCT FROM ai_classify_label(body, 'base')")
[ "$wrong" = 0 ] || echo "WARNING: $wrong rows differ from ai_classify_label"
array_rate=$(awk "BEGIN {printf \"%.1f\", $drain_rows / $array_ms * 1000}")
drain_rate=$(awk "BEGIN {printf \"%.1f\", $drain_rows / $drain_ms * 1000}")
echo "backlog of $drain_rows rows: the worker drains $drain_rate rows/s, the array form classifies $array_rate rows/s" \
     "($(awk "BEGIN {printf \"%.2f\", $drain_rate / $array_rate}")x)"
sql -c "SELECT ai_drop_derivation('t', 'topic')" >/dev/null

# COPY of many short rows into a table derived by a tiny model: the worker's resident memory as it drains them.
sql -c "$fresh" -c "SELECT ai_derive('t', 'topic', 'body', 'classify_label', 'tiny')" >/dev/null
sql -c "COPY t (id, body) FROM PROGRAM 'seq $copy_rows | sed \"s/.*/&\t the team found paris number & ./\"'" >/dev/null
worker=$(sql -c "SELECT worker FROM ai.derivation_status WHERE \"table\" = 't'::regclass")
samples=()
while [ "$(sql -c "SELECT queued FROM ai.derivation_status WHERE \"table\" = 't'::regclass")" != 0 ]; do
    samples+=("$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$worker/status")")
    sleep 2
done
echo "COPY of $copy_rows rows: the worker's RSS while draining, every 2 s (MB): ${samples[*]}"
sql -c "SELECT ai_drop_derivation('t', 'topic')" >/dev/null
scripts/cluster.sh sql -c "DROP DATABASE $db WITH (FORCE)" >/dev/null
