#!/usr/bin/env bash
# Runs tests/sql/*.sql in a fresh database each and compares psql's output with tests/expected.
# `scripts/sql-tests.sh --accept` rewrites the expected files after a reviewed change.
set -euo pipefail
cd "$(dirname "$0")/.."
accept=${1:-}
out=$(mktemp -d)
chmod 755 "$out"
failed=0
for sql in tests/sql/*.sql; do
    name=$(basename "$sql" .sql)
    scripts/cluster.sh psql -q -c "DROP DATABASE IF EXISTS pg_ai_test" -c "CREATE DATABASE pg_ai_test"
    # Paths in the tests are relative to the repository: psql's :root is its absolute path.
    # pg_ai.timing NOTICEs carry durations: compare their shape, not the numbers.
    scripts/cluster.sh psql -d pg_ai_test -a -v root="$PWD" -v ON_ERROR_STOP=0 \
        -f "$sql" 2>&1 | sed -E '/pg_ai\.timing:/ s/[0-9]+\.[0-9]+/#/g' > "$out/$name.out" || true
    if [ "$accept" = "--accept" ]; then
        cp "$out/$name.out" "tests/expected/$name.out"
        echo "accepted $name"
    elif diff -u "tests/expected/$name.out" "$out/$name.out" > "$out/$name.diff"; then
        echo "ok   $name"
    else
        echo "FAIL $name"
        cat "$out/$name.diff"
        failed=1
    fi
done
exit $failed
