-- ai_classify, ai_classify_label, ai_zero_shot, ai_ner, ai_rerank and ai_answer, as transformers' pipelines and
-- sentence-transformers' CrossEncoder answer.
CREATE EXTENSION pg_ai;
\i tests/sql/_helpers.psql
SELECT ai_load_model('topic', :'fixtures' || '/models/bert-classifier');
SELECT ai_load_model('topic-distil', :'fixtures' || '/models/distilbert-classifier');
SELECT ai_load_model('tagger', :'fixtures' || '/models/bert-ner');

SELECT label, round(score::numeric, 4) AS score FROM ai_classify('grace won the tennis game .', 'topic');
SELECT label, round(score::numeric, 4) AS score FROM ai_classify('heavy snow is expected tonight .', 'topic-distil');
SELECT ai_classify_label('i love eating pasta .', 'topic');
SELECT ai_classify_label(ARRAY['we watched the golf match .', NULL, 'the fog will last all day .'], 'topic');
SELECT ord, label, round(score::numeric, 4) AS score
FROM ai_classify(ARRAY['the bread was delicious .', 'i hate the rain .'], 'topic') WHERE score > 0.5;

-- In a trigger: label rows as they are inserted.
CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL, topic text);
CREATE FUNCTION label_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.topic := ai_classify_label(NEW.body, 'topic');
    RETURN NEW;
END
$$;
CREATE TRIGGER label_note BEFORE INSERT OR UPDATE OF body ON notes FOR EACH ROW EXECUTE FUNCTION label_note();
INSERT INTO notes (id, body) VALUES (1, 'bob bought fresh cheese .'), (2, 'the rugby team played well .');
SELECT * FROM notes ORDER BY id;

-- Entities with character offsets into the input (0-based, end exclusive).
SELECT entity, label, start_pos, end_pos, round(score::numeric, 4) AS score
FROM ai_ner('Bob Walker flew to New York yesterday.', 'tagger');
SELECT ord, entity, label, start_pos, end_pos
FROM ai_ner(ARRAY['in london , carol met dave smith .', NULL, 'nothing to see here'], 'tagger');
SELECT substr(t, start_pos + 1, end_pos - start_pos) AS from_offsets
FROM (VALUES ('erin and frank visited los angeles .')) v(t), ai_ner(t, 'tagger');

-- DeBERTa-v3 (disentangled attention) tags entities, and a DeBERTa classifier labels texts.
SELECT ai_load_model('deberta-tagger', :'fixtures' || '/models/deberta-ner');
SELECT ai_load_model('deberta-topic', :'fixtures' || '/models/deberta-classifier');
SELECT entity, label, start_pos, end_pos, round(score::numeric, 4) AS score
FROM ai_ner('alice smith lives in new york .', 'deberta-tagger');
SELECT ai_classify_label(ARRAY['grace won the tennis game .', 'heavy snow is expected tonight .'], 'deberta-topic');
-- ModernBERT (rotary positions, local and global layers) fills masks and labels texts.
SELECT ai_load_model('modernbert', :'fixtures' || '/models/modernbert-mlm');
SELECT ai_load_model('modernbert-topic', :'fixtures' || '/models/modernbert-classifier');
SELECT token, round(score::numeric, 4) AS score FROM ai_fill_mask('the cat sat in the [MASK] .', 'modernbert') LIMIT 3;
SELECT label, round(score::numeric, 4) AS score FROM ai_classify('i love eating pasta .', 'modernbert-topic');

-- Zero-shot: labels given at the call, scored by an NLI model (entailment of "This example is <label>."). The
-- fixture's NLI model is untrained (see make_fixtures.py): its answers are transformers', not sensible ones.
SELECT ai_load_model('nli', :'fixtures' || '/models/bert-nli');
SELECT label, round(score::numeric, 4) AS score FROM ai_zero_shot('i love eating pasta .', ARRAY['pasta', 'tennis', 'snow'], 'nli');
SELECT label, round(score::numeric, 4) AS score
FROM ai_zero_shot('we cooked soup because of the storm .', ARRAY['soup', NULL, 'storm', 'hockey'], 'nli',
                  hypothesis_template => 'This example is {}.', multi_label => true);
SELECT ai_zero_shot_label('heavy snow is expected tonight .', ARRAY['golf', 'snow', 'rice', 'cat'], 'nli',
                          'this text is about {} .');
-- The text[] forms answer as single calls do; a NULL input gives no rows, or a NULL label.
SELECT ord, label, round(score::numeric, 4) AS score
FROM ai_zero_shot(ARRAY['i love eating pasta .', NULL, 'grace won the tennis game .'], ARRAY['pasta', 'tennis'], 'nli');
SELECT ai_zero_shot_label(ARRAY['heavy snow is expected tonight .', NULL, 'i love eating pasta .'],
                          ARRAY['golf', 'snow', 'rice'], 'nli', 'this text is about {} .');
-- A BART classifier with NLI labels, as bart-large-mnli (transformers' default zero-shot model): it classifies
-- and answers zero-shot questions, and does not summarise.
SELECT ai_load_model('bart-nli', :'fixtures' || '/models/bart-nli');
SELECT label, round(score::numeric, 4) AS score FROM ai_classify('i love eating pasta .', 'bart-nli');
SELECT label, round(score::numeric, 4) AS score
FROM ai_zero_shot('grace won the tennis game .', ARRAY['rain', 'tennis'], 'bart-nli');
SELECT pg_temp.try($$SELECT ai_summarize('grace won the tennis game .', 'bart-nli')$$) AS bart_classifier_summarising;

-- Reranking: documents against a query, best first, with their positions in the array.
SELECT ai_load_model('reranker', :'fixtures' || '/models/roberta-reranker');
SELECT ord, document, round(score::numeric, 4) AS score
FROM ai_rerank('sport', ARRAY['i love eating pasta .', 'grace won the tennis game .', NULL,
                              'the hockey team played well .', 'heavy snow is expected tonight .'], 'reranker');
SELECT ord, document FROM ai_rerank('food', ARRAY['the fog will last all day .',
                                       'we cooked soup for dinner .', 'bob won the golf game .'], 'reranker', top_k => 1);
SELECT id, body, round(ai_rerank_score('sport', body, 'reranker')::numeric, 4) AS score
FROM notes ORDER BY ai_rerank_score('sport', body, 'reranker') DESC;

-- ai_answer: answers found in a context, as transformers' question-answering pipeline finds them (a tiny model:
-- engine/tests/golden.rs checks these against the pipeline itself).
SELECT ai_load_model('qa', :'fixtures' || '/models/bert-qa');
SELECT answer, round(score::numeric, 4) AS score, start_pos, end_pos
FROM ai_answer('who lives in paris ?', 'alice lives in paris . bob lives in rome .', 'qa', top_k => 3);
-- Longer than the model's windows of 48 tokens: read in windows that overlap by 24, where the same answer adds up.
WITH c(context) AS (VALUES ('alice lives in paris . bob flew to rome yesterday . carol lives in new york . '
    || 'dave visited berlin . erin lives in madrid . frank flew to vienna yesterday . grace lives in london . '
    || 'heidi visited los angeles . ivan lives in rome . judy flew to paris yesterday .'))
SELECT a.answer, round(a.score::numeric, 4) AS score, a.start_pos, a.end_pos,
       substr(c.context, a.start_pos + 1, a.end_pos - a.start_pos) = a.answer AS where_it_stands
FROM c, ai_answer('who lives in london ?', c.context, 'qa', top_k => 3, max_answer_len => 4) a;
-- One question over many contexts; offsets count characters.
SELECT ord, answer, round(score::numeric, 4) AS score, start_pos, end_pos
FROM ai_answer('who visited zürich ?', ARRAY['Zoë visited Zürich . alice lives in paris .', NULL,
                                             'carol lives in new york .'], 'qa');

-- NULL in, NULL out.
SELECT ai_classify_label(NULL, 'topic') IS NULL AS null_label;
SELECT ai_zero_shot_label(NULL, ARRAY['a'], 'nli') IS NULL AS null_zero_shot,
       ai_rerank_score('q', NULL, 'reranker') IS NULL AS null_rerank_score,
       (SELECT count(*) FROM ai_rerank(NULL, ARRAY['d'], 'reranker')) AS null_query_no_rows,
       (SELECT count(*) FROM ai_answer('q', NULL::text, 'qa')) AS null_context_no_answer;

-- Errors.
SELECT pg_temp.try($$SELECT ai_classify_label('some text', 'tagger')$$) AS ner_model_as_classifier;
SELECT pg_temp.try($$SELECT * FROM ai_ner('some text', 'topic')$$) AS classifier_as_ner;
SELECT pg_temp.try($$SELECT ai_zero_shot_label('some text', ARRAY['a', 'b'], 'topic')$$) AS zero_shot_without_nli;
SELECT pg_temp.try($$SELECT ai_zero_shot_label('some text', ARRAY[NULL]::text[], 'nli')$$) AS zero_shot_without_labels;
SELECT pg_temp.try($$SELECT ai_zero_shot_label('some text', ARRAY['a'], 'nli', 'no slot')$$) AS template_without_slot;
SELECT pg_temp.try($$SELECT * FROM ai_rerank('q', ARRAY['d'], 'nli')$$) AS nli_model_as_reranker;
SELECT pg_temp.try($$SELECT * FROM ai_rerank('q', ARRAY['d'], 'reranker', top_k => 0)$$) AS rerank_top_k_zero;
SELECT pg_temp.try($$SELECT * FROM ai_rerank('q', ARRAY['d'], 'tagger')$$) AS ner_model_as_reranker;
SELECT pg_temp.try($$SELECT * FROM ai_answer('q', 'c', 'topic')$$) AS classifier_as_qa;
SELECT pg_temp.try($$SELECT * FROM ai_answer('q', 'c', 'qa', top_k => 0)$$) AS answer_top_k_zero;
SELECT pg_temp.try($$SELECT * FROM ai_answer(repeat('where ', 30), 'c', 'qa')$$) AS question_too_long;
