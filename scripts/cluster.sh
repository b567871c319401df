#!/usr/bin/env bash
# A private PostgreSQL 15 cluster on loopback for the demo and the SQL tests, run as `postgres`.
#   scripts/cluster.sh start | stop | psql [args] | sql [args]
# sql is psql for scripts: quiet, bare values, stopping at the first error.
set -euo pipefail
root=${PG_AI_CLUSTER:-/tmp/pg_ai-cluster}
port=${PG_AI_PORT:-28815}
bin=/usr/lib/postgresql/15/bin
as_postgres() { runuser -u postgres -- "$@"; }

case "${1:-}" in
start)
    mkdir -p "$root"
    chown postgres: "$root"
    if [ ! -f "$root/data/PG_VERSION" ]; then
        as_postgres "$bin/initdb" -D "$root/data" -A trust -U postgres >/dev/null
    fi
    if ! as_postgres "$bin/pg_ctl" -D "$root/data" status >/dev/null 2>&1; then
        # RUST_BACKTRACE=0: errors must not carry Rust backtraces in their DETAIL.
        RUST_BACKTRACE=0 as_postgres "$bin/pg_ctl" -D "$root/data" -l "$root/server.log" -w \
            -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$root" start >/dev/null
    fi
    ;;
stop)
    as_postgres "$bin/pg_ctl" -D "$root/data" -m fast stop >/dev/null 2>&1 || true
    ;;
psql)
    shift
    as_postgres psql -X -h "$root" -p "$port" -U postgres "$@"
    ;;
sql)
    shift
    as_postgres psql -X -h "$root" -p "$port" -U postgres -q -At -v ON_ERROR_STOP=1 "$@"
    ;;
*)
    echo "usage: $0 start | stop | psql [args] | sql [args]" >&2
    exit 2
    ;;
esac
