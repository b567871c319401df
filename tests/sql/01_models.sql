-- The model registry: ai_load_model, ai.models, ai_loaded_models, ai_unload_model, ai_drop_model.
CREATE EXTENSION pg_ai;
\i tests/sql/_helpers.psql

-- The task comes from config.json's architectures when it is not given.
SELECT ai_load_model('mlm', :'fixtures' || '/models/bert-mlm');
SELECT ai_load_model('sentiment', :'fixtures' || '/models/distilbert-classifier');
SELECT ai_load_model('tagger', :'fixtures' || '/models/bert-ner', task => 'token-classification');
SELECT ai_load_model('encoder', :'fixtures' || '/models/distilbert-mlm', task => 'feature-extraction');
SELECT name, task, architecture, stored, config->>'model_type' AS model_type, length(sha256) AS sha256_length
FROM ai.models ORDER BY name;

-- hf:ORG/NAME is looked up in the local Hugging Face cache; nothing is downloaded.
SELECT set_config('pg_ai.hf_cache_dir', :'fixtures' || '/hf-cache', false) IS NOT NULL AS cache_set;
SELECT ai_load_model('from-cache', 'hf:pg-ai/tiny-bert');
SELECT pg_temp.try($$SELECT ai_load_model('absent', 'hf:pg-ai/not-cached')$$);
RESET pg_ai.hf_cache_dir;

-- Models stay loaded in the backend; unloading forgets them here only.
SELECT name, architecture, parameters, calls FROM ai_loaded_models() ORDER BY name;
SELECT ai_unload_model('mlm'), ai_unload_model('mlm');
SELECT count(*) AS loaded FROM ai_loaded_models() WHERE name = 'mlm';

-- Errors.
SELECT pg_temp.try($$SELECT ai_load_model('mlm', '/srv/models/bert')$$) AS duplicate;
SELECT pg_temp.try($$SELECT ai_load_model('x', '/nonexistent/model')$$) AS missing_directory;
SELECT pg_temp.try($$SELECT ai_load_model('x', 'models/bert')$$) AS relative_path;
SELECT pg_temp.try(format('SELECT ai_load_model(%L, %L)', 'x', :'fixtures' || '/broken/no-tokenizer')) AS no_tokenizer;
SELECT pg_temp.try(format('SELECT ai_load_model(%L, %L)', 'x', :'fixtures' || '/broken/no-weights')) AS no_weights;
SELECT pg_temp.try(format('SELECT ai_load_model(%L, %L)', 'x', :'fixtures' || '/broken/corrupt-weights')) AS corrupt_weights;
SELECT pg_temp.try(format('SELECT ai_load_model(%L, %L, task => %L)', 'x', :'fixtures' || '/models/bert-mlm', 'speech-recognition')) AS unknown_task;
SELECT pg_temp.try(format('SELECT ai_load_model(%L, %L, task => %L)', 'x', :'fixtures' || '/models/bert-mlm', 'text-classification')) AS task_the_model_cannot_do;
SELECT pg_temp.try($$SELECT ai_load_model('', '/nonexistent')$$) AS empty_name;
SELECT pg_temp.try($$SELECT ai_drop_model('nothing-here')$$) AS drop_unknown;
SELECT count(*) AS models_after_errors FROM ai.models;

-- Reading server files is a privilege: superusers and members of pg_read_server_files only.
CREATE ROLE ai_reader;
SET ROLE ai_reader;
SELECT pg_temp.try(format('SELECT ai_load_model(%L, %L)', 'mine', :'fixtures' || '/models/bert-mlm')) AS not_privileged;
-- Using a registered model needs no privilege.
SELECT token FROM ai_fill_mask('alice is eating [MASK] .', 'mlm', 1);
RESET ROLE;
DROP ROLE ai_reader;

-- Rows belong to the role that registered them: with INSERT and DELETE granted to several roles, each
-- registers models as itself and drops only its own.
CREATE ROLE ai_alice;
CREATE ROLE ai_bob;
GRANT pg_read_server_files TO ai_alice, ai_bob;
GRANT INSERT, DELETE ON ai.models, ai.model_files TO ai_alice, ai_bob;
SET ROLE ai_alice;
SELECT ai_load_model('alices', :'fixtures' || '/models/bert-mlm');
RESET ROLE;
SET ROLE ai_bob;
SELECT pg_temp.try($$SELECT ai_drop_model('alices')$$) AS drop_another_roles_model;
DELETE FROM ai.models WHERE name = 'alices';
SELECT name, owner FROM ai.models WHERE name = 'alices';
RESET ROLE;
SET ROLE ai_alice;
SELECT ai_drop_model('alices');
RESET ROLE;
REVOKE ALL ON ai.models, ai.model_files FROM ai_alice, ai_bob;
DROP ROLE ai_alice;
DROP ROLE ai_bob;

-- pg_ai.model_paths limits where models may be loaded from (links resolved).
SET pg_ai.model_paths = '/srv/models, /nonexistent';
SELECT pg_temp.try(format('SELECT ai_load_model(%L, %L)', 'x', :'fixtures' || '/models/bert-mlm')) AS outside_model_paths;
SELECT set_config('pg_ai.model_paths', :'fixtures' || '/models', false) IS NOT NULL AS set;
SELECT ai_load_model('inside', :'fixtures' || '/models/bert-mlm');
SELECT ai_drop_model('inside');
RESET pg_ai.model_paths;

-- pg_ai.max_cache_memory: beyond it, the least recently used models are unloaded from this backend.
SELECT ai_load_model('cap-a', :'fixtures' || '/models/bert-classifier');
SELECT ai_load_model('cap-b', :'fixtures' || '/models/distilbert-classifier');
-- About 100 kB each (exactly, it depends on the CPU: with AVX-512 an encoder's weights are padded to tiles of 16
-- rows): each fits under 150kB, the two together do not.
SELECT name, memory_bytes BETWEEN 90000 AND 120000 AS about_100kb
FROM ai_loaded_models() WHERE name LIKE 'cap-%' ORDER BY name;
SET pg_ai.max_cache_memory = '150kB';
SELECT ai_classify_label('i love eating pasta .', 'cap-a') AS uses_a;
SELECT ai_unload_model('cap-b') AS b_was_loaded;
SELECT ai_classify_label('i love eating pasta .', 'cap-b') AS loading_b_unloads_a;
SELECT name AS still_loaded FROM ai_loaded_models();
RESET pg_ai.max_cache_memory;
SELECT ai_drop_model('cap-a'), ai_drop_model('cap-b');

-- Registering writes the catalog: refused in a read-only transaction (and on a standby, tests/replica.sh).
BEGIN READ ONLY;
SELECT pg_temp.try(format('SELECT ai_load_model(%L, %L)', 'ro', :'fixtures' || '/models/bert-mlm')) AS read_only;
ROLLBACK;

-- NULL in, NULL out.
SELECT ai_load_model(NULL, '/x') IS NULL AS null_name, ai_load_model('x', NULL) IS NULL AS null_source;

SELECT ai_drop_model('from-cache');
SELECT name FROM ai.models ORDER BY name;

-- The catalog becomes Citus reference tables only where Citus is (tests/citus.sh runs it on a cluster).
SELECT pg_temp.try('SELECT ai_distribute_models()') AS without_citus;
