#!/usr/bin/env bash
# A backend stopped in the middle of generating: cancelled (the statement ends with 57014, the session goes on),
# terminated (only that session ends), or killed with SIGKILL (the postmaster survives, resets the other
# sessions as PostgreSQL does after any backend crash, and serves again). Run as root by scripts/test.sh, with
# pg_ai installed and the cluster of scripts/cluster.sh running.
set -euo pipefail
cd "$(dirname "$0")/.."
name="kill mid-generation"
source tests/lib.sh
db() { sql -d pg_ai_kill -c "$1"; }
# A statement that generates for minutes: many greedy generations of the fixture GPT-2.
long='SELECT count(ai_generate($$the cat$$, $$gpt2$$, max_tokens => 64)) FROM generate_series(1, 1000000)'

sql -c "DROP DATABASE IF EXISTS pg_ai_kill" -c "CREATE DATABASE pg_ai_kill"
db "CREATE EXTENSION pg_ai" >/dev/null
db "SELECT ai_load_model('gpt2', '$PWD/tests/fixtures/models/gpt2')" >/dev/null
expected=$(db 'SELECT ai_generate($$the cat$$, $$gpt2$$, max_tokens => 16)')
postmaster_before=$(postmaster_pid)

# Starts the long statement in the background under application_name $1; waits until it generates.
start_generating() {
    PGAPPNAME=$1 sql -d pg_ai_kill -c "$long" >"$root/$1.out" 2>&1 &
    for _ in $(seq 100); do
        [ "$(db "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$1' AND state = 'active'")" = 1 ] &&
            sleep 0.5 && return
        sleep 0.1
    done
    fail "the generation under $1 did not start"
}
pid_of() { db "SELECT pid FROM pg_stat_activity WHERE application_name = '$1'"; }

# Cancel: the statement ends with 57014 within a second, the session is fine.
start_generating cancelled
db "SELECT pg_cancel_backend($(pid_of cancelled))" >/dev/null
wait $! && fail "a cancelled generation succeeded"
grep -q "canceling statement due to user request" "$root/cancelled.out" || fail "$(cat "$root/cancelled.out")"

# Terminate: that session ends; another one generating alongside is untouched.
start_generating terminated
start_generating bystander
bystander=$!
db "SELECT pg_terminate_backend($(pid_of terminated), 5000)" >/dev/null
[ "$(pid_of terminated)" = "" ] || fail "the terminated backend is still there"
[ -n "$(pid_of bystander)" ] || fail "terminating one backend stopped another"
db "SELECT pg_cancel_backend($(pid_of bystander))" >/dev/null
wait "$bystander" || true

# SIGKILL: the postmaster resets all sessions, recovers, and answers the same again.
start_generating killed
kill -9 "$(pid_of killed)"
wait $! && fail "a killed generation succeeded"
for _ in $(seq 100); do
    db "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.2
done
[ "$(postmaster_pid)" = "$postmaster_before" ] || fail "the postmaster did not survive"
after=$(db 'SELECT ai_generate($$the cat$$, $$gpt2$$, max_tokens => 16)')
[ "$after" = "$expected" ] || fail "after the crash restart: \"$after\" instead of \"$expected\""
! grep -q "PANIC" "$root/server.log" || fail "PANIC in the server log"

sql -c "DROP DATABASE pg_ai_kill"
rm -f "$root"/{cancelled,terminated,bystander,killed}.out
echo "ok   a generating backend cancelled, terminated or killed: the server goes on and answers the same"
