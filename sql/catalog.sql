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
    -- sha256 of the weight files, in lower-case hex.
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    -- Stored models: sha256 over all their files (see stored_files.rs). It names the server's written-out copy,
    -- which is checked against it as it is written.
    files_sha256 text CHECK (files_sha256 ~ '^[0-9a-f]{64}$'),
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
    -- Relative to the model's directory: no empty, '.' or '..' part, no leading '/' or control characters.
    path  text NOT NULL CHECK (path ~ '^[^/.[:cntrl:]][^/[:cntrl:]]*(/[^/.[:cntrl:]][^/[:cntrl:]]*)*$'),
    chunk int NOT NULL CHECK (chunk >= 0),
    data  bytea NOT NULL,
    PRIMARY KEY (model, path, chunk)
);

-- Training runs in progress, in any session: ai_pretrain and ai_finetune report their progress as their
-- pg_stat_activity query text, so this needs no shared memory and no shared_preload_libraries. As the invoker,
-- a role sees the runs of the roles whose activity it may see (its own, or all with pg_read_all_stats).
CREATE VIEW ai.training WITH (security_invoker = true) AS
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

-- Training jobs run by background workers (ai_pretrain_async, ai_finetune_async), one row per job. The worker
-- connects as the job's owner (never as a superuser) and commits the job's status as it goes: queued, running,
-- then done, failed or cancelled.
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
-- A job's source, options and error are its owner's business: each role sees and changes only the jobs of the
-- roles it is a member of (the worker, connected as the owner, records the job's progress through these too).
ALTER TABLE ai.jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_reads ON ai.jobs FOR SELECT USING (pg_catalog.pg_has_role(owner, 'MEMBER'));
CREATE POLICY submit_as_self ON ai.jobs FOR INSERT WITH CHECK (pg_catalog.pg_has_role(owner, 'MEMBER'));
CREATE POLICY owner_changes ON ai.jobs FOR UPDATE USING (pg_catalog.pg_has_role(owner, 'MEMBER'));

-- The latest checkpoint of each running job (weights, tokenizer, optimizer and trainer state files), written by
-- the job's worker as it trains, read back when the job resumes after a restart, deleted when it ends. It holds
-- the owner's half-trained model: only the owner's roles see it.
CREATE TABLE ai.job_checkpoints (
    job_id bigint NOT NULL REFERENCES ai.jobs (id) ON DELETE CASCADE,
    path   text NOT NULL CHECK (path ~ '^[^/.[:cntrl:]][^/[:cntrl:]]*$'),
    chunk  int NOT NULL CHECK (chunk >= 0),
    data   bytea NOT NULL,
    PRIMARY KEY (job_id, path, chunk)
);
ALTER TABLE ai.job_checkpoints ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ai.job_checkpoints FOR ALL USING (
    EXISTS (SELECT FROM ai.jobs AS j WHERE j.id = job_id AND pg_catalog.pg_has_role(j.owner, 'MEMBER')));

-- Whether a job's worker is alive: its pid still belongs to a pg_ai job worker. It runs as the extension's
-- owner, because pg_stat_activity hides the backend type of other roles' processes.
CREATE FUNCTION ai.job_worker_alive(pid int) RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_stat_activity AS a WHERE a.pid = $1 AND a.backend_type = 'pg_ai job')
$$;

-- Jobs with their live progress; a running job whose worker is gone (a server restart) shows as interrupted
-- until it resumes (by itself when pg_ai is in shared_preload_libraries, else with ai_resume_job).
-- Activity statistics are read once per transaction: a loop polling this view calls pg_stat_clear_snapshot().
CREATE VIEW ai.job_status WITH (security_invoker = true) AS
SELECT j.id, j.kind, j.model, j.owner,
       CASE WHEN j.status IN ('running', 'cancelling') AND NOT ai.job_worker_alive(j.pid)
            THEN 'interrupted' ELSE j.status END AS status,
       t.step, t.total_steps, t.loss, t.time_left, j.checkpoint_step, j.error, j.created_at, j.started_at,
       j.finished_at
FROM ai.jobs AS j LEFT JOIN ai.training AS t ON t.pid = j.pid AND j.status IN ('running', 'cancelling');

-- Who may use a model besides its owner's roles: a role (and the roles that have its privileges), or everyone
-- (grantee 0, shown as '-'). ai_load_model grants a model to everyone; trained models start private.
CREATE TABLE ai.model_users (
    model   text NOT NULL REFERENCES ai.models (name) ON DELETE CASCADE,
    grantee regrole NOT NULL,
    grantor regrole NOT NULL DEFAULT current_user::regrole,
    PRIMARY KEY (model, grantee)
);
COMMENT ON TABLE ai.model_users IS 'Roles that may use a model besides its owner (grantee ''-'': everyone), and who granted it';

-- Whether a model name is taken, by a model the caller may see or not: names are unique on the server.
CREATE FUNCTION ai.model_name_taken(name text) RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM ai.models AS m WHERE m.name = $1)
$$;

-- Whether a model other than `name` has the stored files `files_sha256` (the server's copy stays while one has).
CREATE FUNCTION ai.files_in_use(name text, files_sha256 text) RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM ai.models AS m WHERE m.files_sha256 = $2 AND m.name <> $1)
$$;

-- pg_dump keeps the rows of these tables: stored models travel with a dump.
SELECT pg_catalog.pg_extension_config_dump('ai.models', '');
SELECT pg_catalog.pg_extension_config_dump('ai.model_files', '');
SELECT pg_catalog.pg_extension_config_dump('ai.model_users', '');

-- Rows belong to the role that registered them: with INSERT and DELETE granted to several roles, each may
-- register models as itself and drop only its own (or those of roles it is a member of). A role sees (and may
-- use) a model, with its files and how it was trained, only if it owns it or it is granted to it. Superusers
-- and the tables' owner are not bound by these policies.
-- The policies that look at another table call these functions (as the caller, so under the other table's own
-- policies) instead of holding a subquery: Citus refuses subqueries in the policies of its tables, and
-- ai_distribute_models makes these tables Citus reference tables.
CREATE FUNCTION ai.granted_to_me(model text) RETURNS boolean LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM ai.model_users AS u
                   WHERE u.model = $1 AND (u.grantee::oid = 0 OR pg_catalog.pg_has_role(u.grantee, 'USAGE')))
$$;
CREATE FUNCTION ai.model_visible(model text) RETURNS boolean LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM ai.models AS m WHERE m.name = $1)
$$;
CREATE FUNCTION ai.model_mine(model text) RETURNS boolean LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM ai.models AS m WHERE m.name = $1 AND pg_catalog.pg_has_role(m.owner, 'MEMBER'))
$$;
ALTER TABLE ai.models ENABLE ROW LEVEL SECURITY;
CREATE POLICY owners_and_users_read ON ai.models FOR SELECT USING (
    pg_catalog.pg_has_role(owner, 'MEMBER') OR ai.granted_to_me(name));
CREATE POLICY register_as_self ON ai.models FOR INSERT WITH CHECK (pg_catalog.pg_has_role(owner, 'MEMBER'));
CREATE POLICY owner_changes ON ai.models FOR UPDATE USING (pg_catalog.pg_has_role(owner, 'MEMBER'));
CREATE POLICY owner_drops ON ai.models FOR DELETE USING (pg_catalog.pg_has_role(owner, 'MEMBER'));
ALTER TABLE ai.model_files ENABLE ROW LEVEL SECURITY;
CREATE POLICY users_read ON ai.model_files FOR SELECT USING (ai.model_visible(model));
CREATE POLICY owner_writes ON ai.model_files FOR ALL USING (ai.model_mine(model));
ALTER TABLE ai.model_users ENABLE ROW LEVEL SECURITY;
-- A role sees the grants to it (or to everyone) and those it made; not a private model's other users. (This
-- policy must not read ai.models, whose own policy reads this table.)
CREATE POLICY grantees_and_grantors_read ON ai.model_users FOR SELECT USING (
    grantee::oid = 0 OR pg_catalog.pg_has_role(grantee, 'USAGE') OR pg_catalog.pg_has_role(grantor, 'MEMBER'));
CREATE POLICY owner_grants ON ai.model_users FOR INSERT WITH CHECK (
    pg_catalog.pg_has_role(grantor, 'MEMBER') AND ai.model_mine(model));
CREATE POLICY owner_revokes ON ai.model_users FOR DELETE USING (ai.model_mine(model));

-- Lets `grantee` ('public': everyone) use the model `model`; only its owner's roles may. True if it was not yet.
CREATE FUNCTION ai_grant_model(model text, grantee text DEFAULT 'public') RETURNS boolean
LANGUAGE plpgsql STRICT SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ai.require_model_owner($1);
    INSERT INTO ai.model_users (model, grantee)
    VALUES ($1, CASE WHEN lower($2) = 'public' THEN '-'::regrole ELSE $2::regrole END)
    ON CONFLICT DO NOTHING;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION ai_grant_model IS 'Lets a role (or public) use a model; for its owner';

-- Takes back what ai_grant_model gave; true if there was such a grant.
CREATE FUNCTION ai_revoke_model(model text, grantee text DEFAULT 'public') RETURNS boolean
LANGUAGE plpgsql STRICT SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ai.require_model_owner($1);
    DELETE FROM ai.model_users AS u
    WHERE u.model = $1 AND u.grantee = CASE WHEN lower($2) = 'public' THEN '-'::regrole ELSE $2::regrole END;
    RETURN FOUND;
END $$;
COMMENT ON FUNCTION ai_revoke_model IS 'Takes back ai_grant_model; for the model''s owner';

CREATE FUNCTION ai.require_model_owner(model text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM ai.models AS m WHERE m.name = $1) THEN
        RAISE EXCEPTION 'model "%" does not exist', $1 USING ERRCODE = 'undefined_object',
            HINT = 'SELECT name FROM ai.models lists the models you may use.';
    END IF;
    IF NOT EXISTS (SELECT FROM ai.models AS m WHERE m.name = $1 AND pg_has_role(m.owner, 'MEMBER')) THEN
        RAISE EXCEPTION 'must be the owner of model "%"', $1 USING ERRCODE = 'insufficient_privilege',
            HINT = 'SELECT owner FROM ai.models shows who registered it.';
    END IF;
END $$;

-- Using a model needs a grant (ai_grant_model); registering needs INSERT, which the catalog's owner grants.
-- Job workers, connected as a job's owner, record its progress and checkpoints through these grants; row-level
-- security keeps each role to its own rows.
GRANT USAGE ON SCHEMA ai TO PUBLIC;
GRANT SELECT ON ai.models, ai.model_files, ai.model_users, ai.training, ai.jobs, ai.job_status TO PUBLIC;
GRANT INSERT, DELETE ON ai.model_users TO PUBLIC;
GRANT UPDATE (status, error, pid, checkpoint_step, started_at, finished_at) ON ai.jobs TO PUBLIC;
GRANT SELECT, INSERT, DELETE ON ai.job_checkpoints TO PUBLIC;
GRANT USAGE ON SEQUENCE ai.jobs_id_seq TO PUBLIC;
