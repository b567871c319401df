-- ai_pretrain and ai_finetune on table rows (the training itself is checked against PyTorch in
-- engine/tests/training.rs). NOTICEs carry timings, so progress messages are hidden here.
CREATE EXTENSION pg_ai;
\i tests/sql/_helpers.psql
SET client_min_messages = warning;
\set sentences :fixtures/train/sentences.txt
CREATE TABLE sentences (id serial PRIMARY KEY, text text);
COPY sentences (text) FROM :'sentences';
INSERT INTO sentences (text) VALUES (NULL), ('');

-- A masked LM from scratch: the tokenizer (WordPiece) and the model are trained on the rows.
SELECT ai_pretrain('tiny-mlm', 'sentences', 'mlm',
                   '{"max_steps": 600, "learning_rate": 2e-3, "warmup_ratio": 0.05, "seed": 7}');
SELECT name, task, architecture, parent, stored, training->>'objective' AS objective,
       training->'metrics'->>'examples' AS examples, training->'metrics'->>'skipped' AS skipped,
       (training->'metrics'->>'eval_loss')::float < (training->'metrics'->>'initial_eval_loss')::float / 2
           AS eval_loss_halved
FROM ai.models;
-- Usable at once: the slot takes a verb the rows use.
SELECT count(*) FILTER (WHERE token IN ('reads', 'cooks', 'paints', 'drinks', 'walks', 'sells')) AS verbs
FROM ai_fill_mask('The farmer [MASK] a book every morning.', 'tiny-mlm', 5);

-- A causal LM from a query; greedy generation continues the prompt as a training sentence does.
SELECT ai_pretrain('tiny-clm', 'SELECT text FROM sentences WHERE id % 2 = 0 OR true', 'clm',
                   '{"max_steps": 400, "learning_rate": 2e-3, "warmup_ratio": 0.05, "vocab_size": 400}');
SELECT 'The cat' || ai_generate('The cat', 'tiny-clm', max_tokens => 20) IN (SELECT text FROM sentences)
       AS continues_a_training_sentence;

-- A classifier fine-tuned from a registered masked LM: labels are the distinct values of the label column.
SELECT ai_load_model('base', :'fixtures' || '/models/bert-mlm');
CREATE TABLE labelled (body text, topic text);
INSERT INTO labelled
SELECT replace(replace(t, '{n}', n), '{x}', x), topic
FROM unnest(ARRAY['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi']) AS n,
     (VALUES ('{n} is eating {x} .', 'food'), ('we cooked {x} for dinner .', 'food'), ('i love eating {x} .', 'food'),
             ('{n} is playing {x} .', 'sport'), ('{n} won the {x} game .', 'sport'), ('the {x} team played well .', 'sport'))
         AS templates (t, topic),
     LATERAL (SELECT x FROM unnest(CASE topic WHEN 'food' THEN ARRAY['bread', 'cheese', 'soup', 'pasta']
                                             ELSE ARRAY['football', 'tennis', 'golf', 'rugby'] END) AS x) AS xs;
SELECT count(*) FROM labelled;
SELECT ai_finetune('topic', 'base', 'labelled', 'text-classification',
                   '{"text_column": "body", "label_column": "topic", "epochs": 3, "learning_rate": 1e-3,
                     "batch_size": 8, "test_size": 0.2}');
SELECT name, task, parent, (training->'metrics'->>'accuracy')::float >= 0.9 AS accurate,
       config->'id2label' AS labels
FROM ai.models WHERE name = 'topic';
SELECT ai_classify_label(ARRAY['judy is eating rice .', 'judy won the hockey game .'], 'topic');

-- Other sessions use the trained models from their stored files.
\c
\i tests/sql/_helpers.psql
SET client_min_messages = warning;
SELECT ai_classify_label('we cooked pasta for dinner .', 'topic') AS new_session;
SELECT count(DISTINCT path) AS stored_files FROM ai.model_files WHERE model = 'tiny-mlm';

-- DistilBERT (and RoBERTa) bases fine-tune the same way, with their own heads.
SELECT ai_load_model('distilbert-base', :'fixtures' || '/models/distilbert-mlm');
SELECT ai_finetune('topic-distilbert', 'distilbert-base', 'labelled', 'text-classification',
                   '{"text_column": "body", "label_column": "topic", "epochs": 10, "learning_rate": 2e-3,
                     "batch_size": 8, "test_size": 0.2}');
SELECT architecture, (training->'metrics'->>'accuracy')::float >= 0.9 AS accurate
FROM ai.models WHERE name = 'topic-distilbert';
SELECT ai_classify_label(ARRAY['judy is eating rice .', 'judy won the hockey game .'], 'topic-distilbert');

-- A tagger fine-tuned from the same base: one tag per whitespace-separated word, in a text[] column.
CREATE TABLE people_and_places (sentence text, tags text[]);
INSERT INTO people_and_places
SELECT replace(replace(frame, '{p}', p), '{c}', c),
       array_replace(array_replace(tags, 'P', 'B-PER'), 'C', 'B-LOC')
FROM unnest(ARRAY['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi']) AS p,
     unnest(ARRAY['paris', 'london', 'berlin', 'madrid', 'vienna']) AS c,
     (VALUES ('{p} lives in {c} .', ARRAY['P', 'O', 'O', 'C', 'O']),
             ('{p} flew to {c} yesterday .', ARRAY['P', 'O', 'O', 'C', 'O', 'O']),
             ('in {c} , {p} met us .', ARRAY['O', 'C', 'O', 'P', 'O', 'O', 'O'])) AS frames (frame, tags);
SELECT ai_finetune('places', 'base', 'people_and_places', 'token-classification',
                   '{"text_column": "sentence", "epochs": 4, "learning_rate": 2e-3, "batch_size": 8}');
SELECT name, task, architecture, config->'id2label' AS labels,
       (training->'metrics'->>'entity_f1')::float >= 0.9 AS entities_found
FROM ai.models WHERE name = 'places';
SELECT entity, label FROM ai_ner('judy flew to rome yesterday .', 'places');
SELECT pg_temp.try($$SELECT ai_finetune('x', 'base', $q$SELECT 'a b c' AS text, ARRAY['O', 'B-PER'] AS tags$q$,
                                        'token-classification')$$) AS tags_do_not_match_words;
SELECT pg_temp.try($$SELECT ai_finetune('x', 'base', 'sentences', 'token-classification')$$) AS no_tags_column;

-- A T5 fine-tuned for a new pair from source and target columns: German with its words in reverse order. Rows
-- whose target is NULL are skipped and counted; ai_translate needs no languages for what the model learnt.
SELECT ai_load_model('t5-base', :'fixtures' || '/models/t5');
CREATE TABLE reversed (english text, german text);
INSERT INTO reversed
SELECT format('the %s %s in the %s .', a.en, v.en, p.en), format('. %s die im %s %s die', p.de, v.de, a.de)
FROM (VALUES ('cat', 'katze'), ('dog', 'hund'), ('bird', 'vogel'), ('horse', 'pferd'), ('fish', 'fisch')) AS a (en, de),
     (VALUES ('sat', 'sass'), ('ran', 'lief')) AS v (en, de),
     (VALUES ('park', 'park'), ('garden', 'garten'), ('house', 'haus'), ('river', 'fluss'), ('field', 'feld'))
         AS p (en, de);
INSERT INTO reversed VALUES ('the cat sat .', NULL);
SELECT ai_finetune('reversed', 't5-base', 'reversed', 'translation',
                   '{"source_column": "english", "target_column": "german", "max_steps": 60, "learning_rate": 3e-3}');
SELECT name, task, architecture, parent, training->>'objective' AS objective,
       training->'metrics'->>'skipped' AS skipped,
       (training->'metrics'->>'eval_loss')::float < (training->'metrics'->>'initial_eval_loss')::float / 2
           AS eval_loss_halved
FROM ai.models WHERE name = 'reversed';
SELECT ai_translate('the dog sat in the garden .', 'reversed');
SELECT pg_temp.try($$SELECT ai_finetune('x', 't5-base', 'sentences', 'seq2seq')$$) AS no_source_column;
SELECT pg_temp.try($$SELECT ai_finetune('x', 'base', 'reversed', 'seq2seq',
                                        '{"source_column": "english", "target_column": "german"}')$$) AS not_a_t5;

-- A Llama-family model fine-tuned on a new sentence frame generates it.
SELECT ai_load_model('llama-base', :'fixtures' || '/models/llama');
SELECT ai_finetune('llama-sunday', 'llama-base',
                   $$SELECT n || ' plays ' || x || ' on sunday .' AS text
                     FROM unnest(ARRAY['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) AS n,
                          unnest(ARRAY['tennis', 'golf', 'chess']) AS x$$,
                   'clm', '{"max_steps": 40, "learning_rate": 3e-3, "batch_size": 8}');
SELECT architecture, task, parent FROM ai.models WHERE name = 'llama-sunday';
SELECT 'grace plays' || ai_generate('grace plays', 'llama-sunday', max_tokens => 30) AS continued;

-- Bad input: a clear error, and nothing registered.
CREATE TABLE empty_table (text text);
CREATE TABLE one_class (text text, label text);
INSERT INTO one_class VALUES ('a b c', 'x'), ('d e f', 'x');
SELECT pg_temp.try($$SELECT ai_pretrain('x', 'no_such_table', 'mlm')$$) AS missing_table;
SELECT pg_temp.try($$SELECT ai_pretrain('x', 'labelled', 'mlm')$$) AS missing_column;
SELECT pg_temp.try($$SELECT ai_pretrain('x', 'empty_table', 'mlm')$$) AS empty_source;
CREATE TABLE selections (text text);
SELECT pg_temp.try($$SELECT ai_pretrain('x', 'selections', 'mlm')$$) AS a_table_named_like_a_keyword;
SELECT pg_temp.try($$SELECT ai_pretrain('x', 'one_class', 'text-classification')$$) AS one_class;
SELECT pg_temp.try($$SELECT ai_pretrain('x', 'sentences', 'mlm', '{"learning_rate": -1}')$$) AS negative_rate;
SELECT pg_temp.try($$SELECT ai_pretrain('x', 'sentences', 'mlm', '{"batch_size": 0}')$$) AS zero_batch;
SELECT pg_temp.try($$SELECT ai_pretrain('x', 'sentences', 'mlm', '{"epochz": 3}')$$) AS unknown_option;
SELECT pg_temp.try($$SELECT ai_pretrain('x', 'sentences', 'speech')$$) AS unknown_objective;
SELECT pg_temp.try($$SELECT ai_finetune('x', 'base', 'sentences', 'clm')$$) AS base_cannot;
SELECT pg_temp.try($$SELECT ai_finetune('x', 'nope', 'sentences', 'mlm')$$) AS unknown_base;
SET pg_ai.device = cuda;  -- the trained model could not be loaded: refused before training, not after
SELECT pg_temp.try($$SELECT ai_pretrain('x', 'sentences', 'mlm')$$) AS device_without_cuda;
RESET pg_ai.device;
SELECT pg_temp.try($$SELECT ai_pretrain('tiny-mlm', 'sentences', 'mlm')$$) AS duplicate_name;
BEGIN READ ONLY;
SELECT pg_temp.try($$SELECT ai_pretrain('x', 'sentences', 'mlm')$$) AS read_only;
ROLLBACK;
SELECT name FROM ai.models ORDER BY name;
SELECT count(*) AS training_now FROM ai.training;
