-- ai_fill_mask: best first, scores are probabilities, as transformers' fill-mask pipeline.
CREATE EXTENSION pg_ai;
\i tests/sql/_helpers.psql
SELECT ai_load_model('mlm', :'fixtures' || '/models/bert-mlm');
SELECT ai_load_model('distil', :'fixtures' || '/models/distilbert-mlm');

SELECT token, round(score::numeric, 4) AS score, sequence FROM ai_fill_mask('the cat sat in the [MASK] .', 'mlm');
SELECT token, round(score::numeric, 4) AS score, sequence FROM ai_fill_mask('Frank is playing [MASK]!', 'distil', top_k => 3);

-- MPNet (all-mpnet-base-v2's family): a relative position bias in every layer; its mask token is <mask>.
SELECT ai_load_model('mpnet', :'fixtures' || '/models/mpnet-mlm');
SELECT token, round(score::numeric, 4) AS score, sequence FROM ai_fill_mask('alice is eating <mask> .', 'mpnet', top_k => 3);
SELECT ord, token FROM ai_fill_mask(ARRAY['bob lives in <mask> .', 'the cat sat in the <mask> .'], 'mpnet', 1);
SELECT array_length(ai_embed('the cat sat in the park .', 'mpnet'), 1) AS mpnet_embedding_size;

-- The array form batches internally and answers as single calls do; NULL elements give no rows.
SELECT ord, token, round(score::numeric, 4) AS score
FROM ai_fill_mask(ARRAY['alice is eating [MASK] .', NULL, '[MASK] is coming today .'], 'mlm', 2);
\set inputs '{"bob lives in [MASK] .", "the [MASK] ran to the river ."}'
SELECT (SELECT array_agg(token ORDER BY ord, score DESC) FROM ai_fill_mask(:'inputs'::text[], 'mlm'))
     = (SELECT array_agg(f.token ORDER BY i, f.score DESC)
        FROM unnest(:'inputs'::text[]) WITH ORDINALITY AS u(t, i), ai_fill_mask(t, 'mlm') AS f) AS array_equals_single;

-- pg_ai.int8_encoders holds the weights of BERT, DistilBERT and RoBERTa models and their heads as 8-bit blocks,
-- for models loaded after the change: faster on real-size models and about a third of the memory; scores move
-- slightly (engine/tests/golden.rs measures how much).
SET pg_ai.int8_encoders = on;
SELECT ai_load_model('mlm-int8', :'fixtures' || '/models/bert-mlm') \g /dev/null
RESET pg_ai.int8_encoders;
SELECT i.token, abs(i.score - f.score) < 0.02 AS score_within_002_of_f32
FROM ai_fill_mask('the cat sat in the [MASK] .', 'mlm-int8') AS i
LEFT JOIN ai_fill_mask('the cat sat in the [MASK] .', 'mlm') AS f USING (token)
ORDER BY i.score DESC;
SELECT name, parameters, memory_bytes FROM ai_loaded_models() WHERE name ~ '^mlm' ORDER BY name;

-- NULL in, no rows out.
SELECT count(*) AS rows_for_null FROM ai_fill_mask(NULL, 'mlm');

-- Errors.
SELECT pg_temp.try($$SELECT * FROM ai_fill_mask('no mask here', 'mlm')$$) AS no_mask;
SELECT pg_temp.try($$SELECT * FROM ai_fill_mask('[MASK] and [MASK]', 'mlm')$$) AS two_masks;
SELECT pg_temp.try($$SELECT * FROM ai_fill_mask('the [MASK] .', 'mlm', 0)$$) AS top_k_zero;
SELECT pg_temp.try($$SELECT * FROM ai_fill_mask('the [MASK] .', 'mlm', 100000)$$) AS top_k_too_large;
SELECT pg_temp.try($$SELECT * FROM ai_fill_mask('the [MASK] .', 'unknown-model')$$) AS unknown_model;
SELECT pg_temp.try($$SELECT * FROM ai_fill_mask(repeat('word ', 100) || '[MASK]', 'mlm')$$) AS too_long;
SELECT ai_load_model('clf', :'fixtures' || '/models/bert-classifier');
SELECT pg_temp.try($$SELECT * FROM ai_fill_mask('the [MASK] .', 'clf')$$) AS wrong_task;
