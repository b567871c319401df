-- ai_embed with the real all-MiniLM-L6-v2 (scripts/fetch-minilm.sh): sentence-transformers'
-- mean pooling and normalisation, and a small semantic search.
CREATE EXTENSION pg_ai;
\i tests/sql/_helpers.psql
SELECT ai_load_model('minilm', :'root' || '/.models/all-MiniLM-L6-v2');
SELECT task, architecture FROM ai.models;

SELECT array_length(ai_embed('A man is eating food.', 'minilm'), 1) AS dimensions;
SELECT round(sqrt((SELECT sum(x::float8 * x) FROM unnest(ai_embed('A man is eating food.', 'minilm')) x))::numeric, 5) AS norm;

-- Cosine similarity of unit vectors is their dot product.
CREATE FUNCTION dot(a real[], b real[]) RETURNS float8 LANGUAGE sql IMMUTABLE STRICT
    RETURN (SELECT sum(x::float8 * y) FROM unnest(a, b) AS t(x, y));
CREATE TABLE sentences (id int, body text);
INSERT INTO sentences VALUES
    (1, 'A man is eating a piece of bread.'), (2, 'The new movie is awesome.'),
    (3, 'A man is riding a horse.'), (4, 'Someone is having a meal.');
SELECT id, body, round(dot(ai_embed(body, 'minilm'), ai_embed('A man is eating food.', 'minilm'))::numeric, 3) AS similarity
FROM sentences ORDER BY similarity DESC;

-- sentence-transformers' own embedding (tests/fixtures/golden/all-MiniLM-L6-v2.json): cosine > 0.9999.
SELECT dot(ai_embed('A man is eating food.', 'minilm'),
           (SELECT array_agg(x::real ORDER BY n) FROM json_array_elements_text(
               (pg_read_file(:'fixtures' || '/golden/all-MiniLM-L6-v2.json')::json -> 'embed' -> 0 -> 'embedding'))
               WITH ORDINALITY AS e(x, n))) > 0.9999 AS matches_sentence_transformers;

-- The array form: one row per input, NULL for NULL.
SELECT ord, embedding IS NULL AS is_null, array_length(embedding, 1) AS dimensions
FROM ai_embed(ARRAY['first', NULL, 'third'], 'minilm');
SELECT bool_and(abs(x - y) < 1e-5) AS array_equals_single
FROM ai_embed(ARRAY['A man is eating food.', 'The new movie is awesome.'], 'minilm') a,
     unnest(a.embedding, ai_embed((ARRAY['A man is eating food.', 'The new movie is awesome.'])[a.ord], 'minilm')) AS t(x, y);

SELECT ai_embed(NULL, 'minilm') IS NULL AS null_embedding;

-- ai_similarity: the cosine of two texts' embeddings, as sentence-transformers' util.cos_sim; the same ranking as
-- the dot products above. NULL in, NULL out; a decoder has no embeddings (42809).
SELECT id, round(ai_similarity(body, 'A man is eating food.', 'minilm')::numeric, 3) AS similarity
FROM sentences ORDER BY similarity DESC;
SELECT abs(ai_similarity('A man is eating food.', 'The new movie is awesome.', 'minilm')
           - dot(ai_embed('A man is eating food.', 'minilm'), ai_embed('The new movie is awesome.', 'minilm'))) < 1e-6
       AS equals_the_dot_of_unit_vectors;
SELECT ai_similarity(NULL, 'x', 'minilm') IS NULL AS null_similarity;
SELECT ai_load_model('decoder', :'fixtures' || '/models/gpt2') \g /dev/null
SELECT pg_temp.try($$SELECT ai_similarity('a', 'b', 'decoder')$$) AS decoder_has_no_embeddings;
SELECT ai_drop_model('decoder');

-- pg_ai.timing: where a call's time goes, one NOTICE per call (durations shown as # here).
SELECT ai_load_model('timed', :'fixtures' || '/models/bert-mlm');
SELECT ai_unload_model('timed');
SET pg_ai.timing = on;
SELECT array_length(ai_embed('alice is eating bread .', 'timed'), 1) AS dimensions;
SELECT token FROM ai_fill_mask('alice is eating [MASK] .', 'timed', 1);
RESET pg_ai.timing;

-- pg_ai.device: encoders loaded while it says cuda run on the first GPU, in a build with the cuda feature
-- (scripts/build-cuda.sh). This build has none, so loading an encoder says so. Other models load onto the CPU
-- whatever it says, and models loaded before stay where they are.
SET pg_ai.device = cuda;
SELECT pg_temp.try(format('SELECT ai_load_model(%L, %L)', 'on-gpu', :'fixtures' || '/models/bert-mlm')) AS without_cuda;
SELECT pg_temp.try(format('SELECT ai_load_model(%L, %L)', 'gpt2-on-cpu', :'fixtures' || '/models/gpt2')) AS gpt2_loads;
SELECT array_length(ai_embed('A man is eating food.', 'minilm'), 1) AS loaded_before_still_answers;
SELECT pg_temp.try($$SET pg_ai.device = 'tpu'$$) AS unknown_device;
RESET pg_ai.device;

-- ai_chunk: a long text in pieces the model reads whole, cut between words, with their character offsets; by
-- default as many tokens as the model reads at once (MiniLM: 256 less [CLS] and [SEP]).
SELECT ord, chunk, start_pos, end_pos, tokens
FROM ai_chunk('the cat sat in the park . the dog ran to the river . bob lives in paris .', 'timed',
              max_tokens => 8, overlap => 2);
SELECT count(*) AS chunks, max(tokens) AS most_tokens, min(start_pos) AS first, max(end_pos) AS last
FROM ai_chunk(repeat('Semantic search finds what a query means. ', 200), 'minilm');
-- Each chunk then embeds whole: a semantic search over the pieces of a long document.
WITH pieces AS (
    SELECT ord, chunk FROM ai_chunk(repeat('A man is eating food. ', 30) || repeat('The new movie is awesome. ', 30),
                                    'minilm', max_tokens => 64))
SELECT ord, left(chunk, 30) AS starts_with,
       round(ai_similarity(chunk, 'Someone is having a meal.', 'minilm')::numeric, 2) AS similarity
FROM pieces ORDER BY ord;
SELECT count(*) AS null_gives_no_rows FROM ai_chunk(NULL, 'minilm');
SELECT pg_temp.try($$SELECT * FROM ai_chunk('some text', 'minilm', max_tokens => 255)$$) AS chunk_beyond_the_model;
SELECT pg_temp.try($$SELECT * FROM ai_chunk('some text', 'minilm', max_tokens => 8, overlap => 8)$$) AS overlap_too_large;
SELECT pg_temp.try($$SELECT * FROM ai_chunk('some text', 'minilm', overlap => -1)$$) AS negative_overlap;
SELECT pg_temp.try($$SELECT * FROM ai_chunk('some text', 'decoder')$$) AS decoder_has_no_chunks;
