#!/usr/bin/env bash
# A background training job survives the server going down mid-training: with pg_ai in
# shared_preload_libraries it resumes by itself from its last checkpoint after an immediate (crash) stop, and a
# job whose worker was terminated resumes with ai_resume_job. Either way the model is the same, byte for byte, as
# one trained without a stop. Run as root by scripts/test.sh, with pg_ai installed and the cluster of
# scripts/cluster.sh running; it puts the cluster's settings back as they were.
set -euo pipefail
cd "$(dirname "$0")/.."
name="job resume"
source tests/lib.sh
db() { sql -d pg_ai_resume -c "$1"; }
options='{"max_steps": 1500, "checkpoint_every": 25, "dropout": 0.1, "log_every": 100000}'

preload_pg_ai

sql -c "DROP DATABASE IF EXISTS pg_ai_resume WITH (FORCE)" -c "CREATE DATABASE pg_ai_resume"
sql -d pg_ai_resume -o /dev/null <<SQL
CREATE EXTENSION pg_ai;
CREATE TABLE sentences (text text);
COPY sentences FROM '$PWD/tests/fixtures/train/sentences.txt';
SELECT ai_pretrain('straight', 'sentences', 'mlm', '$options');
SQL
straight=$(db "SELECT sha256 FROM ai.models WHERE name = 'straight'")

# Waits until job $1 has a checkpoint at step 50 or later.
wait_for_checkpoint() {
    for _ in $(seq 600); do
        [ "$(db "SELECT coalesce(checkpoint_step, 0) >= 50 FROM ai.jobs WHERE id = $1")" = t ] && return
        sleep 0.1
    done
    fail "job $1 saved no checkpoint"
}

# Waits until job $1 has ended, and prints its status.
wait_until_ended() {
    for _ in $(seq 1800); do
        status=$(db "SELECT status FROM ai.jobs WHERE id = $1")
        case $status in done | failed | cancelled) echo "$status"; return ;; esac
        sleep 0.1
    done
    fail "job $1 did not end"
}

# Checks that job $1 went on from a checkpoint at step 50 or later, not from the start.
went_on_from() {
    step=$(grep -o "pg_ai: job $1 goes on from its checkpoint at step [0-9]*" "$root/server.log" | tail -n 1 | grep -o '[0-9]*$')
    [ -n "$step" ] && [ "$step" -ge 50 ] || fail "job $1 did not go on from its checkpoint"
    echo "job $1 went on from step $step"
}

# 1. The server stops as in a crash (no shutdown checkpoint, no time for the worker to record anything).
job=$(db "SELECT ai_pretrain_async('after-crash', 'sentences', 'mlm', '$options')")
wait_for_checkpoint "$job"
as_postgres /usr/lib/postgresql/15/bin/pg_ctl -D "$root/data" -m immediate stop >/dev/null
as_postgres mkdir -p "$root/data/pg_ai/models/4000000000/x" "$root/data/pg_ai/models/$(printf 'a%.0s' {1..64})"
scripts/cluster.sh start
[ "$(wait_until_ended "$job")" = done ] || fail "job $job: $(db "SELECT error FROM ai.jobs WHERE id = $job")"
grep -q "pg_ai: resuming job $job in database \"pg_ai_resume\"" "$root/server.log" || fail "job $job was not resumed"
went_on_from "$job"
[ "$(db "SELECT sha256 FROM ai.models WHERE name = 'after-crash'")" = "$straight" ] ||
    fail "the resumed model differs from one trained without a stop"
# The killed worker's scratch directories were removed by the launcher.
[ -z "$(find "$root/data/pg_ai/models" -maxdepth 2 -name '.train.*')" ] || fail "scratch directories left behind"
# And the copies of databases that no longer exist (or of the layout with one copy for all databases).
[ ! -e "$root/data/pg_ai/models/4000000000" ] && [ ! -e "$root/data/pg_ai/models/$(printf 'a%.0s' {1..64})" ] ||
    fail "copies of dropped databases left behind"

# 2. The job's worker is terminated; the job shows as interrupted until ai_resume_job starts it again.
job=$(db "SELECT ai_pretrain_async('after-terminate', 'sentences', 'mlm', '$options')")
wait_for_checkpoint "$job"
db "SELECT pg_terminate_backend(pid) FROM ai.jobs WHERE id = $job" >/dev/null
for _ in $(seq 100); do
    [ "$(db "SELECT status FROM ai.job_status WHERE id = $job")" = interrupted ] && break
    sleep 0.1
done
[ "$(db "SELECT status FROM ai.job_status WHERE id = $job")" = interrupted ] || fail "job $job is not interrupted"
[ "$(db "SELECT ai_resume_job($job)")" = t ] || fail "ai_resume_job($job) started nothing"
[ "$(wait_until_ended "$job")" = done ] || fail "job $job: $(db "SELECT error FROM ai.jobs WHERE id = $job")"
went_on_from "$job"
[ "$(db "SELECT sha256 FROM ai.models WHERE name = 'after-terminate'")" = "$straight" ] ||
    fail "the model resumed by hand differs from one trained without a stop"
[ "$(db "SELECT ai_resume_job($job)")" = f ] || fail "a finished job was started again"
[ "$(db "SELECT count(*) FROM ai.job_checkpoints")" = 0 ] || fail "checkpoints left behind"

sql -c "DROP DATABASE pg_ai_resume"
echo "ok   training jobs resume after a crash restart and after ai_resume_job, with the same bytes"
