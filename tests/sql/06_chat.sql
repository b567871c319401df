-- The real SmolLM2-135M-Instruct from its GGUF file (scripts/fetch-smollm2.sh): tokenizer and chat
-- template come from the file itself.
CREATE EXTENSION pg_ai;
\i tests/sql/_helpers.psql
SELECT ai_load_model('smollm2', :'root' || '/.models/SmolLM2-135M-Instruct.Q4_1.gguf');
SELECT name, task, architecture, config->>'general.architecture' AS gguf_architecture FROM ai.models;

-- Greedy answers are deterministic; this one names the capital.
SELECT ai_chat('[{"role": "user", "content": "Name the capital city of France."}]', 'smollm2', max_tokens => 24)
       LIKE '%Paris%' AS answers_paris;
SELECT length(ai_generate('The three primary colours are', 'smollm2', max_tokens => 8)) > 0 AS continues_text;

-- Errors.
SELECT pg_temp.try($$SELECT ai_chat('{"role": "user"}', 'smollm2')$$) AS not_an_array;
SELECT pg_temp.try($$SELECT ai_chat('[{"role": "robot", "content": "hi"}]', 'smollm2')$$) AS unknown_role;
SELECT ai_load_model('gpt2', :'fixtures' || '/models/gpt2');
SELECT pg_temp.try($$SELECT ai_chat('[{"role": "user", "content": "hi"}]', 'gpt2')$$) AS no_chat_template;
SELECT pg_temp.try(format('SELECT ai_load_model(%L, %L)', 'x', '/nonexistent/model.gguf')) AS missing_gguf;
SELECT ai_chat(NULL, 'smollm2') IS NULL AS null_messages;

-- What this backend holds: SmolLM2's 135M parameters, stored as Q4_1 (94 MB), are held as Q8_0, which candle
-- multiplies with SIMD (with the token embeddings also in f16 for lookup, 57 MB); pg_ai.gguf_requantize = off keeps
-- them as the file stores them (for models loaded after): 94 + 57 MB less the small norms. On CPUs with VNNI the
-- Q8_0 rows are padded for candle's tiled kernels (see README), so that size depends on the CPU; it is always more.
SET pg_ai.gguf_requantize = off;
SELECT ai_load_model('smollm2-as-stored', :'root' || '/.models/SmolLM2-135M-Instruct.Q4_1.gguf') \g /dev/null
SELECT ai_chat('[{"role": "user", "content": "Name the capital city of France."}]', 'smollm2-as-stored',
               max_tokens => 24) LIKE '%Paris%' AS answers_paris_as_stored;
RESET pg_ai.gguf_requantize;
SELECT name, architecture, parameters,
       CASE WHEN name <> 'smollm2' THEN pg_size_pretty(memory_bytes::bigint) END AS memory
FROM ai_loaded_models() ORDER BY name;
SELECT (SELECT memory_bytes FROM ai_loaded_models() WHERE name = 'smollm2')
       > (SELECT memory_bytes FROM ai_loaded_models() WHERE name = 'smollm2-as-stored') AS requantised_holds_more;
