-- ai_classify, ai_classify_label and ai_ner, as transformers' pipelines answer.
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

-- NULL in, NULL out.
SELECT ai_classify_label(NULL, 'topic') IS NULL AS null_label;

-- Errors.
SELECT pg_temp.try($$SELECT ai_classify_label('some text', 'tagger')$$) AS ner_model_as_classifier;
SELECT pg_temp.try($$SELECT * FROM ai_ner('some text', 'topic')$$) AS classifier_as_ner;
