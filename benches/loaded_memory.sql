-- What one backend holds for a model: its resident memory (VmRSS) before loading, after loading and one call,
-- and after ai_unload_model, against the memory_bytes that ai_loaded_models() counts (and
-- pg_ai.max_cache_memory caps). As a superuser (it reads /proc/self/status), in a database with pg_ai:
--   scripts/cluster.sh psql -d DB -v root=$PWD -f benches/loaded_memory.sql
\set smollm2 :root/.models/SmolLM2-135M-Instruct.Q4_1.gguf
\set minilm :root/.models/all-MiniLM-L6-v2
CREATE FUNCTION pg_temp.rss() RETURNS bigint LANGUAGE sql AS $$
    SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmRSS:\s+(\d+)'))[1]::bigint * 1024
$$;
CREATE TEMP TABLE figures (model text, before bigint, loaded_and_used bigint, counted bigint, after_unload bigint);
CREATE FUNCTION pg_temp.measure(name text, source text, call text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    before bigint := pg_temp.rss();
    used bigint;
    counted bigint;
BEGIN
    PERFORM ai_load_model(name, source);
    EXECUTE call;
    used := pg_temp.rss();
    SELECT memory_bytes INTO counted FROM ai_loaded_models() AS l WHERE l.name = measure.name;
    PERFORM ai_unload_model(name);
    INSERT INTO figures VALUES (name, before, used, counted, pg_temp.rss());
    PERFORM ai_drop_model(name);
END $$;
SELECT pg_temp.measure('bench-smollm2', :'smollm2', $$SELECT ai_generate('The capital of France is', 'bench-smollm2', max_tokens => 8)$$);
SELECT pg_temp.measure('bench-minilm', :'minilm', $$SELECT ai_embed('A man is eating food.', 'bench-minilm')$$);
SELECT model, pg_size_pretty(loaded_and_used - before) AS grew_by, pg_size_pretty(counted) AS memory_bytes,
       pg_size_pretty(after_unload - before) AS left_after_unload
FROM figures;
