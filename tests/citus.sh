#!/usr/bin/env bash
# pg_ai on Citus: a coordinator and two workers on loopback, the second added after models exist. Models reach
# every node through ai_distribute_models's reference tables (registered, trained, granted, dropped on the
# coordinator); reads of a distributed table run the model on the workers (EXPLAIN shows the call in their
# tasks) and answer as a local table does, from each worker's cache; a column fills through ai_fill, WITH ...
# UPDATE and an INSERT trigger; training (in the call and in a job) reads a distributed table; derived columns are
# refused; DROP EXTENSION ... CASCADE leaves nothing behind. Citus is built
# from ../shared/vendor when the server does not have it (never copied into this repository); without either
# the test says that it skipped. Run as root by scripts/test.sh, with pg_ai installed; CITUS_KEEP=1 leaves the
# cluster running.
set -euo pipefail
cd "$(dirname "$0")/.."
name=citus
bin=/usr/lib/postgresql/15/bin
root=/tmp/pg_ai-citus
as_postgres() { runuser -u postgres -- "$@"; }
export PGOPTIONS="-c client_min_messages=warning"

if [ ! -f "$(/usr/bin/pg_config --sharedir)/extension/citus.control" ]; then
    tarball=$(ls ../shared/vendor/citus-*.tar.gz 2>/dev/null | head -n 1 || true)
    if [ -z "$tarball" ]; then
        echo "SKIP $name: Citus is not installed and ../shared/vendor has no Citus source"
        exit 0
    fi
    patch=${tarball%.tar.gz}-pg15-compat.patch
    # Built once per tarball and patch, outside the repository (a few minutes on 2 cores).
    build=/tmp/pg_ai-vendor/$(cat "$tarball" "$patch" 2>/dev/null | sha256sum | cut -c1-16)
    if [ ! -f "$build/done" ]; then
        scripts/apt-install.sh patch liblz4-dev libzstd-dev libcurl4-openssl-dev libkrb5-dev
        rm -rf "$build" && mkdir -p "$build"
        tar -xzf "$tarball" -C "$build" --strip-components=1
        # PostgreSQL 15's latest minor releases export a function Citus 13.2.2 also defines.
        [ ! -f "$patch" ] || patch -s -d "$build" -p1 <"$patch"
        (cd "$build" && ./configure -q PG_CONFIG=/usr/bin/pg_config >/dev/null && make -s -j2 >/dev/null 2>&1)
        touch "$build/done"
    fi
    make -s -C "$build" install >/dev/null
fi

nodes=(coordinator worker1 worker2)
ports=(28850 28851 28852)
stop() {
    for n in "${nodes[@]}"; do as_postgres "$bin/pg_ctl" -D "$root/$n" -m immediate stop >/dev/null 2>&1 || true; done
}
fail() { echo "FAIL $name: $*"; tail -n 20 "$root"/*.log; exit 1; }
# psql on a node (0: the coordinator): bare values, stopping at the first error.
on() { local i=$1; shift; as_postgres psql -X -q -At -v ON_ERROR_STOP=1 -h "$root" -p "${ports[$i]}" -U postgres "$@"; }
# The SQLSTATE and message of a statement that must fail on the coordinator.
error_of() {
    on 0 -c "DO \$\$ BEGIN EXECUTE \$q\$$1\$q\$; EXCEPTION WHEN OTHERS THEN RAISE WARNING '%: %', SQLSTATE, SQLERRM; END \$\$" \
        2>&1 | sed -n 's/^WARNING:  //p'
}
stop
rm -rf "$root"
mkdir -p "$root"
chown postgres: "$root"
trap stop EXIT
[ -z "${CITUS_KEEP:-}" ] || trap - EXIT
for i in 0 1 2; do
    as_postgres "$bin/initdb" -D "$root/${nodes[$i]}" -A trust -U postgres >/dev/null
    # Citus commits writes to reference tables on every node with two-phase commit.
    opts="-c listen_addresses=127.0.0.1 -c unix_socket_directories=$root -c shared_preload_libraries=citus"
    RUST_BACKTRACE=0 as_postgres "$bin/pg_ctl" -D "$root/${nodes[$i]}" -l "$root/${nodes[$i]}.log" -w \
        -o "-p ${ports[$i]} $opts -c max_prepared_transactions=20" start >/dev/null
    on "$i" -c "CREATE EXTENSION citus"
done
on 0 -o /dev/null <<SQL
SELECT citus_set_coordinator_host('127.0.0.1', ${ports[0]});
SELECT citus_add_node('127.0.0.1', ${ports[1]});
-- Created on the workers too, by Citus.
CREATE EXTENSION pg_ai;
CREATE ROLE alice LOGIN;
SELECT ai_load_model('topic', '$PWD/tests/fixtures/models/bert-classifier', store => true);
SQL

# Only the catalog's owner distributes it.
refused=$(error_of "SET ROLE alice; SELECT ai_distribute_models()")
[ "$refused" = "42501: must be the owner of pg_ai's catalog to distribute it" ] || fail "alice distributed: $refused"
# A worker's own models would be hidden behind the reference tables: refused until they are gone.
on 1 -o /dev/null -c "SELECT ai_load_model('own', '$PWD/tests/fixtures/models/bert-classifier', store => true)"
refused=$(error_of "SELECT ai_distribute_models()")
[ "$refused" = "55000: worker 127.0.0.1:${ports[1]} has 1 model(s) of its own" ] ||
    fail "a worker's own model did not stop the distribution: $refused"
on 1 -o /dev/null -c "SELECT ai_drop_model('own')"
[ "$(on 0 -c "SELECT ai_distribute_models()")" = t ] || fail "the catalog was not distributed"
[ "$(on 0 -c "SELECT ai_distribute_models()")" = f ] || fail "a second ai_distribute_models did something"
# The model registered before reaches the worker as data.
[ "$(on 1 -c "SELECT ai_classify_label('grace won the tennis game .', 'topic')")" = sport ] ||
    fail "worker 1 does not answer with the coordinator's model"

# Reads: the same rows in a distributed and a local table.
on 0 -o /dev/null <<'SQL'
CREATE TABLE notes (id int PRIMARY KEY, body text, topic text);
SELECT create_distributed_table('notes', 'id');
CREATE TABLE local_notes (id int PRIMARY KEY, body text, topic text);
INSERT INTO local_notes (id, body)
SELECT i, replace(t, '{x}', x)
FROM (VALUES (1, 'alice is eating {x} .'), (2, 'we cooked {x} for dinner .'), (3, 'bob won the {x} game .'),
             (4, 'the {x} team played well .')) AS templates (k, t),
     unnest(ARRAY['bread', 'soup', 'tennis', 'golf']) WITH ORDINALITY AS xs (x, n),
     LATERAL (SELECT (k - 1) * 4 + n::int AS i) AS ids;
INSERT INTO notes SELECT * FROM local_notes;
GRANT SELECT, INSERT, UPDATE ON notes, local_notes TO alice;
SQL
# The label and every label's score of the rows both tables have.
answers() {
    on 0 -c "SELECT string_agg(answer, '; ' ORDER BY answer) FROM (
                 SELECT id || ' ' || ai_classify_label(body, '$2') || ' ' || ai_classify(body, '$2')::text AS answer
                 FROM $1 WHERE id <= 16) AS answers"
}
distributed=$(answers notes topic)
[ "$distributed" = "$(answers local_notes topic)" ] && [ -n "$distributed" ] ||
    fail "the distributed table answers otherwise than the local one: $distributed"
plan=$(on 0 -c "EXPLAIN (VERBOSE, COSTS OFF) SELECT ai_classify_label(body, 'topic') FROM notes")
task="Query: SELECT .*ai_classify_label\(body, 'topic'::text\).* FROM public.notes_[0-9]+ notes"
grep -q "Task Count: 32" <<<"$plan" && grep -Eq "$task" <<<"$plan" ||
    fail "the call does not run in the workers' tasks: $plan"
# Each worker's backend keeps the model: within one session (one connection per worker), the second query's
# calls go on counting from the first's.
on 0 -c "CREATE FUNCTION calls_after_classifying(body text) RETURNS bigint LANGUAGE plpgsql AS \$\$
         BEGIN
             PERFORM ai_classify_label(body, 'topic');
             RETURN (SELECT calls FROM ai_loaded_models() WHERE name = 'topic');
         END \$\$"
query="SELECT max(calls_after_classifying(body)) FROM notes"
read -r first second <<<"$(on 0 -c "SET citus.max_adaptive_executor_pool_size = 1" -c "$query" -c "$query" | tr '\n' ' ')"
echo "calls counted by the workers' cached models: $first after one query, $second after two"
[ "$second" -gt "$first" ] || fail "the workers loaded the model again"

# Writes: Citus refuses a model call with a column in UPDATE; ai_fill computes the values in a query that Citus
# runs on the workers, and updates from it (as does the WITH ... UPDATE the README shows).
plain=$(error_of "UPDATE notes SET topic = ai_classify_label(body, 'topic')")
[ "$plain" = "0A000: STABLE functions used in UPDATE queries cannot be called with column references" ] ||
    fail "a plain UPDATE: $plain"
filled=$(on 0 -c "SELECT ai_fill('notes', 'topic', 'body', 'classify_label', 'topic')")
[ "$filled" = 16 ] || fail "ai_fill wrote $filled rows of 16"
filled=$(on 0 -c "SELECT string_agg(id || ' ' || topic, '; ' ORDER BY id) FROM notes")
expected=$(on 0 -c "SELECT string_agg(id || ' ' || ai_classify_label(body, 'topic'), '; ' ORDER BY id) FROM local_notes")
[ "$filled" = "$expected" ] || fail "ai_fill wrote $filled, not $expected"
on 0 -o /dev/null <<'SQL'
UPDATE notes SET topic = NULL;
WITH labelled AS (SELECT id, ai_classify_label(body, 'topic') AS topic FROM notes)
UPDATE notes SET topic = labelled.topic FROM labelled WHERE notes.id = labelled.id;
SQL
filled=$(on 0 -c "SELECT string_agg(id || ' ' || topic, '; ' ORDER BY id) FROM notes")
[ "$filled" = "$expected" ] || fail "WITH ... UPDATE filled $filled, not $expected"
# An INSERT trigger, which Citus runs on the workers' shards.
on 0 -o /dev/null <<'SQL'
CREATE FUNCTION label_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.topic := ai_classify_label(NEW.body, 'topic');
    RETURN NEW;
END $$;
SET citus.enable_unsafe_triggers = on;
CREATE TRIGGER label_note BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION label_note();
INSERT INTO notes (id, body) VALUES (101, 'carol won the rugby game .'), (102, 'we cooked pasta for dinner .');
SQL
inserted=$(on 0 -c "SELECT string_agg(id || ' ' || topic, '; ' ORDER BY id) FROM notes WHERE id > 100")
expected=$(on 0 -c "SELECT string_agg(n || ' ' || ai_classify_label(b, 'topic'), '; ' ORDER BY n)
                    FROM (VALUES (101, 'carol won the rugby game .'), (102, 'we cooked pasta for dinner .')) AS v (n, b)")
[ "$inserted" = "$expected" ] || fail "the trigger labelled $inserted, not $expected"
derive=$(error_of "SELECT ai_derive('notes', 'topic', 'body', 'classify_label', 'topic')")
[ "$derive" = "0A000: derived columns are not supported on Citus tables such as public.notes" ] ||
    fail "ai_derive on a distributed table: $derive"

# Training reads a distributed table; the trained model (private to its owner until granted) is on every node.
on 0 -o /dev/null <<SQL
SELECT ai_load_model('base', '$PWD/tests/fixtures/models/bert-mlm', store => true);
CREATE TABLE labelled (id bigserial PRIMARY KEY, body text, topic text);
SELECT create_distributed_table('labelled', 'id');
INSERT INTO labelled (body, topic)
SELECT replace(replace(t, '{n}', n), '{x}', x), topic
FROM unnest(ARRAY['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi']) AS n,
     (VALUES ('{n} is eating {x} .', 'food'), ('we cooked {x} for dinner .', 'food'), ('i love eating {x} .', 'food'),
             ('{n} is playing {x} .', 'sport'), ('{n} won the {x} game .', 'sport'), ('the {x} team played well .', 'sport'))
         AS templates (t, topic),
     LATERAL (SELECT x FROM unnest(CASE topic WHEN 'food' THEN ARRAY['bread', 'cheese', 'soup', 'pasta']
                                             ELSE ARRAY['football', 'tennis', 'golf', 'rugby'] END) AS x) AS xs;
SELECT ai_finetune('trained', 'base', 'labelled', 'text-classification',
                   '{"text_column": "body", "label_column": "topic", "epochs": 3, "learning_rate": 1e-3,
                     "batch_size": 8, "test_size": 0.2}');
SQL
rows=$(on 0 -c "SELECT training->'metrics'->>'examples' FROM ai.models WHERE name = 'trained'")
[ "$rows" = 192 ] || fail "training read $rows rows of the distributed table's 192"
distributed=$(answers notes trained)
[ "$distributed" = "$(answers local_notes trained)" ] ||
    fail "the trained model answers otherwise on the workers: $distributed"
[ "$(on 0 -c "SELECT count(DISTINCT ai_classify_label(body, 'trained')) FROM notes")" = 2 ] ||
    fail "the trained model does not tell food from sport: $distributed"
hidden=$(error_of "SET ROLE alice; SELECT ai_classify_label(body, 'trained') FROM notes")
[[ "$hidden" == '42704: model "trained" does not exist' ]] || fail "alice used a private model on the workers: $hidden"
on 0 -c "SELECT ai_grant_model('trained', 'alice')" >/dev/null
granted=$(on 0 -c "SET ROLE alice" -c "SELECT count(*) FROM notes WHERE ai_classify_label(body, 'trained') IS NOT NULL")
[ "$granted" = 18 ] || fail "alice could not use the granted model on the workers: $granted"

# A training job, run by a background worker on the coordinator, reads the distributed table as well.
job=$(on 0 -c "SELECT ai_finetune_async('trained-in-background', 'base', 'labelled', 'text-classification',
               '{\"text_column\": \"body\", \"label_column\": \"topic\", \"epochs\": 3, \"learning_rate\": 1e-3,
                 \"batch_size\": 8, \"test_size\": 0.2}')")
for _ in $(seq 1200); do
    status=$(on 0 -c "SELECT pg_stat_clear_snapshot(); SELECT status FROM ai.job_status WHERE id = $job" | tail -n 1)
    case $status in queued | running | cancelling) sleep 0.1 ;; *) break ;; esac
done
[ "$status" = done ] || fail "the training job ended $status: $(on 0 -c "SELECT error FROM ai.jobs WHERE id = $job")"
[ "$(on 1 -c "SELECT ai_classify_label('grace won the tennis game .', 'trained-in-background')")" = sport ] ||
    fail "worker 1 does not answer with the model trained by the job"

# A worker added later gets pg_ai and the catalog from Citus.
on 0 -o /dev/null -c "SELECT citus_add_node('127.0.0.1', ${ports[2]})" -c "SELECT replicate_reference_tables('block_writes')"
[ "$(on 2 -c "SELECT ai_classify_label('grace won the tennis game .', 'trained')")" = sport ] ||
    fail "the new worker does not answer with the trained model"
on 0 -o /dev/null -c "SELECT rebalance_table_shards('notes', shard_transfer_mode => 'block_writes')"
[ "$(answers notes trained)" = "$distributed" ] || fail "after the rebalance the answers changed"
[ "$(on 0 -c "SELECT count(*) FROM pg_dist_placement JOIN pg_dist_node USING (groupid) WHERE nodeport = ${ports[2]}")" -gt 3 ] ||
    fail "no shards moved to the new worker"

# A model registered on a worker is on every node too.
on 2 -o /dev/null -c "SELECT ai_load_model('from-a-worker', '$PWD/tests/fixtures/models/bert-classifier', store => true)"
for i in 0 1; do
    [ "$(on "$i" -c "SELECT ai_classify_label('grace won the tennis game .', 'from-a-worker')")" = sport ] ||
        fail "node $i does not answer with the model registered on worker 2"
done

# Dropping on the coordinator drops everywhere.
on 0 -c "SELECT ai_drop_model('topic')" >/dev/null
for i in 1 2; do
    gone=$(on "$i" -c "SELECT count(*) FROM ai.models WHERE name = 'topic'")
    [ "$gone" = 0 ] || fail "worker $i still has the dropped model"
done
# The reference tables' shards are not the extension's own: DROP EXTENSION needs CASCADE, and then leaves no
# trace on any node.
on 0 -c "DROP EXTENSION pg_ai CASCADE"
for i in 0 1 2; do
    [ "$(on "$i" -c "SELECT count(*) FROM pg_namespace WHERE nspname = 'ai'")" = 0 ] ||
        fail "node $i kept pg_ai's schema after DROP EXTENSION"
done
echo "ok   citus: models on every node, reads on the workers as local ones, ai_fill, INSERT triggers," \
    "training from a distributed table, a worker added later"
