-- pg_ai's catalog: the registered models and, for models stored in the database, their files.

CREATE SCHEMA ai;
COMMENT ON SCHEMA ai IS 'pg_ai: the model registry';

CREATE TABLE ai.models (
    name         text PRIMARY KEY CHECK (name <> ''),
    task         text NOT NULL,
    architecture text NOT NULL,
    source       text NOT NULL,
    stored       boolean NOT NULL DEFAULT false,
    config       jsonb NOT NULL,
    sha256       text NOT NULL,
    owner        regrole NOT NULL DEFAULT current_user::regrole,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Models made by ai_pretrain / ai_finetune: the model they started from, and how they were trained
    -- (objective, source, options, metrics).
    parent       text,
    training     jsonb
);
COMMENT ON TABLE ai.models IS 'Models registered with ai_load_model; one row per name';

-- Files of models loaded with store => true, in chunks of at most 64 MB.
CREATE TABLE ai.model_files (
    model text NOT NULL REFERENCES ai.models (name) ON DELETE CASCADE,
    path  text NOT NULL,
    chunk int NOT NULL,
    data  bytea NOT NULL,
    PRIMARY KEY (model, path, chunk)
);

-- Training runs in progress, in any session: ai_pretrain and ai_finetune report their progress as their
-- pg_stat_activity query text, so this needs no shared memory and no shared_preload_libraries.
CREATE VIEW ai.training AS
SELECT a.pid,
       a.usename AS role,
       substring(a.query FROM ' model=(.*)$') AS model,
       substring(a.query FROM ' step=(\d+)')::bigint AS step,
       substring(a.query FROM ' total=(\d+)')::bigint AS total_steps,
       substring(a.query FROM ' loss=(\S+)')::real AS loss,
       substring(a.query FROM ' tokens_per_second=(\S+)')::real AS tokens_per_second,
       make_interval(secs => substring(a.query FROM ' seconds_left=(\S+)')::double precision) AS time_left,
       a.query_start AS started
FROM pg_catalog.pg_stat_activity AS a
WHERE a.state = 'active' AND a.query LIKE 'pg\_ai training:%';
COMMENT ON VIEW ai.training IS 'ai_pretrain and ai_finetune calls running now, with their step and loss';

-- Training jobs run by background workers (ai_pretrain_async, ai_finetune_async), one row per job; the worker
-- commits its status as it goes: queued, running, then done, failed or cancelled.
CREATE TABLE ai.jobs (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('pretrain', 'finetune')),
    model       text NOT NULL,
    args        jsonb NOT NULL,
    owner       regrole NOT NULL DEFAULT current_user::regrole,
    status      text NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'cancelling', 'done', 'failed', 'cancelled')),
    error       text,
    pid         int,
    checkpoint_step int,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at  timestamptz,
    finished_at timestamptz
);
COMMENT ON TABLE ai.jobs IS 'Training jobs of ai_pretrain_async and ai_finetune_async';
ALTER TABLE ai.jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY everyone_reads ON ai.jobs FOR SELECT USING (true);
CREATE POLICY submit_as_self ON ai.jobs FOR INSERT WITH CHECK (pg_catalog.pg_has_role(owner, 'MEMBER'));
CREATE POLICY owner_cancels ON ai.jobs FOR UPDATE USING (pg_catalog.pg_has_role(owner, 'MEMBER'));

-- The latest checkpoint of each running job (weights, tokenizer, optimizer and trainer state files), written by
-- the job's worker as it trains, read back when the job resumes after a restart, deleted when it ends.
-- Only the workers (superuser) use it: it holds the owner's half-trained model.
CREATE TABLE ai.job_checkpoints (
    job_id bigint NOT NULL REFERENCES ai.jobs (id) ON DELETE CASCADE,
    path   text NOT NULL,
    chunk  int NOT NULL,
    data   bytea NOT NULL,
    PRIMARY KEY (job_id, path, chunk)
);
REVOKE ALL ON ai.job_checkpoints FROM PUBLIC;

-- Whether a job's worker is alive: its pid still belongs to a pg_ai job worker.
CREATE FUNCTION ai.job_worker_alive(pid int) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_stat_activity AS a WHERE a.pid = $1 AND a.backend_type = 'pg_ai job')
$$;

-- Jobs with their live progress; a running job whose worker is gone (a server restart) shows as interrupted
-- until it resumes (by itself when pg_ai is in shared_preload_libraries, else with ai_resume_job).
-- Activity statistics are read once per transaction: a loop polling this view calls pg_stat_clear_snapshot().
CREATE VIEW ai.job_status AS
SELECT j.id, j.kind, j.model, j.owner,
       CASE WHEN j.status IN ('running', 'cancelling') AND NOT ai.job_worker_alive(j.pid)
            THEN 'interrupted' ELSE j.status END AS status,
       t.step, t.total_steps, t.loss, t.time_left, j.checkpoint_step, j.error, j.created_at, j.started_at,
       j.finished_at
FROM ai.jobs AS j LEFT JOIN ai.training AS t ON t.pid = j.pid AND j.status IN ('running', 'cancelling');

-- pg_dump keeps the rows of both tables: stored models travel with a dump.
SELECT pg_catalog.pg_extension_config_dump('ai.models', '');
SELECT pg_catalog.pg_extension_config_dump('ai.model_files', '');

-- Rows belong to the role that registered them: with INSERT and DELETE granted to several roles, each may
-- register models as itself and drop only its own (or those of roles it is a member of). Superusers and the
-- tables' owner are not bound by these policies.
ALTER TABLE ai.models ENABLE ROW LEVEL SECURITY;
CREATE POLICY everyone_reads ON ai.models FOR SELECT USING (true);
CREATE POLICY register_as_self ON ai.models FOR INSERT WITH CHECK (pg_catalog.pg_has_role(owner, 'MEMBER'));
CREATE POLICY owner_changes ON ai.models FOR UPDATE USING (pg_catalog.pg_has_role(owner, 'MEMBER'));
CREATE POLICY owner_drops ON ai.models FOR DELETE USING (pg_catalog.pg_has_role(owner, 'MEMBER'));
ALTER TABLE ai.model_files ENABLE ROW LEVEL SECURITY;
CREATE POLICY everyone_reads ON ai.model_files FOR SELECT USING (true);
CREATE POLICY owner_writes ON ai.model_files FOR ALL USING (
    EXISTS (SELECT FROM ai.models AS m WHERE m.name = model AND pg_catalog.pg_has_role(m.owner, 'MEMBER')));

-- Everyone may use the registered models; registering needs INSERT, which the owner grants.
GRANT USAGE ON SCHEMA ai TO PUBLIC;
GRANT SELECT ON ai.models, ai.model_files, ai.training, ai.jobs, ai.job_status TO PUBLIC;
GRANT USAGE ON SEQUENCE ai.jobs_id_seq TO PUBLIC;
