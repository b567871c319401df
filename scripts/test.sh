#!/usr/bin/env bash
# Runs every test of pg_ai on a fresh or prepared Debian 12 machine, as root:
#   1. cargo test -p pg_ai_engine: the engine's tests, against transformers' answers among them;
#   2. cargo pgrx test: tests inside PostgreSQL;
#   3. the SQL tests in tests/sql against a private cluster, compared with tests/expected.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export RUST_BACKTRACE=0

# The server runs as `postgres` and must read the fixtures and MiniLM's files. Where it cannot
# (a clone under /root, say), run from a readable copy, building into the same target directory.
if ! runuser -u postgres -- test -r "$PWD/.models/all-MiniLM-L6-v2/model.safetensors"; then
    copy=/tmp/pg_ai-src
    echo "== the postgres user cannot read $PWD: testing a copy in $copy"
    rm -rf "$copy"
    mkdir -p "$copy"
    tar --exclude=./target -cf - . | tar -xf - -C "$copy"
    chmod -R a+rX "$copy"
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
    exec "$copy/scripts/test.sh"
fi

work=/tmp/pg_ai-test
mkdir -p "$work"
chown postgres: "$work"
rm -rf "$work/pgrx-pgdata"
echo "== engine tests (cargo test -p pg_ai_engine)"
cargo test -p pg_ai_engine
echo "== cargo pgrx test"
cargo pgrx test pg15 --runas postgres --pgdata "$work/pgrx-pgdata"

echo "== SQL tests (tests/sql, compared with tests/expected)"
# cargo pgrx test has installed this build into PostgreSQL's extension directory.
export PG_AI_CLUSTER="$work/cluster" PG_AI_PORT=28816
scripts/cluster.sh stop
rm -rf "$PG_AI_CLUSTER"
scripts/cluster.sh start
trap 'scripts/cluster.sh stop' EXIT
scripts/sql-tests.sh
# Hostile inputs included, no backend may have died (the tests below kill one on purpose).
if grep -E "terminated by signal|PANIC" "$PG_AI_CLUSTER/server.log"; then
    echo "FAIL: a backend died during the SQL tests"
    exit 1
fi

echo "== pgvector: derived embeddings searched through an HNSW index (tests/pgvector.sh)"
tests/pgvector.sh

echo "== many connections (benches/concurrency.sh)"
benches/concurrency.sh

echo "== restart, pg_dump and restore of a trained model (tests/dump_restore.sh)"
tests/dump_restore.sh

echo "== a backend cancelled, terminated or killed mid-generation (tests/kill_backend.sh)"
tests/kill_backend.sh

echo "== training jobs resume after a restart (tests/job_resume.sh)"
tests/job_resume.sh

echo "== derived columns end derived after a crash, a killed and a terminated worker (tests/derive_resume.sh)"
tests/derive_resume.sh

echo "== read replica (tests/replica.sh)"
tests/replica.sh

echo "== Citus: a coordinator and two workers (tests/citus.sh)"
tests/citus.sh
