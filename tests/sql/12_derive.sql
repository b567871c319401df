-- Derived columns (ai_derive): declaration errors, backfill, writes that queue, a background worker that derives,
-- pause, resume, change and drop.
CREATE EXTENSION pg_ai;
\i tests/sql/_helpers.psql
SELECT ai_load_model('topic', :'fixtures' || '/models/bert-classifier') \g /dev/null
SELECT ai_load_model('tagger', :'fixtures' || '/models/bert-ner') \g /dev/null
SELECT ai_load_model('minilm', :'root' || '/.models/all-MiniLM-L6-v2') \g /dev/null
SELECT ai_load_model('t5', :'fixtures' || '/models/t5') \g /dev/null
-- Waits until the derivation of `target` has nothing due (at most two minutes); its status row then.
CREATE FUNCTION wait_for(target name) RETURNS TABLE (status text, queued bigint, failed bigint, done bigint)
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..1200 LOOP
        EXIT WHEN NOT EXISTS (SELECT FROM ai.derivation_queue AS q JOIN ai.derivations AS d ON d.id = q.derivation
                              WHERE d.target_column = wait_for.target
                                AND (q.retry_at IS NULL OR q.retry_at <= clock_timestamp()));
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN QUERY SELECT s.status, s.queued, s.failed, s.done FROM ai.derivation_status AS s
                 WHERE s.target = wait_for.target;
END $$;

CREATE TABLE notes (id int PRIMARY KEY, body text, topic text, topics jsonb, entities jsonb, embedding real[],
                    summary text, n int);
INSERT INTO notes (id, body) VALUES (1, 'bob bought fresh cheese .'), (2, 'the rugby team played well .'),
                                    (3, NULL);

-- Declarations that cannot work.
SELECT pg_temp.try($$SELECT ai_derive('notes', 'topic', 'body', 'label', 'topic')$$);
SELECT pg_temp.try($$SELECT ai_derive('notes', 'topic', 'body', 'classify_label', 'nosuch')$$);
SELECT pg_temp.try($$SELECT ai_derive('notes', 'topic', 'body', 'classify_label', 'minilm')$$);
SELECT pg_temp.try($$SELECT ai_derive('nosuch', 'topic', 'body', 'classify_label', 'topic')$$);
SELECT pg_temp.try($$SELECT ai_derive('notes', 'nosuch', 'body', 'classify_label', 'topic')$$);
SELECT pg_temp.try($$SELECT ai_derive('notes', 'topic', 'nosuch', 'classify_label', 'topic')$$);
SELECT pg_temp.try($$SELECT ai_derive('notes', 'n', 'body', 'classify_label', 'topic')$$);
SELECT pg_temp.try($$SELECT ai_derive('notes', 'topic', 'n', 'classify_label', 'topic')$$);
SELECT pg_temp.try($$SELECT ai_derive('notes', 'id', 'body', 'classify_label', 'topic')$$);
SELECT pg_temp.try($$SELECT ai_derive('notes', 'embedding', 'body', 'classify_label', 'topic')$$);
SELECT pg_temp.try($$SELECT ai_derive('notes', 'topic', 'body', 'classify_label', 'topic', '{"max_tokens": 5}')$$);
SELECT pg_temp.try($$SELECT ai_derive('notes', 'topic', 'body', 'classify_label', 'topic', '{"batch_size": 0}')$$);
SELECT pg_temp.try($$SELECT ai_derive('notes', 'summary', 'body', 'generate', 'topic', '{"prompt": "no slot"}')$$);
CREATE TABLE keyless (body text, topic text);
SELECT pg_temp.try($$SELECT ai_derive('keyless', 'topic', 'body', 'classify_label', 'topic')$$);
CREATE VIEW notes_view AS SELECT * FROM notes;
SELECT pg_temp.try($$SELECT ai_derive('notes_view', 'topic', 'body', 'classify_label', 'topic')$$);
-- NULL in, NULL out, and nothing declared.
SELECT ai_derive(NULL, 'topic', 'body', 'classify_label', 'topic') IS NULL AS null_table,
       ai_derive('notes', 'topic', 'body', NULL, 'topic') IS NULL AS null_task,
       ai_derive('notes', 'topic', 'body', 'classify_label', NULL) IS NULL AS null_model,
       ai_derive('notes', 'topic', 'body', 'classify_label', 'topic', NULL) IS NULL AS null_options;
SELECT ai_pause_derivation(NULL, 'topic') IS NULL AS null_pause, ai_resume_derivation('notes', NULL) IS NULL AS null_resume,
       ai_drop_derivation(NULL, NULL) IS NULL AS null_drop;
SELECT pg_temp.try($$SELECT ai_change_derivation(NULL, 'topic')$$) AS null_change_changes_nothing;
SELECT pg_temp.try($$SELECT ai_derive('notes', '', 'body', 'classify_label', 'topic')$$) AS empty_target;
SELECT count(*) AS derivations FROM ai.derivations;

-- Existing rows are derived in the background; NULL stays NULL.
SELECT ai_derive('notes', 'topic', 'body', 'classify_label', 'topic') > 0 AS declared;
SELECT * FROM wait_for('topic');
SELECT id, topic, topic IS NOT DISTINCT FROM ai_classify_label(body, 'topic') AS as_called FROM notes ORDER BY id;
SELECT pg_temp.try($$SELECT ai_derive('notes', 'topic', 'body', 'classify_label', 'topic')$$);
SELECT pg_temp.try($$SELECT ai_derive('notes', 'body', 'topic', 'classify_label', 'topic')$$);

-- Writes only queue: the INSERT returns before any row is derived.
BEGIN;
INSERT INTO notes (id, body) SELECT i, 'we watched the golf match number ' || i || ' .' FROM generate_series(10, 59) AS i;
SELECT count(*) AS queued_in_transaction FROM ai.derivation_queue;
ROLLBACK;
SELECT count(*) AS queued_after_rollback FROM ai.derivation_queue;
INSERT INTO notes (id, body) SELECT i, CASE WHEN i % 2 = 0 THEN 'heavy snow is expected tonight .'
                                            ELSE 'i love eating pasta .' END FROM generate_series(10, 209) AS i;
SELECT * FROM wait_for('topic');
SELECT topic, count(*), bool_and(topic = ai_classify_label(body, 'topic')) AS as_called
FROM notes WHERE id >= 10 GROUP BY topic ORDER BY topic;

-- Only a change of the source queues a row; a changed source is derived again; deleted rows leave the queue.
UPDATE notes SET n = 1 WHERE id = 1;
SELECT count(*) AS queued_by_other_columns FROM ai.derivation_queue;
UPDATE notes SET body = 'the rugby team played well .' WHERE id = 1;
SELECT * FROM wait_for('topic');
SELECT topic = ai_classify_label('the rugby team played well .', 'topic') AS rederived FROM notes WHERE id = 1;
SELECT ai_pause_derivation('notes', 'topic');
SELECT pg_sleep(1.5);
INSERT INTO notes (id, body) VALUES (300, 'grace won the tennis game .'), (301, 'the bread was delicious .');
DELETE FROM notes WHERE id = 301;
SELECT status, queued FROM ai.derivation_status WHERE target = 'topic';
SELECT topic FROM notes WHERE id = 300;
SELECT ai_resume_derivation('notes', 'topic');
SELECT * FROM wait_for('topic');
SELECT topic = ai_classify_label(body, 'topic') AS derived_after_resume FROM notes WHERE id = 300;
TRUNCATE notes;
SELECT count(*) AS queued_after_truncate FROM ai.derivation_queue;

-- Every task's values, as the task's own function gives them.
INSERT INTO notes (id, body) VALUES (1, 'Bob Walker flew to New York yesterday.'), (2, 'i love eating pasta .'),
                                    (3, NULL);
SELECT ai_derive('notes', 'topics', 'body', 'classify', 'topic') > 0 AS declared;
SELECT ai_derive('notes', 'entities', 'body', 'ner', 'tagger') > 0 AS declared;
SELECT ai_derive('notes', 'embedding', 'body', 'embed', 'minilm', '{"batch_size": 1}') > 0 AS declared;
SELECT ai_derive('notes', 'summary', 'body', 'summarize', 't5', '{"max_tokens": 8}') > 0 AS declared;
SELECT status, queued, failed, done FROM wait_for('topics') UNION ALL
SELECT status, queued, failed, done FROM wait_for('entities') UNION ALL
SELECT status, queued, failed, done FROM wait_for('embedding') UNION ALL
SELECT status, queued, failed, done FROM wait_for('summary');
SELECT id, topics -> 0 ->> 'label' AS best, jsonb_array_length(topics) AS labels,
       jsonb_path_query_array(entities, '$[*].entity') AS entities, summary, cardinality(embedding) AS dimensions
FROM notes ORDER BY id;
-- The same values as each task's function gives (scores and embeddings to 1e-6: batches round differently).
SELECT bool_and(d.label = c.label AND abs(d.score - c.score) < 1e-6) AND count(*) = 6 AS classify_as_called
FROM notes AS n, LATERAL ROWS FROM (jsonb_to_recordset(n.topics) AS (label text, score real)) WITH ORDINALITY
                                                                                               AS d(label, score, i),
     LATERAL (SELECT label, score, row_number() OVER () AS i FROM ai_classify(n.body, 'topic')) AS c
WHERE c.i = d.i;
SELECT bool_and(d.entity = e.entity AND d.label = e.label AND d.start_pos = e.start_pos AND d.end_pos = e.end_pos
                AND abs(d.score - e.score) < 1e-6) AND count(*) = 7 AS ner_as_called
FROM notes AS n,
     LATERAL ROWS FROM (jsonb_to_recordset(n.entities)
                        AS (entity text, label text, start_pos int, end_pos int, score real))
             WITH ORDINALITY AS d(entity, label, start_pos, end_pos, score, i),
     LATERAL (SELECT *, row_number() OVER () AS i FROM ai_ner(n.body, 'tagger')) AS e
WHERE e.i = d.i;
SELECT bool_and((SELECT max(abs(a - b)) FROM unnest(embedding, ai_embed(body, 'minilm')) AS u(a, b)) < 1e-6)
           AS embedding_as_called,
       bool_and(summary = ai_summarize(body, 't5', 8)) AS summary_as_called
FROM notes WHERE body IS NOT NULL;
SELECT count(*) FILTER (WHERE topics IS NULL AND entities IS NULL AND embedding IS NULL AND summary IS NULL)
       AS null_from_null
FROM notes WHERE body IS NULL;

-- A change of model or options derives every row again.
SELECT ai_change_derivation('notes', 'summary', options => '{"max_tokens": 3}');
SELECT status, queued, failed FROM wait_for('summary');
SELECT summary = ai_summarize(body, 't5', 3) AS with_new_options FROM notes WHERE id = 1;
-- A row whose model call fails keeps its queue entry with the error, to be tried again later, and does not hold
-- back the others; a change of its source replaces it.
INSERT INTO notes (id, body) VALUES (5, repeat('word ', 600)), (6, 'grace won the tennis game .');
SELECT status, queued, failed FROM wait_for('summary');
SELECT last_error, rows_per_second > 0 AS has_speed, lag > interval '0' AS has_lag
FROM ai.derivation_status WHERE target = 'summary';
SELECT q.attempts > 0 AS tried, q.retry_at > q.queued_at AS waits, q.error
FROM ai.derivation_queue AS q JOIN ai.derivations AS d ON d.id = q.derivation WHERE d.target_column = 'summary';
SELECT summary IS NULL AS failed_row_not_derived FROM notes WHERE id = 5;
SELECT summary = ai_summarize(body, 't5', 3) AS other_row_derived FROM notes WHERE id = 6;
UPDATE notes SET body = 'the bread was delicious .' WHERE id = 5;
SELECT status, queued, failed FROM wait_for('summary');
SELECT summary = ai_summarize(body, 't5', 3) AS derived_after_change FROM notes WHERE id = 5;
SELECT pg_temp.try($$SELECT ai_change_derivation('notes', 'summary', model => 'topic')$$);
SELECT pg_temp.try($$SELECT ai_change_derivation('notes', 'nosuch')$$);

-- Dropping a derivation leaves its values, and writes no longer queue.
SELECT ai_drop_derivation('notes', 'summary');
INSERT INTO notes (id, body) VALUES (4, 'grace won the tennis game .');
SELECT count(*) AS queued_for_dropped FROM ai.derivation_queue AS q
WHERE NOT EXISTS (SELECT FROM ai.derivations AS d WHERE d.id = q.derivation);
SELECT summary IS NOT NULL AS kept FROM notes WHERE id = 1;
SELECT ai_drop_derivation('notes', target) FROM ai.derivation_status ORDER BY target;
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgrelid = 'notes'::regclass;
-- The workers end with their derivations.
SELECT pg_sleep(1.5);
SELECT count(*) AS workers FROM pg_stat_activity WHERE backend_type = 'pg_ai derivation';

-- ai_fill: the same values once, now, without a queue; NULL in, NULL out.
CREATE TABLE filled (id int PRIMARY KEY, body text, topic text, entities jsonb, embedding real[]);
INSERT INTO filled (id, body) VALUES (1, 'Bob Walker flew to New York yesterday.'), (2, 'i love eating pasta .'),
                                     (3, NULL);
SELECT ai_fill('filled', 'topic', 'body', 'classify_label', 'topic') AS rows,
       ai_fill('filled', 'entities', 'body', 'ner', 'tagger') AS rows,
       ai_fill('filled', 'embedding', 'body', 'embed', 'minilm') AS rows;
SELECT id, topic IS NOT DISTINCT FROM ai_classify_label(body, 'topic') AS classified,
       jsonb_path_query_array(entities, '$[*].entity') AS entities,
       (SELECT max(abs(a - b)) FROM unnest(embedding, ai_embed(body, 'minilm')) AS u(a, b)) < 1e-6 AS embedded
FROM filled ORDER BY id;
SELECT count(*) AS queued FROM ai.derivation_queue;
SELECT pg_temp.try($$SELECT ai_fill('filled', 'topic', 'body', 'embed_chunks', 'minilm')$$) AS chunks;
SELECT pg_temp.try($$SELECT ai_fill('filled', 'embedding', 'body', 'classify_label', 'topic')$$) AS wrong_type;
SELECT ai_fill(NULL, 'topic', 'body', 'classify_label', 'topic') IS NULL AS null_table,
       ai_fill('filled', 'topic', 'body', 'classify_label', NULL) IS NULL AS null_model;
DROP TABLE filled;

-- Chains: a derived column may be another's source, never in a loop; a change runs down the chain.
CREATE TABLE chained (id int PRIMARY KEY, body text, chain_summary text, chain_topic text);
INSERT INTO chained (id, body) VALUES (1, 'grace won the tennis game .'), (2, 'i love eating pasta .');
SELECT ai_derive('chained', 'chain_summary', 'body', 'summarize', 't5', '{"max_tokens": 8}') > 0 AS declared;
SELECT ai_derive('chained', 'chain_topic', 'chain_summary', 'classify_label', 'topic') > 0 AS declared;
SELECT pg_temp.try($$SELECT ai_derive('chained', 'body', 'chain_topic', 'summarize', 't5')$$) AS a_loop;
SELECT status, queued, failed FROM wait_for('chain_summary') UNION ALL
SELECT status, queued, failed FROM wait_for('chain_topic');
SELECT id, chain_summary = ai_summarize(body, 't5', 8) AS summarized,
       chain_topic = ai_classify_label(chain_summary, 'topic') AS classified_from_the_summary
FROM chained ORDER BY id;
UPDATE chained SET body = 'the bread was delicious .' WHERE id = 1;
SELECT status, queued, failed FROM wait_for('chain_summary') UNION ALL
SELECT status, queued, failed FROM wait_for('chain_topic');
SELECT chain_summary = ai_summarize(body, 't5', 8) AS summarized_again,
       chain_topic = ai_classify_label(chain_summary, 'topic') AS classified_again
FROM chained WHERE id = 1;
SELECT ai_drop_derivation('chained', 'chain_summary'), ai_drop_derivation('chained', 'chain_topic');
SELECT pg_sleep(1.5);
DROP TABLE chained;

-- Chunks: one row per chunk of each row's text, in a table keyed by the row's primary key.
CREATE TABLE docs (id int PRIMARY KEY, body text, title text);
CREATE TABLE doc_chunks (id int, ord int, chunk text, start_pos int, end_pos int, embedding real[],
                         PRIMARY KEY (id, ord));
INSERT INTO docs (id, body) VALUES
    (1, 'The museum opens a new wing of modern art this spring. Its garden cafe serves soup and fresh bread. '
        || 'Tickets for the opening week sold out within an hour.'),
    (2, 'A short note.'), (3, NULL);
SELECT pg_temp.try($$SELECT ai_derive('docs', 'nosuch', 'body', 'embed_chunks', 'minilm')$$) AS no_table;
SELECT pg_temp.try($$SELECT ai_derive('docs', 'docs', 'body', 'embed_chunks', 'minilm')$$) AS the_source;
CREATE TABLE text_keyed (id text, ord int, chunk text, embedding real[]);
SELECT pg_temp.try($$SELECT ai_derive('docs', 'text_keyed', 'body', 'embed_chunks', 'minilm')$$) AS key_type;
CREATE TABLE no_embedding (id int, ord int, chunk text);
SELECT pg_temp.try($$SELECT ai_derive('docs', 'no_embedding', 'body', 'embed_chunks', 'minilm')$$) AS no_embedding;
SELECT pg_temp.try($$SELECT ai_derive('docs', 'doc_chunks', 'body', 'embed_chunks', 't5')$$) AS cannot_embed;
SELECT pg_temp.try($$SELECT ai_derive('docs', 'doc_chunks', 'body', 'embed_chunks', 'minilm', '{"overlap": -1}')$$)
       AS negative_overlap;
SELECT pg_temp.try($$SELECT ai_derive('docs', 'doc_chunks', 'body', 'embed_chunks', 'minilm',
                                      '{"max_tokens": 8, "overlap": 8}')$$) AS overlap_of_all;
SELECT pg_temp.try($$SELECT ai_derive('docs', 'doc_chunks', 'body', 'embed_chunks', 'minilm', '{"prompt": "{}"}')$$)
       AS other_option;
DROP TABLE text_keyed, no_embedding;
SELECT ai_derive('docs', 'doc_chunks', 'body', 'embed_chunks', 'minilm', '{"max_tokens": 16, "overlap": 4}') > 0
       AS declared;
SELECT * FROM wait_for('doc_chunks');
SELECT id, ord, chunk, start_pos, end_pos, cardinality(embedding) AS dimensions FROM doc_chunks ORDER BY id, ord;
-- The chunks ai_chunk cuts, each embedded as ai_embed embeds it (to 1e-6: batches round differently).
SELECT count(*) = (SELECT count(*) FROM doc_chunks)
       AND bool_and(c.chunk = x.chunk AND c.start_pos = x.start_pos AND c.end_pos = x.end_pos
                    AND (SELECT max(abs(a - b)) FROM unnest(c.embedding, ai_embed(x.chunk, 'minilm')) AS u(a, b)) < 1e-6)
       AS as_called
FROM docs AS d, ai_chunk(d.body, 'minilm', 16, 4) AS x JOIN doc_chunks AS c ON c.ord = x.ord WHERE c.id = d.id;
-- A changed text replaces its row's chunks; another column queues nothing; deleted and truncated rows lose theirs.
UPDATE docs SET title = 'art' WHERE id = 1;
SELECT count(*) AS queued_by_other_columns FROM ai.derivation_queue;
UPDATE docs SET body = 'The museum closes early on Mondays.' WHERE id = 1;
SELECT * FROM wait_for('doc_chunks');
SELECT id, ord, chunk FROM doc_chunks WHERE id = 1 ORDER BY ord;
DELETE FROM docs WHERE id = 2;
SELECT * FROM wait_for('doc_chunks');
SELECT id, ord, chunk FROM doc_chunks ORDER BY id, ord;
TRUNCATE docs;
INSERT INTO docs (id, body) VALUES (4, 'Written after the truncate.');
SELECT * FROM wait_for('doc_chunks');
SELECT id, ord, chunk FROM doc_chunks ORDER BY id, ord;
SELECT ai_drop_derivation('docs', 'doc_chunks');
SELECT pg_sleep(1.5);
DROP TABLE docs, doc_chunks;

-- Roles: the worker runs as the declaring role; roles that may write the table queue rows through the triggers;
-- other roles see nothing and can change nothing.
CREATE ROLE ai_deriver LOGIN;
CREATE ROLE ai_writer;
CREATE ROLE ai_stranger;
CREATE ROLE ai_nologin;
SELECT ai_grant_model('topic', 'ai_deriver') AND ai_grant_model('topic', 'ai_nologin') AS granted;
CREATE TABLE owned (id int PRIMARY KEY, body text, topic text);
ALTER TABLE owned OWNER TO ai_deriver;
GRANT INSERT ON owned TO ai_writer;
CREATE TABLE kept (id int PRIMARY KEY, body text, topic text);
ALTER TABLE kept OWNER TO ai_nologin;
SET ROLE ai_nologin;
SELECT pg_temp.try($$SELECT ai_derive('kept', 'topic', 'body', 'classify_label', 'topic')$$) AS no_login;
SET ROLE ai_stranger;
SELECT pg_temp.try($$SELECT ai_derive('owned', 'topic', 'body', 'classify_label', 'topic')$$) AS not_the_owner;
SET ROLE ai_deriver;
SELECT ai_derive('owned', 'topic', 'body', 'classify_label', 'topic') > 0 AS declared;
SET ROLE ai_writer;
INSERT INTO owned VALUES (1, 'the bread was delicious .'), (2, 'the fog will last all day .');
SELECT count(*) AS writer_sees_queued FROM ai.derivation_queue;
SET ROLE ai_stranger;
SELECT count(*) AS stranger_sees_derivations FROM ai.derivation_status;
SELECT pg_temp.try($$INSERT INTO ai.derivation_queue (derivation, key)
                     SELECT max(id), '{"id": 1}' FROM ai.derivations$$) AS stranger_queues;
SELECT pg_temp.try($$SELECT ai_pause_derivation('owned', 'topic')$$) AS stranger_pauses;
SELECT pg_temp.try($$SELECT ai_drop_derivation('owned', 'topic')$$) AS stranger_drops;
RESET ROLE;
SELECT status, queued, failed, done FROM wait_for('topic');
SELECT id, topic = ai_classify_label(body, 'topic') AS derived_as_owner FROM owned ORDER BY id;
SELECT usename AS worker_role FROM pg_stat_activity WHERE backend_type = 'pg_ai derivation';
SET ROLE ai_deriver;
SELECT ai_drop_derivation('owned', 'topic');
RESET ROLE;
SELECT pg_sleep(1.5);
DROP TABLE owned, kept;
DELETE FROM ai.model_users;
DROP ROLE ai_deriver, ai_writer, ai_stranger, ai_nologin;

-- Dropping pg_ai drops the triggers with it and ends the workers.
SELECT ai_derive('notes', 'topic', 'body', 'classify_label', 'topic') > 0 AS declared;
SELECT status, queued FROM wait_for('topic');
SELECT count(*) AS workers_before FROM pg_stat_activity WHERE backend_type = 'pg_ai derivation';
DROP EXTENSION pg_ai CASCADE;
DO $$
BEGIN
    FOR i IN 1..100 LOOP
        PERFORM pg_stat_clear_snapshot();
        EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'pg_ai derivation');
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT count(*) AS workers_after FROM pg_stat_activity WHERE backend_type = 'pg_ai derivation';
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgrelid = 'notes'::regclass;
