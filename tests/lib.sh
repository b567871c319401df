# Sourced by the test and bench scripts that use the cluster of scripts/cluster.sh (PG_AI_CLUSTER, PG_AI_PORT).
# Before sourcing, set `name` to the test's name in failure messages.
root=${PG_AI_CLUSTER:-/tmp/pg_ai-cluster}
port=${PG_AI_PORT:-28815}
export PGOPTIONS="-c client_min_messages=warning"
# psql for scripts: quiet, bare values, stopping at the first error.
sql() { scripts/cluster.sh sql "$@"; }
as_postgres() { runuser -u postgres -- "$@"; }
postmaster_pid() { head -n 1 "$root/data/postmaster.pid"; }
now_ms() { date +%s%3N; }
# Reports the failure with the end of the server's log, and stops.
fail() { echo "FAIL $name: $*"; tail -n 30 "$root/server.log"; exit 1; }
# Puts pg_ai in shared_preload_libraries and restarts the cluster; the setting goes back when the script exits.
preload_pg_ai() {
    trap 'sql -c "ALTER SYSTEM RESET shared_preload_libraries" || true; scripts/cluster.sh stop; scripts/cluster.sh start' EXIT
    sql -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_ai'"
    scripts/cluster.sh stop
    scripts/cluster.sh start
}
