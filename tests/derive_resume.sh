#!/usr/bin/env bash
# Nothing lost, nothing stale: a derived column (ai_derive) ends with every row derived from its current source
# after the server stops as in a crash mid-batch (pg_ctl -m immediate), after its worker is killed (SIGKILL, which
# makes the postmaster restart every backend) and after its worker is terminated, with sources changing while it
# works. With pg_ai in shared_preload_libraries the launcher starts the workers again after a restart; a
# terminated worker goes on with ai_resume_derivation. Run as root by scripts/test.sh, with pg_ai installed and the
# cluster of scripts/cluster.sh running; it puts the cluster's settings back as they were.
set -euo pipefail
cd "$(dirname "$0")/.."
name="derivations resume"
source tests/lib.sh
db() { sql -d pg_ai_derive -c "$1"; }

preload_pg_ai

sql -c "DROP DATABASE IF EXISTS pg_ai_derive WITH (FORCE)" -c "CREATE DATABASE pg_ai_derive"
sql -d pg_ai_derive -o /dev/null <<SQL
CREATE EXTENSION pg_ai;
SELECT ai_load_model('topic', '$PWD/tests/fixtures/models/bert-classifier');
CREATE TABLE notes (id int PRIMARY KEY, body text, topic text);
INSERT INTO notes SELECT i, CASE i % 3 WHEN 0 THEN 'heavy snow is expected tonight .'
                                       WHEN 1 THEN 'i love eating pasta .' ELSE 'the rugby team played well .' END
FROM generate_series(1, 6000) AS i;
SELECT ai_derive('notes', 'topic', 'body', 'classify_label', 'topic', '{"batch_size": 16}');
SQL

# Waits until the derivation has done some rows and has some left.
wait_mid_way() {
    for _ in $(seq 600); do
        [ "$(db "SELECT done > 0 AND queued > 0 FROM ai.derivation_status")" = t ] && return
        sleep 0.05
    done
    fail "the derivation was not seen mid-way"
}
# Waits until nothing is queued, then checks every row against the model called now.
wait_all_derived() {
    for _ in $(seq 1800); do
        [ "$(db "SELECT queued FROM ai.derivation_status")" = 0 ] && break
        sleep 0.1
    done
    [ "$(db "SELECT queued FROM ai.derivation_status")" = 0 ] || fail "rows are still queued: $(db "TABLE ai.derivation_status")"
    stale=$(db "SELECT count(*) FROM notes WHERE topic IS DISTINCT FROM ai_classify_label(body, 'topic')")
    [ "$stale" = 0 ] || fail "$stale rows are not derived from their current source ($1)"
    echo "all $(db "SELECT count(*) FROM notes") rows derived from their current source $1"
}
# Changes the source of a third of the rows while the worker works.
change_sources() {
    db "UPDATE notes SET body = CASE WHEN body LIKE 'heavy%' THEN 'i love eating pasta .'
                                     ELSE 'heavy snow is expected tonight .' END WHERE id % 3 = $1" >/dev/null
}

# 1. The server stops as in a crash, mid-batch, and starts again.
wait_mid_way
change_sources 0
as_postgres /usr/lib/postgresql/15/bin/pg_ctl -D "$root/data" -m immediate stop >/dev/null
scripts/cluster.sh start
wait_all_derived "after an immediate stop"
grep -q 'pg_ai: starting derivation [0-9]* in database "pg_ai_derive"' "$root/server.log" ||
    fail "the launcher did not start the derivation"

# 2. The worker is killed: the postmaster restarts every backend, and the launcher the worker.
change_sources 1
wait_mid_way
kill -9 "$(db "SELECT worker FROM ai.derivation_status")"
for _ in $(seq 300); do
    db "SELECT 1" >/dev/null 2>&1 && [ -n "$(db "SELECT worker FROM ai.derivation_status" 2>/dev/null)" ] && break
    sleep 0.1
done
wait_all_derived "after the worker was killed"

# 3. The worker is terminated: the derivation waits, without a worker, until ai_resume_derivation.
change_sources 2
wait_mid_way
db "SELECT pg_terminate_backend(worker) FROM ai.derivation_status" >/dev/null
for _ in $(seq 100); do
    [ -z "$(db "SELECT worker FROM ai.derivation_status")" ] && break
    sleep 0.1
done
[ -z "$(db "SELECT worker FROM ai.derivation_status")" ] || fail "the terminated worker still shows"
[ "$(db "SELECT queued > 0 FROM ai.derivation_status")" = t ] || fail "nothing was left queued"
db "SELECT ai_resume_derivation('notes', 'topic')" >/dev/null
wait_all_derived "after ai_resume_derivation"

db "SELECT ai_drop_derivation('notes', 'topic')" >/dev/null
sql -c "DROP DATABASE pg_ai_derive WITH (FORCE)"
echo "ok   derived columns end derived from their current source after a crash, a killed and a terminated worker"
