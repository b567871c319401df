-- pg_ai demo: semantic search over a small table with the real all-MiniLM-L6-v2, and the encoder
-- tasks on the small test models.
\set ON_ERROR_STOP on
\pset footer off
CREATE EXTENSION pg_ai;

\echo '== Register the model (its files are read by the server; store => true would copy them into the database)'
SELECT ai_load_model('minilm', :'root' || '/.models/all-MiniLM-L6-v2');

\echo '== A small table of documents, embedded in one pass with the array form'
CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL, embedding real[]);
INSERT INTO docs (id, body) VALUES
    (1, 'A man is eating a piece of bread.'),
    (2, 'The new movie is awesome.'),
    (3, 'A man is riding a white horse on an enclosed ground.'),
    (4, 'Two people are having dinner at a restaurant.'),
    (5, 'PostgreSQL stores its tables in 8 kB pages.'),
    (6, 'The film got great reviews from critics.');
UPDATE docs SET embedding = e.embedding
FROM ai_embed(ARRAY(SELECT body FROM docs ORDER BY id), 'minilm') AS e
WHERE docs.id = e.ord;

-- Embeddings are unit vectors: their dot product is the cosine similarity.
CREATE FUNCTION cosine(a real[], b real[]) RETURNS float8 LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN (SELECT sum(x::float8 * y) FROM unnest(a, b) AS t(x, y));

\echo '== Which documents are about eating?'
SELECT id, body, round(cosine(embedding, ai_embed('A man is eating food.', 'minilm'))::numeric, 3) AS similarity
FROM docs ORDER BY similarity DESC LIMIT 3;

\echo '== And which about cinema?'
SELECT id, body, round(cosine(embedding, ai_embed('I enjoyed that film', 'minilm'))::numeric, 3) AS similarity
FROM docs ORDER BY similarity DESC LIMIT 2;

\echo '== The other encoder tasks, on the small test models (tests/fixtures)'
SELECT ai_load_model('tiny-mlm', :'root' || '/tests/fixtures/models/bert-mlm');
SELECT token, round(score::numeric, 3) AS score, sequence FROM ai_fill_mask('alice is eating [MASK] .', 'tiny-mlm', 3);
SELECT ai_load_model('tiny-topic', :'root' || '/tests/fixtures/models/bert-classifier');
SELECT label, round(score::numeric, 3) AS score FROM ai_classify('we watched the tennis match .', 'tiny-topic');
SELECT ai_load_model('tiny-ner', :'root' || '/tests/fixtures/models/bert-ner');
SELECT entity, label, start_pos, end_pos FROM ai_ner('Carol Smith flew to New York yesterday.', 'tiny-ner');

\echo '== Text generation with a small GPT-2 (tests/fixtures/models/gpt2, trained on a few template sentences)'
SELECT ai_load_model('tiny-gpt2', :'root' || '/tests/fixtures/models/gpt2');
SELECT ai_generate('the cat', 'tiny-gpt2') AS greedy,
       ai_generate('alice', 'tiny-gpt2', temperature => 0.9, seed => 7) AS sampled;

\echo '== A real instruction model: SmolLM2-135M-Instruct from its GGUF file (tokenizer and chat template inside)'
SELECT ai_load_model('smollm2', :'root' || '/.models/SmolLM2-135M-Instruct.Q4_1.gguf');
SELECT ai_chat('[{"role": "user", "content": "What is the capital of France?"}]', 'smollm2', max_tokens => 40) AS reply;
SELECT ai_chat('[{"role": "system", "content": "You answer in one short sentence."},
                 {"role": "user", "content": "Why is the sky blue?"}]', 'smollm2', max_tokens => 60) AS reply;

\echo '== Loaded in this backend'
SELECT name, architecture, parameters, pg_size_pretty(memory_bytes) AS memory, round(load_ms::numeric, 1) AS load_ms
FROM ai_loaded_models() ORDER BY name;
