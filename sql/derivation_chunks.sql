-- Chunk derivations (task 'embed_chunks'): a source column cut into chunks by the model's tokenizer (ai_chunk)
-- and embedded, one row per chunk in a child table keyed by the source row's primary key. The queue, triggers and
-- worker are those of sql/derivations.sql; these functions check the child table, compute a batch's chunks and
-- write them.

-- The columns a child table has: the source's key columns (same names and types), then these; start_pos and
-- end_pos are written where the table has them.
CREATE FUNCTION ai.chunk_columns() RETURNS TABLE (name name, types text[], required boolean) LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
    VALUES ('ord'::name, ARRAY['integer', 'bigint'], true),
           ('chunk', ARRAY['text', 'character varying'], true),
           ('embedding', ARRAY['real[]', 'double precision[]', 'vector'], true),
           ('start_pos', ARRAY['integer', 'bigint'], false),
           ('end_pos', ARRAY['integer', 'bigint'], false)
$$;

-- The table of chunks `target` names: as written, in the schema of `tbl` unless qualified; NULL if there is none.
CREATE FUNCTION ai.chunk_table(tbl regclass, target name) RETURNS regclass LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parts text[] := parse_ident(target);
BEGIN
    IF cardinality(parts) = 1 THEN
        parts := (SELECT n.nspname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
                  WHERE c.oid = tbl) || parts;
    END IF;
    RETURN to_regclass(array_to_string(ARRAY(SELECT quote_ident(p) FROM unnest(parts) AS p), '.'));
END $$;

-- Checks the child table `target` of a chunk derivation of `tbl` (its columns, the caller's privileges and the
-- embedding's dimension) and returns it.
CREATE FUNCTION ai.check_chunk_table(tbl regclass, target name, keys name[], model text, options jsonb)
RETURNS regclass LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    child regclass := ai.chunk_table(tbl, target);
    c record;
    a pg_attribute;
    type_name text;
    dimensions int;
BEGIN
    IF child IS NULL THEN
        RAISE EXCEPTION 'table "%" does not exist', target USING ERRCODE = '42P01',
            HINT = 'Create the table of chunks first (in the schema of the source table, unless you name one): '
                   'the source''s key columns, then ord, chunk and embedding.';
    END IF;
    IF (SELECT relkind FROM pg_class WHERE oid = child) <> 'r' OR child = tbl THEN
        RAISE EXCEPTION '"%" cannot hold the chunks: it is not a table, or it is the source', target
            USING ERRCODE = '42809';
    END IF;
    FOR c IN SELECT k AS name, format_type(s.atttypid, s.atttypmod) AS types, true AS required
             FROM unnest(keys) AS k JOIN pg_attribute AS s ON s.attrelid = tbl AND s.attname = k
             UNION ALL SELECT cc.name, array_to_string(cc.types, ', '), cc.required FROM ai.chunk_columns() AS cc LOOP
        SELECT * INTO a FROM pg_attribute
        WHERE attrelid = child AND attname = c.name AND attnum > 0 AND NOT attisdropped;
        IF NOT FOUND THEN
            CONTINUE WHEN NOT c.required;
            RAISE EXCEPTION 'column "%" of table % does not exist', c.name, child USING ERRCODE = '42703',
                HINT = 'A table of chunks has the source''s key columns, then ord, chunk and embedding '
                       '(start_pos and end_pos if you like).';
        END IF;
        type_name := CASE WHEN (SELECT typname FROM pg_type WHERE oid = a.atttypid) = 'vector' THEN 'vector'
                          WHEN c.name = ANY (keys) THEN format_type(a.atttypid, a.atttypmod)
                          ELSE format_type(a.atttypid, NULL) END;
        IF NOT type_name = ANY (string_to_array(c.types, ', ')) THEN
            RAISE EXCEPTION 'column "%" of table % is of type %, not %', c.name, child, type_name,
                replace(c.types, ', ', ' or ') USING ERRCODE = '42804';
        END IF;
    END LOOP;
    IF NOT has_table_privilege(child, 'INSERT, DELETE') OR NOT has_table_privilege(child, 'SELECT') THEN
        RAISE EXCEPTION 'permission denied to write the chunks into %', child USING ERRCODE = '42501',
            HINT = 'The worker runs as you: it reads, deletes and inserts the rows of the table of chunks.';
    END IF;
    -- The task once, as the worker will run it.
    dimensions := cardinality(((ai.derive_chunks(model, options, ARRAY['probe']))[1]::jsonb->0->>'embedding')::real[]);
    SELECT * INTO a FROM pg_attribute WHERE attrelid = child AND attname = 'embedding';
    IF (SELECT typname FROM pg_type WHERE oid = a.atttypid) = 'vector' AND a.atttypmod > 0
       AND a.atttypmod <> dimensions THEN
        RAISE EXCEPTION 'column "embedding" of table % is vector(%), and model % gives % dimensions', child,
            a.atttypmod, model, dimensions USING ERRCODE = '22023';
    END IF;
    RETURN child;
END $$;

-- The chunks of each of `texts` with their embeddings, one jsonb array per text (NULL for NULL) as text: the
-- values ai.derive_values gives for task embed_chunks.
CREATE FUNCTION ai.derive_chunks(model text, options jsonb, texts text[]) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    positions int[];
    ords int[];
    chunks text[];
    starts int[];
    ends int[];
    result text[];
BEGIN
    SELECT array_agg(s.i ORDER BY s.i, c.ord), array_agg(c.ord ORDER BY s.i, c.ord),
           array_agg(c.chunk ORDER BY s.i, c.ord), array_agg(c.start_pos ORDER BY s.i, c.ord),
           array_agg(c.end_pos ORDER BY s.i, c.ord)
    INTO positions, ords, chunks, starts, ends
    FROM unnest(texts) WITH ORDINALITY AS s(text, i),
         @extschema@.ai_chunk(s.text, model, (options->>'max_tokens')::int,
                              coalesce((options->>'overlap')::int, 0)) AS c;
    -- One array call embeds the chunks of every text together.
    SELECT array_agg(CASE WHEN texts[s.i] IS NOT NULL THEN coalesce(v.chunks, '[]')::text END ORDER BY s.i)
    INTO result
    FROM generate_series(1, cardinality(texts)) AS s(i)
    LEFT JOIN (SELECT u.position,
                      jsonb_agg(jsonb_build_object('ord', u.ord, 'chunk', u.chunk, 'start_pos', u.start_pos,
                                                   'end_pos', u.end_pos, 'embedding', e.embedding::text) ORDER BY u.ord)
                      AS chunks
               FROM unnest(positions, ords, chunks, starts, ends) WITH ORDINALITY
                    AS u(position, ord, chunk, start_pos, end_pos, n)
               JOIN @extschema@.ai_embed(chunks, model) AS e ON e.ord = u.n
               GROUP BY u.position) AS v ON v.position = s.i;
    RETURN result;
END $$;

-- Writes the chunks of one batch of chunk derivation `d`: for each row whose source is still what was read
-- (`sources`, NULL for a row deleted or without text), its chunks (`chunks`, from ai.derive_chunks) replace
-- those it had; rows that `failed` keep theirs.
CREATE FUNCTION ai.write_chunks(d ai.derivations, keys jsonb[], sources text[], chunks text[], failed boolean[])
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tbl text := d.source_table::regclass::text;
    keys_of_t text := (SELECT string_agg(format('t.%I', c), ', ') FROM unnest(d.key_columns) AS c);
    keys_of_k text := (SELECT string_agg(format('k.%I', c), ', ') FROM unnest(d.key_columns) AS c);
    -- Whether key k's row is as it was read: its source as text now, NULL where the row is gone.
    unchanged text := format('(SELECT t.%I::text FROM %s AS t WHERE (%s) = (%s)) IS NOT DISTINCT FROM r.source',
                             d.source_column, tbl, keys_of_t, keys_of_k);
    -- start_pos and end_pos, where the table of chunks has them.
    positions text[] := ARRAY(SELECT cc.name FROM ai.chunk_columns() AS cc
                              WHERE NOT cc.required AND EXISTS (SELECT FROM pg_attribute AS a
                                  WHERE a.attrelid = d.target_table AND a.attname = cc.name AND NOT a.attisdropped));
BEGIN
    EXECUTE format(
        'DELETE FROM %s AS c USING unnest($1, $2, $3) AS r(key, source, failed),
                                   jsonb_populate_record(NULL::%s, r.key) AS k
         WHERE NOT r.failed AND (%s) = (%s) AND %s',
        d.target_table, tbl, replace(keys_of_t, 't.', 'c.'), keys_of_k, unchanged)
        USING keys, sources, failed;
    EXECUTE format(
        'INSERT INTO %s (%s, ord, chunk, embedding%s)
         SELECT %s, v.ord, v.chunk, v.embedding::real[]::%s%s
         FROM unnest($1, $2, $3, $4) AS r(key, source, chunks, failed),
              jsonb_populate_record(NULL::%s, r.key) AS k,
              jsonb_to_recordset(r.chunks::jsonb) AS v(ord int, chunk text, start_pos int, end_pos int, embedding text)
         WHERE NOT r.failed AND %s',
        d.target_table, replace(keys_of_k, 'k.', ''),
        (SELECT string_agg(format(', %I', p), '') FROM unnest(positions) AS p), keys_of_k,
        (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute AS a
         WHERE a.attrelid = d.target_table AND a.attname = 'embedding'),
        (SELECT string_agg(format(', v.%I', p), '') FROM unnest(positions) AS p), tbl, unchanged)
        USING keys, sources, chunks, failed;
END $$;

-- Removes the chunks whose source row is gone (after a TRUNCATE of the source, which queues a 'null' key).
CREATE FUNCTION ai.remove_orphan_chunks(d ai.derivations) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('DELETE FROM %s AS c WHERE NOT EXISTS (SELECT FROM %s AS t WHERE (%s) = (%s))',
        d.target_table::regclass, d.source_table::regclass,
        (SELECT string_agg(format('t.%I', c), ', ') FROM unnest(d.key_columns) AS c),
        (SELECT string_agg(format('c.%I', c), ', ') FROM unnest(d.key_columns) AS c));
    DELETE FROM ai.derivation_queue WHERE derivation = d.id AND key = 'null';
END $$;
