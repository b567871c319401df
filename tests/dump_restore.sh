#!/usr/bin/env bash
# A model trained from table rows lives in the database: it survives a server restart and comes back whole
# after pg_dump and restore into a new database, with no file outside the dump; a drop in one database leaves the
# other's copy of the files. A derived column comes back with its derivation and queue. Run as root by
# scripts/test.sh, with pg_ai installed and the cluster of scripts/cluster.sh running.
set -euo pipefail
cd "$(dirname "$0")/.."
name="dump/restore"
source tests/lib.sh
ask='SELECT token FROM ai_fill_mask($$The farmer [MASK] a book every morning.$$, $$trained$$, 1)'

sql -c "DROP DATABASE IF EXISTS pg_ai_dump" -c "DROP DATABASE IF EXISTS pg_ai_restored" -c "CREATE DATABASE pg_ai_dump"
sql -d pg_ai_dump -o /dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION pg_ai;
CREATE TABLE sentences (text text);
COPY sentences FROM '$PWD/tests/fixtures/train/sentences.txt';
SELECT ai_pretrain('trained', 'sentences', 'mlm', '{"max_steps": 300, "learning_rate": 2e-3}');
SELECT ai_load_model('topic', '$PWD/tests/fixtures/models/bert-classifier');
CREATE TABLE notes (id int PRIMARY KEY, body text, topic text);
INSERT INTO notes VALUES (1, 'i love eating pasta .', NULL);
SELECT ai_derive('notes', 'topic', 'body', 'classify_label', 'topic');
SQL
before=$(sql -d pg_ai_dump -c "$ask")
# A derived column, derived before the dump.
for _ in $(seq 300); do
    [ "$(sql -d pg_ai_dump -c "SELECT queued FROM ai.derivation_status")" = 0 ] && break
    sleep 0.1
done
[ "$(sql -d pg_ai_dump -c "SELECT topic FROM notes")" = food ] || fail "the derivation did not derive before the dump"

scripts/cluster.sh stop
scripts/cluster.sh start
after_restart=$(sql -d pg_ai_dump -c "$ask")

sql -c "CREATE DATABASE pg_ai_restored"
as_postgres pg_dump -h "$root" -p "$port" -U postgres pg_ai_dump |
    sql -d pg_ai_restored -o /dev/null
# Only the rows may answer: remove the server's written-out copy of the files first.
rm -rf "$root/data/pg_ai/models"
restored=$(sql -d pg_ai_restored -c "$ask")
# The derivation came with the dump: a new row is queued, and derived once the derivation's worker is started.
sql -d pg_ai_restored -c "INSERT INTO notes VALUES (2, 'heavy snow is expected tonight .', NULL)" >/dev/null
[ "$(sql -d pg_ai_restored -c "SELECT queued FROM ai.derivation_status WHERE target = 'topic'")" = 1 ] ||
    fail "the restored derivation did not queue a new row"
sql -d pg_ai_restored -c "SELECT ai_resume_derivation('notes', 'topic')" >/dev/null
for _ in $(seq 300); do
    [ "$(sql -d pg_ai_restored -c "SELECT queued FROM ai.derivation_status")" = 0 ] && break
    sleep 0.1
done
[ "$(sql -d pg_ai_restored -c "SELECT string_agg(topic, ',' ORDER BY id) FROM notes")" = food,weather ] ||
    fail "the restored derivation did not derive the new row"

# Each database has its own written-out copy: dropping the model in one leaves the other's.
sql -d pg_ai_dump -c "$ask" >/dev/null
copy() { echo "$root/data/pg_ai/models/$(sql -c "SELECT oid FROM pg_database WHERE datname = '$1'")/$(sql -d "$1" -c "SELECT files_sha256 FROM ai.models WHERE name = 'trained'")"; }
dump_copy=$(copy pg_ai_dump) restored_copy=$(copy pg_ai_restored)
[ -d "$dump_copy" ] && [ -d "$restored_copy" ] || fail "no copy per database"
sql -d pg_ai_dump -c "SELECT ai_drop_model('trained')" >/dev/null
[ ! -e "$dump_copy" ] && [ -d "$restored_copy" ] || fail "a drop in one database removed another's copy"
sql -c "DROP DATABASE pg_ai_dump WITH (FORCE)" -c "DROP DATABASE pg_ai_restored WITH (FORCE)"

echo "trained model fills the mask with: $before; after a restart: $after_restart; restored from a dump: $restored"
[ -n "$before" ] && [ "$before" = "$after_restart" ] && [ "$before" = "$restored" ] || fail "answers differ"
echo "ok   restart and dump/restore, of a trained model and of a derived column"
