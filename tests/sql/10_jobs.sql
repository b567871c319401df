-- Training as background jobs: a dynamic background worker per job (no shared_preload_libraries), connected as
-- the calling role, its status committed in ai.jobs as it goes.
CREATE EXTENSION pg_ai;
\i tests/sql/_helpers.psql
\i tests/sql/_jobs.psql

-- The call returns at once with the job's id; the model appears when the job is done, even though the client
-- that started it has gone.
SELECT ai_pretrain_async('bg-mlm', 'sentences', 'mlm', '{"max_steps": 40, "log_every": 10}') AS job \gset
SELECT kind, model, status IN ('queued', 'running') AS going FROM ai.jobs WHERE id = :job;
\c
\i tests/sql/_helpers.psql
SELECT wait_for_job(:job) AS status;
SELECT status, error, started_at <= finished_at AS timed FROM ai.jobs WHERE id = :job;
SELECT name, task, parent, training->>'objective' AS objective FROM ai.models WHERE name = 'bg-mlm';
SELECT count(*) AS answers FROM ai_fill_mask('The farmer [MASK] a book every morning.', 'bg-mlm', 3);

-- A failing job records its error; nothing is registered.
SELECT ai_pretrain_async('bg-broken', 'SELECT 1 AS text WHERE false', 'mlm') AS job \gset
SELECT wait_for_job(:job) AS status;
SELECT error FROM ai.jobs WHERE id = :job;

-- A job can be cancelled while it runs; it stops between two batches and registers nothing.
SELECT ai_pretrain_async('bg-long', 'sentences', 'clm', '{"max_steps": 100000}') AS job \gset
SELECT wait_for_a_step('bg-long') AS stepping;
SELECT ai_cancel_job(:job) AS cancel_requested;
SELECT wait_for_job(:job) AS status;
SELECT error FROM ai.jobs WHERE id = :job;
SELECT ai_cancel_job(:job) AS already_ended;
-- ai_resume_job starts only jobs whose worker is gone while they were running (see tests/job_resume.sh).
SELECT ai_resume_job(:job) AS resumed_an_ended_job;
SELECT pg_temp.try($$SELECT ai_resume_job(-1)$$) AS unknown_job;
SELECT count(*) AS checkpoints_left FROM ai.job_checkpoints;

-- The request is checked before any job starts.
SELECT pg_temp.try($$SELECT ai_pretrain_async('bg-mlm', 'sentences', 'mlm')$$) AS duplicate_name;
SELECT pg_temp.try($$SELECT ai_pretrain_async('x', 'sentences', 'mlm', '{"batch_size": 0}')$$) AS bad_option;
SELECT pg_temp.try($$SELECT ai_finetune_async('x', 'nope', 'sentences', 'mlm')$$) AS unknown_base;
SELECT name FROM ai.models ORDER BY name;
