-- Serving like a database: a labelling trigger over 10,000 inserted rows, and parallel scans.
CREATE EXTENSION pg_ai;
\i tests/sql/_helpers.psql
SELECT ai_load_model('topic', :'fixtures' || '/models/bert-classifier');

-- The trigger pattern of the README: label on INSERT, and on UPDATE only when the text changes.
CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL, topic text, views int NOT NULL DEFAULT 0);
CREATE FUNCTION label_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.topic := ai_classify_label(NEW.body, 'topic');
    RETURN NEW;
END $$;
CREATE TRIGGER label_note BEFORE INSERT OR UPDATE OF body ON notes
    FOR EACH ROW EXECUTE FUNCTION label_note();
INSERT INTO notes (id, body)
SELECT i, (ARRAY['i love eating pasta .', 'grace won the tennis game .', 'heavy snow is expected tonight .'])[1 + i % 3]
FROM generate_series(1, 10000) AS i;
SELECT topic, count(*) FROM notes GROUP BY topic ORDER BY topic;
SELECT calls AS calls_after_insert FROM ai_loaded_models() WHERE name = 'topic' \gset
-- An UPDATE that leaves the text alone does not run the model.
UPDATE notes SET views = views + 1;
SELECT calls - :calls_after_insert AS model_calls_for_the_update FROM ai_loaded_models() WHERE name = 'topic';
UPDATE notes SET body = 'we watched the football match .' WHERE id = 3;
SELECT id, topic FROM notes WHERE id = 3;

-- Parallel query: the functions are PARALLEL SAFE, so workers compute ai_embed under a Gather (each worker
-- loads the model once), and the answers equal a serial scan's.
CREATE TABLE docs AS SELECT id, body FROM notes WHERE id <= 3000;
ANALYZE docs;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
EXPLAIN (COSTS OFF, VERBOSE) SELECT id, ai_embed(body, 'topic') FROM docs;
-- The plan that ran, without its row counts (they vary between workers).
CREATE FUNCTION pg_temp.plan(query text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE query LOOP
        RETURN NEXT regexp_replace(line, ' \(actual.*\)$', '');
    END LOOP;
END $$;
SELECT * FROM pg_temp.plan($$EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF)
    CREATE TABLE embedded_in_parallel AS SELECT id, ai_embed(body, 'topic') AS embedding FROM docs$$);
SET max_parallel_workers_per_gather = 0;
CREATE TABLE embedded_serially AS SELECT id, ai_embed(body, 'topic') AS embedding FROM docs;
SELECT count(*) AS rows, count(*) FILTER (WHERE p.embedding = s.embedding) AS equal
FROM embedded_in_parallel AS p JOIN embedded_serially AS s USING (id);

-- Every model function declares its parallel safety and volatility.
SELECT proname, provolatile, proparallel, count(*) AS forms
FROM pg_proc WHERE proname LIKE 'ai\_%' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
-- An array form over constants runs the model once: one timing NOTICE, none from the planner's estimate of unnest.
SET pg_ai.timing = on;
SELECT count(*) FROM unnest(ai_classify_label(ARRAY['i love pasta .', 'it snows .'], 'topic'));
RESET pg_ai.timing;

-- Random text as arguments: an answer or a clean error, never an internal error or a crash.
SELECT ai_load_model('mlm', :'fixtures' || '/models/bert-mlm');
SELECT ai_load_model('t5', :'fixtures' || '/models/t5');
SELECT ai_load_model('gpt2', :'fixtures' || '/models/gpt2');
SELECT setseed(0.42);
CREATE FUNCTION pg_temp.random_text(n int) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(chr(CASE WHEN random() < 0.7 THEN 32 + (random() * 94)::int
                               ELSE 160 + (random() * 20000)::int END), '')
    FROM generate_series(1, n)
$$;
CREATE TABLE fuzz_outcomes (call text, outcome text);
DO $$
DECLARE
    t text;
    calls text[] := ARRAY[
        $q$SELECT ai_fill_mask(%L || ' [MASK]', 'mlm')$q$,
        $q$SELECT ai_fill_mask(%L, 'mlm')$q$,
        $q$SELECT ai_classify_label(%L, 'topic')$q$,
        $q$SELECT ai_embed(%L, 'topic')$q$,
        $q$SELECT ai_translate(%L, 't5', max_tokens => 4, num_beams => 2)$q$,
        $q$SELECT ai_generate(%L, 'gpt2', max_tokens => 4, stop => ARRAY['e'])$q$,
        $q$SELECT ai_classify_label('x', %L)$q$];
    call text;
BEGIN
    FOR i IN 1..30 LOOP
        t := pg_temp.random_text((random() * 80)::int);
        FOREACH call IN ARRAY calls LOOP
            BEGIN
                EXECUTE format(call, t);
                INSERT INTO fuzz_outcomes VALUES (call, 'answer');
            EXCEPTION WHEN OTHERS THEN
                INSERT INTO fuzz_outcomes VALUES (call, SQLSTATE);
            END;
        END LOOP;
    END LOOP;
END $$;
SELECT call, outcome, count(*) FROM fuzz_outcomes GROUP BY 1, 2 ORDER BY 1, 2;

-- Faults: the model's directory is deleted while the model is loaded. The loaded copy keeps answering;
-- loading it again is a clean error, and the backend lives on.
SELECT format('rm -rf /tmp/pg_ai-doomed; cp -r %s/models/bert-classifier /tmp/pg_ai-doomed', :'fixtures') AS copy \gset
COPY (SELECT 1) TO PROGRAM :'copy';
SELECT ai_load_model('doomed', '/tmp/pg_ai-doomed');
COPY (SELECT 1) TO PROGRAM 'rm -rf /tmp/pg_ai-doomed';
SELECT ai_classify_label('grace won the tennis game .', 'doomed') AS still_loaded;
SELECT ai_unload_model('doomed');
SELECT pg_temp.try($$SELECT ai_classify_label('grace won the tennis game .', 'doomed')$$) AS reload;
SELECT 1 AS backend_alive;

-- pg_ai.merge_memory: after a load, the backend's private memory is marked mergeable ("mg" in smaps), so the
-- kernel's same-page merging, where the administrator runs it, shares identical weights between backends
-- (benches/memory.sh measures it).
SELECT count(*) AS mergeable_before FROM regexp_matches(pg_read_file('/proc/self/smaps'), 'VmFlags:[^\n]* mg', 'g');
SET pg_ai.merge_memory = on;
SELECT ai_load_model('merged', :'fixtures' || '/models/bert-mlm');
SELECT count(*) > 0 AS mergeable_after FROM regexp_matches(pg_read_file('/proc/self/smaps'), 'VmFlags:[^\n]* mg', 'g');
RESET pg_ai.merge_memory;
