-- pg_ai in a database that many roles share: jobs run with exactly their owner's rights, catalog rows cannot
-- steer the server's files, each role sees only the models, files and jobs it owns or is granted.
CREATE EXTENSION pg_ai;
\i tests/sql/_helpers.psql
\i tests/sql/_jobs.psql
-- Whether the server holds a written-out copy of the stored files named `sha` (superuser only).
CREATE FUNCTION copy_exists(sha text) RETURNS boolean LANGUAGE sql AS $$
    SELECT EXISTS (SELECT FROM pg_ls_dir(format('pg_ai/models/%s', (SELECT oid FROM pg_database
                                                 WHERE datname = current_database())), true, false) AS d
                   WHERE d = sha)
$$;

CREATE ROLE ai_trainee LOGIN;
CREATE ROLE ai_other LOGIN;
CREATE ROLE ai_nologin;
GRANT INSERT ON ai.jobs TO ai_trainee, ai_nologin;
GRANT INSERT, DELETE ON ai.models, ai.model_files TO ai_trainee, ai_other;
GRANT SELECT ON sentences TO ai_trainee, ai_nologin;

-- 1. A job's worker connects as the job's owner: a source cannot take back a superuser's rights, whatever it
-- says about roles.
SET ROLE ai_trainee;
SELECT ai_pretrain_async('escape-role-none',
    $$SELECT set_config('role', 'none', true) || (SELECT string_agg(rolname, ',') FROM pg_authid) AS text$$,
    'mlm') AS job \gset
SELECT wait_for_job(:job) AS status;
SELECT error FROM ai.jobs WHERE id = :job;
SELECT ai_pretrain_async('escape-set-role', $$SELECT set_config('role', 'postgres', false) AS text$$, 'mlm') AS job \gset
SELECT wait_for_job(:job) AS status;
SELECT error FROM ai.jobs WHERE id = :job;
SELECT ai_pretrain_async('escape-session',
    $$SELECT set_config('session_authorization', 'postgres', false) AS text$$, 'mlm') AS job \gset
SELECT wait_for_job(:job) AS status;
SELECT error FROM ai.jobs WHERE id = :job;
SELECT ai_pretrain_async('who-am-i',
    $$SELECT (session_user || '/' || current_user || '/' || current_setting('is_superuser'))::int::text AS text$$,
    'mlm') AS job \gset
SELECT wait_for_job(:job) AS status;
SELECT error FROM ai.jobs WHERE id = :job;
SELECT ai_pretrain_async('read-a-file', $$SELECT pg_read_file('/etc/passwd') AS text$$, 'mlm') AS job \gset
SELECT wait_for_job(:job) AS status;
SELECT error FROM ai.jobs WHERE id = :job;
SELECT count(*) AS registered_by_escapes FROM ai.models;

-- A job that works: its model belongs to the owner, private until granted.
SELECT ai_pretrain_async('trainee-mlm', 'sentences', 'mlm', '{"max_steps": 4, "log_every": 100}') AS job \gset
SELECT wait_for_job(:job) AS status;
SELECT error FROM ai.jobs WHERE id = :job;
SELECT name, owner, stored FROM ai.models;
SELECT count(*) > 0 AS owner_reads_the_files FROM ai.model_files WHERE model = 'trainee-mlm';
-- A running job of a role that is not a superuser shows as running, and ai_resume_job leaves it alone.
SELECT ai_pretrain_async('trainee-long', 'sentences', 'clm', '{"max_steps": 100000}') AS long_job \gset
SELECT wait_for_a_step('trainee-long') AS stepping;
SELECT status, step > 0 AS stepping FROM ai.job_status WHERE id = :long_job;
SELECT ai_resume_job(:long_job) AS resumed_a_running_job;
RESET ROLE;

-- 5. Other roles see neither the jobs (source, options, error) nor the private model and its files.
SET ROLE ai_other;
SELECT count(*) AS jobs_seen FROM ai.jobs;
SELECT count(*) AS job_status_seen FROM ai.job_status;
SELECT count(*) AS models_seen FROM ai.models;
SELECT count(*) AS files_seen FROM ai.model_files;
SELECT count(*) AS checkpoints_seen FROM ai.job_checkpoints;
SELECT pg_temp.try($$SELECT ai_fill_mask('the [MASK] sat .', 'trainee-mlm')$$) AS use_a_private_model;
SELECT ai_cancel_job(:long_job) AS cancelled_another_roles_job;
SELECT pg_temp.try($$SELECT ai_grant_model('trainee-mlm', 'ai_other')$$) AS grant_oneself;
SELECT pg_temp.try($$SELECT ai_load_model('trainee-mlm', '/nonexistent')$$) AS take_its_name;
RESET ROLE;
SET ROLE ai_trainee;
SELECT ai_cancel_job(:long_job) AS cancelled_by_owner;
SELECT wait_for_job(:long_job) AS status;
SELECT ai_grant_model('trainee-mlm', 'ai_other') AS granted;
SELECT ai_grant_model('trainee-mlm', 'ai_other') AS granted_again;
SELECT ai_grant_model(NULL, 'ai_other') IS NULL AS null_model, ai_revoke_model('trainee-mlm', NULL) IS NULL AS null_role;
SELECT pg_temp.try($$SELECT ai_grant_model('trainee-mlm', 'no_such_role')$$) AS unknown_role;
SELECT model, grantee, grantor FROM ai.model_users;
RESET ROLE;
SET ROLE ai_nologin;
SELECT count(*) AS grants_seen_by_others FROM ai.model_users;
RESET ROLE;
SET ROLE ai_other;
SELECT name, owner FROM ai.models;
SELECT count(*) > 0 AS files_seen_once_granted FROM ai.model_files WHERE model = 'trainee-mlm';
SELECT count(*) AS answers FROM ai_fill_mask('the [MASK] sat .', 'trainee-mlm', 2);
RESET ROLE;
SET ROLE ai_trainee;
SELECT ai_revoke_model('trainee-mlm', 'ai_other') AS revoked;
RESET ROLE;
SET ROLE ai_other;
SELECT count(*) AS models_seen_after_revoke FROM ai.models;
RESET ROLE;

-- A role that cannot log in cannot have a worker connect as it: refused before anything is queued.
SET ROLE ai_nologin;
SELECT pg_temp.try($$SELECT ai_pretrain_async('nologin', 'sentences', 'mlm')$$) AS nologin_job;
RESET ROLE;
SELECT count(*) AS jobs_of_nologin FROM ai.jobs WHERE owner = 'ai_nologin'::regrole;

-- 2. Catalog rows written by hand gain nothing. A path row loads only while its owner may read the server's
-- files; sha256 and files_sha256 are hex digests, file paths stay inside the model's directory.
SET ROLE ai_other;
INSERT INTO ai.models (name, task, architecture, source, config, sha256)
VALUES ('by-hand', 'fill-mask', 'bert', :'fixtures' || '/models/bert-mlm', '{}', repeat('0', 64));
SELECT pg_temp.try($$SELECT ai_fill_mask('alice is eating [MASK] .', 'by-hand')$$) AS path_row_without_rights;
SELECT pg_temp.try($$INSERT INTO ai.models (name, task, architecture, source, config, sha256)
    VALUES ('x', 'fill-mask', 'bert', 'x', '{}', '../../../../tmp/x')$$) AS sha256_as_a_path;
SELECT pg_temp.try($$INSERT INTO ai.models (name, task, architecture, source, stored, config, sha256, files_sha256)
    VALUES ('x', 'fill-mask', 'bert', 'x', true, '{}', repeat('0', 64), '../x')$$) AS files_sha256_as_a_path;
INSERT INTO ai.models (name, task, architecture, source, stored, config, sha256, files_sha256)
VALUES ('stored-by-hand', 'fill-mask', 'bert', 'x', true, '{}', repeat('0', 64), repeat('a', 64));
SELECT pg_temp.try($$INSERT INTO ai.model_files VALUES ('stored-by-hand', '../../../../tmp/authorized_keys', 0, 'x')$$)
    AS file_outside;
SELECT pg_temp.try($$INSERT INTO ai.model_files VALUES ('stored-by-hand', '1_Pooling/../../x', 0, 'x')$$)
    AS file_through_dotdot;
SELECT pg_temp.try($$INSERT INTO ai.model_files VALUES ('stored-by-hand', '/etc/x', 0, 'x')$$) AS absolute_file;
INSERT INTO ai.model_files VALUES ('stored-by-hand', 'config.json', 0, '{}');
SELECT pg_temp.try($$SELECT ai_fill_mask('alice is eating [MASK] .', 'stored-by-hand')$$) AS forged_files_sha256;
RESET ROLE;
SELECT copy_exists(repeat('a', 64)) AS forged_copy_written;
DELETE FROM ai.models WHERE name IN ('by-hand', 'stored-by-hand');

-- Model files must be regular files: a FIFO or an unreadable directory is an error, never a hang; with
-- pg_ai.model_paths set, a link that leads outside it is refused.
\set scratch /tmp/pg_ai_security
SELECT format('rm -rf %1$s && mkdir -p %1$s && cp -r %2$s/models/bert-mlm %1$s/fifo && mkfifo %1$s/fifo/special_tokens_map.json'
              ' && cp -r %2$s/models/bert-mlm %1$s/link && ln -sf /etc/passwd %1$s/link/special_tokens_map.json'
              ' && mkdir %1$s/closed && chmod 000 %1$s/closed'
              ' && cp -r %2$s/models/bert-classifier %1$s/relabelled && sed -i s/food/cuisine/ %1$s/relabelled/config.json',
              :'scratch', :'fixtures') AS setup \gset
COPY (SELECT) TO PROGRAM :'setup';
SELECT pg_temp.try(format('SELECT ai_load_model(%L, %L, store => true)', 'fifo', :'scratch' || '/fifo')) AS fifo;
SELECT pg_temp.try(format('SELECT ai_load_model(%L, %L)', 'closed', :'scratch' || '/closed')) AS unreadable_directory;
SET pg_ai.model_paths = :'scratch';
SELECT pg_temp.try(format('SELECT ai_load_model(%L, %L, store => true)', 'link', :'scratch' || '/link')) AS link_outside;
RESET pg_ai.model_paths;

-- 6. Stored models with the same weights and different configs keep their own labels in every backend.
SELECT ai_load_model('labels-a', :'fixtures' || '/models/bert-classifier', store => true);
SELECT ai_load_model('labels-b', :'scratch' || '/relabelled', store => true);
SELECT (SELECT sha256 FROM ai.models WHERE name = 'labels-a') = (SELECT sha256 FROM ai.models WHERE name = 'labels-b')
    AS same_weights,
    (SELECT files_sha256 FROM ai.models WHERE name = 'labels-a') <> (SELECT files_sha256 FROM ai.models WHERE name = 'labels-b')
    AS own_copies;
\c
\i tests/sql/_helpers.psql
SELECT ai_classify_label('i love pasta .', 'labels-a') AS a, ai_classify_label('i love pasta .', 'labels-b') AS b;

-- 7. Dropping a model removes its written-out copy; a rolled-back training leaves neither files nor a loaded model.
SELECT files_sha256 AS sha FROM ai.models WHERE name = 'labels-b' \gset
SELECT copy_exists(:'sha') AS copy_before_drop;
BEGIN;
SELECT ai_drop_model('labels-b');
ROLLBACK;
SELECT copy_exists(:'sha') AS copy_after_rolled_back_drop;
SELECT ai_drop_model('labels-b');
SELECT copy_exists(:'sha') AS copy_after_drop;
BEGIN;
SET LOCAL client_min_messages = warning;  -- the NOTICE of the last step carries a speed
SELECT ai_pretrain('rolled-back', 'sentences', 'mlm', '{"max_steps": 2, "log_every": 100}') IS NOT NULL AS trained;
SELECT files_sha256 AS rolled_sha FROM ai.models WHERE name = 'rolled-back' \gset
SELECT copy_exists(:'rolled_sha') AS copy_in_transaction;
ROLLBACK;
SELECT copy_exists(:'rolled_sha') AS copy_after_rollback;
SELECT count(*) AS listed_after_rollback FROM ai_loaded_models() WHERE name = 'rolled-back';
BEGIN;
SAVEPOINT registering;
SELECT ai_load_model('in-a-savepoint', :'fixtures' || '/models/bert-mlm');
ROLLBACK TO registering;
SELECT count(*) AS listed_after_rollback_to_savepoint FROM ai_loaded_models() WHERE name = 'in-a-savepoint';
COMMIT;
-- A training rolled back to a savepoint leaves no files either; one in a savepoint released keeps them.
BEGIN;
SET LOCAL client_min_messages = warning;
SAVEPOINT training;
SELECT ai_pretrain('trained-in-a-savepoint', 'sentences', 'mlm', '{"max_steps": 2, "log_every": 100}') IS NOT NULL
    AS trained;
SELECT files_sha256 AS savepoint_sha FROM ai.models WHERE name = 'trained-in-a-savepoint' \gset
ROLLBACK TO training;
SELECT copy_exists(:'savepoint_sha') AS copy_after_rollback_to_savepoint;
SAVEPOINT kept;
SELECT ai_pretrain('kept-from-a-savepoint', 'sentences', 'mlm', '{"max_steps": 3, "log_every": 100}') IS NOT NULL
    AS trained;
SELECT files_sha256 AS kept_sha FROM ai.models WHERE name = 'kept-from-a-savepoint' \gset
RELEASE kept;
COMMIT;
SELECT copy_exists(:'kept_sha') AS copy_after_released_savepoint_commits;
SELECT ai_drop_model('kept-from-a-savepoint');

-- 3. Sizes that inputs and options choose are checked against the call's memory budget before anything is
-- allocated: 53200, and the backend goes on. Under an address-space cap (prlimit, ulimit -v) the budget is at
-- most what is left of it.
SET pg_ai.max_memory_per_call = '1GB';
SELECT pg_temp.try($$SELECT ai_pretrain('huge', 'sentences', 'mlm',
    '{"hidden_size": 8192, "layers": 96, "heads": 64, "vocab_size": 1000000}')$$) AS absurd_model;
SELECT pg_temp.try($$SELECT ai_pretrain('wide', 'sentences', 'mlm', '{"batch_size": 4096, "max_length": 8192}')$$)
    AS absurd_batch;
SELECT ai_load_model('topic', :'fixtures' || '/models/bert-classifier');
SELECT pg_temp.try($$SELECT count(*) FROM unnest(ai_classify_label(array_fill(repeat('word ', 100), ARRAY[200000]), 'topic'))$$)
    AS huge_array;
RESET pg_ai.max_memory_per_call;
SELECT format('prlimit --pid %s --as=%s', pg_backend_pid(),
              split_part(pg_read_file('/proc/self/statm'), ' ', 1)::bigint * 4096 + 200000000) AS cap \gset
COPY (SELECT) TO PROGRAM :'cap';
SELECT left(pg_temp.try($$SELECT count(*) FROM unnest(ai_classify_label(array_fill(repeat('word ', 100), ARRAY[30000]), 'topic'))$$), 5)
    AS array_beyond_the_cap;
SELECT ai_classify_label('i love pasta .', 'topic') AS still_answers;
\c
\i tests/sql/_helpers.psql

-- Smaller: NULL in, NULL out; numbers jsonb holds but a double cannot are 22023.
SELECT ai_pretrain(NULL, 'sentences', 'mlm') IS NULL AS null_name, ai_finetune('x', NULL, 'sentences', 'mlm') IS NULL AS null_base;
SELECT pg_temp.try($$SELECT ai_pretrain('x', 'sentences', 'mlm', '{"learning_rate": 1e309}')$$) AS huge_number;
SELECT pg_temp.try($$SELECT ai_chat('[{"role": "user", "content": "hi", "x": 1e400}]', 'nothing')$$) AS huge_number_in_messages;

COPY (SELECT) TO PROGRAM 'chmod -R u+rwx /tmp/pg_ai_security && rm -rf /tmp/pg_ai_security';
DROP OWNED BY ai_trainee, ai_other, ai_nologin;
DELETE FROM ai.models;
DROP ROLE ai_trainee;
DROP ROLE ai_other;
DROP ROLE ai_nologin;
