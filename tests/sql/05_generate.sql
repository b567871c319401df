-- ai_generate and ai_generate_stream with the small GPT-2 fixture (greedy ids checked against
-- transformers' generate in engine/tests/golden.rs).
CREATE EXTENSION pg_ai;
\i tests/sql/_helpers.psql
SELECT ai_load_model('gpt2', :'fixtures' || '/models/gpt2');
SELECT name, task, architecture FROM ai.models;

-- Greedy by default: the continuation only, ending at the end-of-text token or max_tokens.
SELECT ai_generate('the cat', 'gpt2');
SELECT ai_generate('bob lives in', 'gpt2', max_tokens => 2);

-- The stream's pieces, in order, concatenate to what ai_generate returns.
SELECT * FROM ai_generate_stream('the dog ran to the', 'gpt2');
SELECT string_agg(piece, '') = ai_generate('alice is', 'gpt2') AS stream_equals_generate
FROM ai_generate_stream('alice is', 'gpt2') AS piece;

-- Sampling: the same seed gives the same text, different seeds differ.
SELECT ai_generate('the', 'gpt2', temperature => 1.5, seed => 42)
     = ai_generate('the', 'gpt2', temperature => 1.5, seed => 42) AS same_seed_same_text;
SELECT count(DISTINCT ai_generate('the', 'gpt2', temperature => 1.5, top_k => 50, top_p => 0.95, seed => s)) > 1
       AS seeds_differ
FROM generate_series(1, 8) AS s;

-- A stop string ends the text before it.
SELECT ai_generate('alice is', 'gpt2', stop => ARRAY['ing']);

-- NULL in, NULL out.
SELECT ai_generate(NULL, 'gpt2') IS NULL AS null_prompt;

-- Llama-family models from safetensors: RMSNorm, rotary positions, grouped-query attention.
SELECT ai_load_model('llama', :'fixtures' || '/models/llama');
SELECT task, architecture FROM ai.models WHERE name = 'llama';
SELECT ai_generate('the cat', 'llama'), ai_generate('bob lives in', 'llama', max_tokens => 3);

-- Llama's relatives: Qwen2 (query, key and value biases), Qwen3 (norms of each query and key head), Mistral, Phi-3
-- (fused projections, partial rotation), Gemma 2 and Gemma 3 (soft caps, norms after attention and MLP, GELU, scaled
-- embeddings, a rope base of its own for sliding-window layers) from safetensors, and GGUF files written as
-- llama.cpp's converter writes them (tests/fixtures/make_gguf_fixtures.py): each continues as transformers does on
-- its safetensors.
SELECT ai_load_model('qwen2', :'fixtures' || '/models/qwen2'), ai_load_model('qwen3', :'fixtures' || '/models/qwen3'),
       ai_load_model('mistral', :'fixtures' || '/models/mistral'), ai_load_model('phi3', :'fixtures' || '/models/phi3'),
       ai_load_model('gemma2', :'fixtures' || '/models/gemma2'),
       ai_load_model('gemma3', :'fixtures' || '/models/gemma3'),
       ai_load_model('qwen2-gguf', :'fixtures' || '/gguf/qwen2-q8_0.gguf'),
       ai_load_model('qwen3-gguf', :'fixtures' || '/gguf/qwen3-f32.gguf'),
       ai_load_model('mistral-gguf', :'fixtures' || '/gguf/mistral-q8_0.gguf');
SELECT name, task, architecture FROM ai.models WHERE name ~ '^(qwen|mistral|phi|gemma)' ORDER BY name;
SELECT name, ai_generate('bob lives in', name) FROM ai.models WHERE name ~ '^(qwen|mistral|phi|gemma)' ORDER BY name;
-- A GGUF file whose vocabulary is a sentencepiece BPE (Llama 2's kind): the text continues as llama.cpp's does
-- (engine/tests/golden.rs checks the ids), with the space its first piece carries.
SELECT ai_load_model('spm-gguf', :'fixtures' || '/gguf/spm-llama-q8_0.gguf') \g /dev/null
SELECT ai_generate('bob lives in', 'spm-gguf'), ai_generate('zoë ate', 'spm-gguf');

-- pg_ai.int8_decoders holds GPT-2 and Llama weights as 8-bit blocks, for models loaded after the change: a half
-- to a third of the memory (token embeddings are also held in f16 or f32 for lookup) and faster generation;
-- answers move slightly (engine/tests/golden.rs measures how much on SmolLM2's real weights); here they continue as in
-- f32 above.
SET pg_ai.int8_decoders = on;
SELECT ai_load_model('gpt2-int8', :'fixtures' || '/models/gpt2') \g /dev/null
SELECT ai_load_model('llama-int8', :'fixtures' || '/models/llama') \g /dev/null
RESET pg_ai.int8_decoders;
SELECT ai_generate('the cat', 'gpt2-int8') AS gpt2_int8, ai_generate('the cat', 'llama-int8') AS llama_int8;
-- Bytes held against the parameters' in f32 (to a tenth: AVX-512 kernels pad f32 weights to tiles of 16 rows).
SELECT name, parameters, round(memory_bytes / (4.0 * parameters), 1) AS of_f32_size
FROM ai_loaded_models() WHERE name ~ '^(gpt2|llama)' ORDER BY name;

-- Errors.
SELECT pg_temp.try($$SELECT ai_generate('the', 'gpt2', max_tokens => 0)$$) AS max_tokens_zero;
SELECT pg_temp.try($$SELECT ai_generate('the', 'gpt2', max_tokens => 100000)$$) AS max_tokens_too_large;
SELECT pg_temp.try($$SELECT ai_generate('the', 'gpt2', temperature => -1)$$) AS negative_temperature;
SELECT pg_temp.try($$SELECT ai_generate('the', 'gpt2', top_p => 0)$$) AS top_p_zero;
SELECT pg_temp.try($$SELECT ai_generate('the', 'gpt2', temperature => 1, top_k => -1)$$) AS negative_top_k;
SELECT pg_temp.try($$SELECT ai_generate('', 'gpt2')$$) AS empty_prompt;
SELECT pg_temp.try($$SELECT ai_generate(repeat('the cat ', 40), 'gpt2')$$) AS prompt_too_long;
SELECT ai_load_model('mlm', :'fixtures' || '/models/bert-mlm');
SELECT pg_temp.try($$SELECT ai_generate('the', 'mlm')$$) AS encoder_cannot_generate;
SELECT pg_temp.try($$SELECT * FROM ai_fill_mask('the [MASK]', 'gpt2')$$) AS decoder_cannot_fill_mask;

-- Pieces are made as rows are fetched: a cursor takes the first piece, and closing it early ends the generation.
BEGIN;
DECLARE pieces CURSOR FOR SELECT ai_generate_stream('the dog ran to the', 'gpt2') AS piece;
FETCH 1 FROM pieces;
CLOSE pieces;
COMMIT;
SELECT piece FROM ai_generate_stream('the dog ran to the', 'gpt2') AS piece LIMIT 1;
