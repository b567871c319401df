-- ai_translate and ai_summarize with the small T5, Marian and BART fixtures (greedy and beam ids checked against
-- transformers' generate in engine/tests/golden.rs). Both learned a toy English-to-German word mapping.
CREATE EXTENSION pg_ai;
\i tests/sql/_helpers.psql
SELECT ai_load_model('t5', :'fixtures' || '/models/t5');
SELECT ai_load_model('marian', :'fixtures' || '/models/marian');
SELECT name, task, architecture FROM ai.models ORDER BY name;

-- T5 takes its one language pair from config.json, or the languages in words.
SELECT ai_translate('the cat sat in the park .', 't5');
SELECT ai_translate('alice is eating bread .', 't5', source_lang => 'English', target_lang => 'German');
-- Marian translates its own pair.
SELECT ai_translate('bob lives in vienna .', 'marian');

-- Beam search finds a likelier translation where greedy decoding goes astray.
SELECT ai_translate('fish', 'marian') AS greedy, ai_translate('fish', 'marian', num_beams => 3) AS beams;

-- The array form batches with padding and answers as single calls do; NULL elements stay NULL.
SELECT ai_translate(ARRAY['the horse ran to the river .', NULL, 'judy is eating cheese .'], 'marian', num_beams => 3);
SELECT ai_translate(ARRAY['the horse ran to the river .', 'judy is eating cheese .'], 't5')
     = ARRAY[ai_translate('the horse ran to the river .', 't5'), ai_translate('judy is eating cheese .', 't5')]
       AS batch_equals_single;

-- max_tokens bounds the output.
SELECT ai_translate('the cat sat in the park .', 'marian', max_tokens => 3);

-- Summaries with T5's summarize: prefix.
SELECT ai_summarize('the dog sat in the garden .', 't5');
SELECT ai_summarize(ARRAY['carol lives in rome .', 'the dog sat in the garden .'], 't5', num_beams => 2);
-- A BART summariser (trained to repeat the names three times) with bart-large-cnn's kind of generation config:
-- its own 4 beams unless told otherwise, no trigram twice, at least 6 tokens.
SELECT ai_load_model('bart', :'fixtures' || '/models/bart');
SELECT ai_summarize('the cat sat in the park .', 'bart') AS four_beams,
       ai_summarize('the cat sat in the park .', 'bart', num_beams => 1) AS greedy;
SELECT ai_summarize(ARRAY['alice is eating bread .', NULL], 'bart', num_beams => 3);

-- NULL in, NULL out.
SELECT ai_translate(NULL::text, 't5') IS NULL AS null_input, ai_summarize('x', NULL) IS NULL AS null_model;

-- Errors.
SELECT pg_temp.try($$SELECT ai_translate('x', 't5', source_lang => 'English')$$);
SELECT pg_temp.try($$SELECT ai_translate('x', 't5', num_beams => 0)$$);
SELECT pg_temp.try($$SELECT ai_translate('x', 't5', max_tokens => 100000)$$);
SELECT pg_temp.try($$SELECT ai_summarize('x', 'marian')$$);
SELECT pg_temp.try($$SELECT ai_generate('x', 't5')$$);
SELECT pg_temp.try($$SELECT ai_translate(repeat('long ', 100), 'marian')$$);
SELECT pg_temp.try($$SELECT ai_translate('x', 'nope')$$);
