#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine as root, installs a release build of pg_ai into the system
# PostgreSQL 15, starts a private cluster on 127.0.0.1:28815 and runs scripts/demo.sql with the real
# all-MiniLM-L6-v2. Afterwards: scripts/cluster.sh psql -d pg_ai_demo
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export RUST_BACKTRACE=0
echo "== building and installing pg_ai (release)"
cargo pgrx install --release --pg-config /usr/bin/pg_config >/dev/null
scripts/cluster.sh stop   # a running server would keep the previous library loaded
scripts/cluster.sh start
scripts/cluster.sh psql -q -c "DROP DATABASE IF EXISTS pg_ai_demo" -c "CREATE DATABASE pg_ai_demo"
scripts/cluster.sh psql -d pg_ai_demo -v root="$PWD" -f scripts/demo.sql
echo
echo "The cluster is still running: scripts/cluster.sh psql -d pg_ai_demo  (stop: scripts/cluster.sh stop)"
