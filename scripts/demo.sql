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
SELECT ai_chat('[{"role": "user", "content": "Name the capital city of France."}]', 'smollm2', max_tokens => 40) AS reply;
SELECT ai_chat('[{"role": "system", "content": "You answer in one short sentence."},
                 {"role": "user", "content": "Why is the sky blue?"}]', 'smollm2', max_tokens => 60) AS reply;

\echo '== Training from table rows: Debian''s fortunes (the fortunes package)'
-- Each file of /usr/share/games/fortunes holds fortunes separated by lines of "%".
CREATE TABLE fortunes (category text NOT NULL, body text NOT NULL);
INSERT INTO fortunes
SELECT category, regexp_replace(trim(f), '\s+', ' ', 'g')
FROM unnest(ARRAY['computers', 'food', 'sports', 'science', 'people', 'work', 'wisdom', 'love']) AS category,
     regexp_split_to_table(pg_read_file('/usr/share/games/fortunes/' || category), '\n%\n') AS f
WHERE trim(f) <> '';
SELECT category, count(*) FROM fortunes GROUP BY category ORDER BY category;

\echo '-- a small BERT from scratch: a WordPiece vocabulary and a masked LM, trained on the rows (two minutes here)'
SET client_min_messages = warning;  -- hides the progress NOTICEs; SELECT * FROM ai.training shows progress elsewhere
SELECT ai_pretrain('fortune-bert', 'SELECT body AS text FROM fortunes', 'mlm',
                   '{"max_steps": 1500, "max_length": 64, "learning_rate": 1e-3, "warmup_ratio": 0.05,
                     "vocab_size": 4000}');
SELECT name, task, round((training->'metrics'->>'initial_eval_loss')::numeric, 2) AS loss_before,
       round((training->'metrics'->>'eval_loss')::numeric, 2) AS loss_after,
       round((training->'metrics'->>'tokens_per_second')::numeric) AS tokens_per_second
FROM ai.models WHERE name = 'fortune-bert';
SELECT token, round(score::numeric, 3) AS score FROM ai_fill_mask('You will meet a tall dark [MASK].', 'fortune-bert', 5);
SELECT token, round(score::numeric, 3) AS score FROM ai_fill_mask('The [MASK] is mightier than the sword.', 'fortune-bert', 5);

\echo '-- a classifier fine-tuned from it on two labelled categories, then used by an INSERT trigger'
SELECT ai_finetune('fortune-topic', 'fortune-bert',
                   $$SELECT body AS text, category AS label FROM fortunes WHERE category IN ('food', 'sports')$$,
                   'text-classification', '{"epochs": 20, "learning_rate": 2e-3, "test_size": 0.15}');
SELECT round((training->'metrics'->>'accuracy')::numeric, 3) AS held_out_accuracy,
       round((training->'metrics'->>'macro_f1')::numeric, 3) AS macro_f1
FROM ai.models WHERE name = 'fortune-topic';
RESET client_min_messages;
CREATE TABLE quotes (body text NOT NULL, topic text);
CREATE FUNCTION label_quote() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.topic := ai_classify_label(NEW.body, 'fortune-topic');
    RETURN NEW;
END $$;
CREATE TRIGGER label_quote BEFORE INSERT OR UPDATE OF body ON quotes FOR EACH ROW EXECUTE FUNCTION label_quote();
INSERT INTO quotes (body) VALUES
    ('Never eat more than you can lift.'),
    ('The team that scores the most goals usually wins the game.'),
    ('A good cook tastes the soup before serving it.'),
    ('He ran the marathon in record time and won the gold medal.');
SELECT * FROM quotes;

\echo '== Loaded in this backend'
SELECT name, architecture, parameters, pg_size_pretty(memory_bytes) AS memory, round(load_ms::numeric, 1) AS load_ms
FROM ai_loaded_models() ORDER BY name;
