-- Derivations: a target column that keeps itself derived from a source column of the same table by a model
-- (ai_derive). Writers never wait for the model: triggers queue the keys of rows whose source changed, within the
-- writer's transaction, and a background worker (src/derivations.rs), connected as the declaring role, derives
-- them in batches with the array forms of the task functions, each batch in one transaction of its own.

CREATE TABLE ai.derivations (
    id            bigserial PRIMARY KEY,
    -- regclass, so that pg_dump writes the table's name (and pg_upgrade keeps the oid).
    source_table  regclass NOT NULL,
    source_column name NOT NULL,
    -- A column of source_table, or for task embed_chunks the name of the table of chunks (target_table).
    target_column name NOT NULL,
    target_table  regclass,
    task          text NOT NULL
                  CHECK (task IN ('embed', 'classify_label', 'classify', 'ner', 'summarize', 'translate', 'generate',
                                  'embed_chunks')),
    model         text NOT NULL,
    options       jsonb NOT NULL DEFAULT '{}',
    -- The table's primary key: what the queue records of a row.
    key_columns   name[] NOT NULL,
    owner         regrole NOT NULL DEFAULT current_user::regrole,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused')),
    -- The worker that derives the rows while it runs.
    pid           int,
    done          bigint NOT NULL DEFAULT 0,
    last_batch    int,
    last_batch_seconds double precision,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (source_table, target_column),
    CHECK ((task = 'embed_chunks') = (target_table IS NOT NULL))
);
COMMENT ON TABLE ai.derivations IS 'Columns derived by a model from another column (ai_derive)';
-- pg_dump carries derivations and their queues (the triggers come with the tables).
SELECT pg_catalog.pg_extension_config_dump('ai.derivations', '');
SELECT pg_catalog.pg_extension_config_dump('ai.derivations_id_seq', '');
ALTER TABLE ai.derivations ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ai.derivations FOR ALL USING (pg_catalog.pg_has_role(owner, 'MEMBER'))
    WITH CHECK (pg_catalog.pg_has_role(owner, 'MEMBER'));

-- Rows waiting to be derived: one entry per change (a row changed twice before the worker came is derived once).
-- No foreign key: its check would cost every queued row a lookup; the derivation's functions clean up.
CREATE TABLE ai.derivation_queue (
    id         bigserial PRIMARY KEY,
    derivation bigint NOT NULL,
    -- The row's primary key, as to_jsonb writes its columns.
    key        jsonb NOT NULL,
    queued_at  timestamptz NOT NULL DEFAULT now(),
    -- A row whose model call failed: how often, when to try again, and why.
    attempts   int NOT NULL DEFAULT 0,
    retry_at   timestamptz,
    error      text
);
CREATE INDEX ON ai.derivation_queue (derivation, key);
SELECT pg_catalog.pg_extension_config_dump('ai.derivation_queue', '');
SELECT pg_catalog.pg_extension_config_dump('ai.derivation_queue_id_seq', '');

-- Whether `role` holds any of `privileges` on a derivation's table: roles that may write it queue rows, roles that
-- may read it see and unqueue them. Security definer to read ai.derivations past its row security; it runs
-- nothing of the caller's.
CREATE FUNCTION ai.may_queue(derivation bigint, role name, privileges text) RETURNS boolean LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM ai.derivations AS d
                   WHERE d.id = $1 AND pg_catalog.has_table_privilege($2, d.source_table, $3))
$$;
ALTER TABLE ai.derivation_queue ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON ai.derivation_queue FOR ALL USING (
    EXISTS (SELECT FROM ai.derivations AS d WHERE d.id = derivation AND pg_catalog.pg_has_role(d.owner, 'MEMBER')));
CREATE POLICY writers_queue ON ai.derivation_queue FOR INSERT
    WITH CHECK (ai.may_queue(derivation, current_user, 'INSERT, UPDATE, DELETE, TRUNCATE'));
CREATE POLICY readers_see ON ai.derivation_queue FOR SELECT USING (ai.may_queue(derivation, current_user, 'SELECT'));
CREATE POLICY readers_unqueue ON ai.derivation_queue FOR DELETE
    USING (ai.may_queue(derivation, current_user, 'SELECT'));

CREATE FUNCTION ai.derivation_worker_alive(pid int) RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_stat_activity AS a
                   WHERE a.pid = $1 AND a.backend_type = 'pg_ai derivation')
$$;

-- jsonb_build_object('k1', t.k1, ...) over `columns`, with `alias` before each column.
CREATE FUNCTION ai.key_of(columns name[], alias text) RETURNS text LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'pg_catalog.jsonb_build_object(' || string_agg(format('%L, %s%I', c, alias, c), ', ') || ')'
    FROM pg_catalog.unnest(columns) AS c
$$;

-- The trigger that queues rows, as the writer. TG_ARGV: the derivation's id, then its key columns.
-- INSERT and DELETE run once per statement over the transition table; UPDATE once per row whose source (or key)
-- changed.
CREATE FUNCTION ai.queue_derivation() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    this bigint := TG_ARGV[0]::bigint;
    columns name[] := TG_ARGV[1:]::name[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('INSERT INTO ai.derivation_queue (derivation, key) SELECT $1, %s FROM new_rows AS n',
                       ai.key_of(columns, 'n.')) USING this;
    ELSIF TG_OP = 'UPDATE' THEN
        EXECUTE format('INSERT INTO ai.derivation_queue (derivation, key) SELECT $1, %s FROM (SELECT ($2).*) AS n',
                       ai.key_of(columns, 'n.')) USING this, NEW;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('DELETE FROM ai.derivation_queue AS q USING old_rows AS o
                        WHERE q.derivation = $1 AND q.key = %s', ai.key_of(columns, 'o.')) USING this;
    ELSE -- TRUNCATE
        DELETE FROM ai.derivation_queue AS q WHERE q.derivation = this;
    END IF;
    RETURN NULL;
END $$;

-- A chunk derivation's DELETE and TRUNCATE triggers: the chunks of deleted rows must go, so the rows are queued
-- (the worker finds them gone), and a TRUNCATE queues the key 'null', for which the worker removes every chunk
-- whose row is gone. TG_ARGV as for ai.queue_derivation.
CREATE FUNCTION ai.queue_removed_chunks() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    this bigint := TG_ARGV[0]::bigint;
    columns name[] := TG_ARGV[1:]::name[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        EXECUTE format('INSERT INTO ai.derivation_queue (derivation, key) SELECT $1, %s FROM old_rows AS o',
                       ai.key_of(columns, 'o.')) USING this;
    ELSE -- TRUNCATE
        DELETE FROM ai.derivation_queue AS q WHERE q.derivation = this;
        INSERT INTO ai.derivation_queue (derivation, key) VALUES (this, 'null');
    END IF;
    RETURN NULL;
END $$;

-- The query that derives the values of texts $1 with model $2 and options $3: (ord, value), value as the task's
-- own type (see ai.derivation_value_type).
CREATE FUNCTION ai.derivation_query(task text) RETURNS text LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE task
        WHEN 'embed' THEN
            'SELECT ord, embedding FROM @extschema@.ai_embed($1, $2)'
        WHEN 'classify_label' THEN
            'SELECT ord::int, label FROM unnest(@extschema@.ai_classify_label($1, $2)) WITH ORDINALITY AS u(label, ord)'
        WHEN 'classify' THEN
            'SELECT ord, jsonb_agg(jsonb_build_object(''label'', label, ''score'', score) ORDER BY score DESC, label)
             FROM @extschema@.ai_classify($1, $2) GROUP BY ord'
        WHEN 'ner' THEN
            'SELECT ord, jsonb_agg(jsonb_build_object(''entity'', entity, ''label'', label, ''start_pos'', start_pos,
                                                      ''end_pos'', end_pos, ''score'', score) ORDER BY start_pos)
             FROM @extschema@.ai_ner($1, $2) GROUP BY ord'
        WHEN 'summarize' THEN
            'SELECT ord::int, s FROM unnest(@extschema@.ai_summarize($1, $2, coalesce(($3->>''max_tokens'')::int, 128),
                                                                   ($3->>''num_beams'')::int)) WITH ORDINALITY AS u(s, ord)'
        WHEN 'translate' THEN
            'SELECT ord::int, s FROM unnest(@extschema@.ai_translate($1, $2, $3->>''source_lang'', $3->>''target_lang'',
                                                                   coalesce(($3->>''max_tokens'')::int, 256),
                                                                   ($3->>''num_beams'')::int)) WITH ORDINALITY AS u(s, ord)'
        WHEN 'generate' THEN
            'SELECT ord::int, @extschema@.ai_generate(replace($3->>''prompt'', ''{}'', t), $2,
                                                      coalesce(($3->>''max_tokens'')::int, 64))
             FROM unnest($1) WITH ORDINALITY AS u(t, ord) WHERE t IS NOT NULL'
    END
$$;

-- The type a task's values have before they are cast to the target column's.
CREATE FUNCTION ai.derivation_value_type(task text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE task WHEN 'embed' THEN 'real[]' WHEN 'classify' THEN 'jsonb' WHEN 'ner' THEN 'jsonb' ELSE 'text' END
$$;

-- The values `task` derives from `texts` with `model` and `options`, one per text (NULL for NULL), as text.
CREATE FUNCTION ai.derive_values(task text, model text, options jsonb, texts text[]) RETURNS text[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    empty text := CASE WHEN task IN ('classify', 'ner') THEN '[]' END;
    result text[];
BEGIN
    IF task = 'embed_chunks' THEN
        RETURN ai.derive_chunks(model, options, texts);
    END IF;
    EXECUTE format('SELECT array_agg(CASE WHEN $1[s.ord] IS NOT NULL THEN coalesce(v.value::text, $4) END ORDER BY s.ord)
                    FROM generate_series(1, cardinality($1)) AS s(ord) LEFT JOIN (%s) AS v(ord, value) USING (ord)',
                   ai.derivation_query(task))
        INTO result USING texts, model, options, empty;
    RETURN result;
END $$;

-- Derives one batch of derivation `derivation_id`'s queued rows in the calling transaction: the oldest rows due, each
-- once, with the source as it is now; each row's value is written only where its source is still what was read
-- (a row changed since is queued again by its change). Returns the rows taken, 0 when none is due, and -1 when the
-- derivation is paused, dropped or not the caller's. A batch whose model call fails is derived row by row: a row
-- that fails alone keeps its queue entry with the error and waits 2^attempts seconds (at most an hour) to be tried
-- again.
CREATE FUNCTION ai.derive_batch(derivation_id bigint) RETURNS int LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d ai.derivations;
    batch_size int;
    started timestamptz := clock_timestamp();
    tbl text;
    match text;
    ids bigint[];
    keys jsonb[];
    sources text[];
    derived text[];
    failed boolean[];
    value text[];
BEGIN
    SELECT * INTO d FROM ai.derivations WHERE id = derivation_id AND status = 'active'
        AND pg_catalog.pg_has_role(owner, 'MEMBER');
    IF NOT FOUND THEN
        -- The worker lets go of a paused derivation in this transaction, so that ai_resume_derivation starts a
        -- new one once it commits; resumed meanwhile (the row lock orders the two), it goes on instead.
        UPDATE ai.derivations SET pid = NULL
        WHERE id = derivation_id AND pid = pg_catalog.pg_backend_pid() AND status <> 'active';
        IF NOT FOUND AND EXISTS (SELECT FROM ai.derivations WHERE id = derivation_id AND status = 'active'
                                 AND pid = pg_catalog.pg_backend_pid()) THEN
            RETURN 0;
        END IF;
        RETURN -1;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_class WHERE oid = d.source_table) THEN
        -- The table was dropped, and its triggers with it.
        DELETE FROM ai.derivation_queue WHERE derivation = d.id;
        DELETE FROM ai.derivations WHERE id = d.id;
        RETURN -1;
    END IF;
    IF EXISTS (SELECT FROM ai.derivation_queue WHERE derivation = d.id AND key = 'null') THEN
        PERFORM ai.remove_orphan_chunks(d);
    END IF;
    batch_size := coalesce((d.options->>'batch_size')::int, 64);
    tbl := d.source_table::regclass::text;
    match := format('(%s) = (%s)',
                    (SELECT string_agg(format('t.%I', c), ', ') FROM unnest(d.key_columns) AS c),
                    (SELECT string_agg(format('k.%I', c), ', ') FROM unnest(d.key_columns) AS c));
    -- One statement, one snapshot: the queue entries taken and the sources read agree.
    EXECUTE format(
        'WITH due AS (SELECT key, min(id) AS first FROM ai.derivation_queue
                      WHERE derivation = $1 AND (retry_at IS NULL OR retry_at <= clock_timestamp())
                        AND key <> ''null''
                      GROUP BY key ORDER BY first LIMIT $2)
         SELECT (SELECT array_agg(q.id) FROM ai.derivation_queue AS q JOIN due USING (key) WHERE q.derivation = $1),
                array_agg(due.key ORDER BY due.first),
                array_agg(s.source ORDER BY due.first)
         FROM due LEFT JOIN LATERAL (SELECT t.%I::text AS source
                                     FROM %s AS t, jsonb_populate_record(NULL::%s, due.key) AS k WHERE %s) AS s ON true',
        d.source_column, tbl, tbl, match)
        INTO ids, keys, sources USING d.id, batch_size;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    failed := array_fill(false, ARRAY[cardinality(keys)]);
    BEGIN
        derived := ai.derive_values(d.task, d.model, d.options, sources);
    EXCEPTION WHEN OTHERS THEN
        derived := array_fill(NULL::text, ARRAY[cardinality(keys)]);
        FOR i IN 1..cardinality(keys) LOOP
            BEGIN
                value := ai.derive_values(d.task, d.model, d.options, ARRAY[sources[i]]);
                derived[i] := value[1];
            EXCEPTION WHEN OTHERS THEN
                failed[i] := true;
                UPDATE ai.derivation_queue SET attempts = attempts + 1, error = SQLERRM,
                       retry_at = clock_timestamp() + least(power(2, attempts + 1), 3600) * interval '1 second'
                WHERE derivation = d.id AND key = keys[i] AND id = ANY (ids);
                UPDATE ai.derivations SET last_error = SQLERRM WHERE id = d.id;
            END;
        END LOOP;
    END;
    IF d.task = 'embed_chunks' THEN
        PERFORM ai.write_chunks(d, keys, sources, derived, failed);
    ELSE
        EXECUTE format(
            'UPDATE %s AS t SET %I = r.value::%s::%s
             FROM unnest($1, $2, $3, $4) AS r(key, source, value, failed), jsonb_populate_record(NULL::%s, r.key) AS k
             WHERE NOT r.failed AND %s AND t.%I::text IS NOT DISTINCT FROM r.source',
            tbl, d.target_column, ai.derivation_value_type(d.task),
            (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute AS a
             WHERE a.attrelid = d.source_table AND a.attname = d.target_column),
            tbl, match, d.source_column)
            USING keys, sources, derived, failed;
    END IF;
    DELETE FROM ai.derivation_queue AS q
    WHERE q.id = ANY (ids) AND q.key <> ALL (SELECT k FROM unnest(keys, failed) AS f(k, bad) WHERE f.bad);
    UPDATE ai.derivations
    SET done = done + (SELECT count(*) FROM unnest(failed) AS f(bad) WHERE NOT f.bad),
        last_batch = cardinality(keys),
        last_batch_seconds = extract(epoch FROM clock_timestamp() - started)
    WHERE id = d.id;
    RETURN cardinality(keys);
END $$;

-- Checks a derivation's declaration (or change) before anything is written, and runs the task once on a short
-- text, as the caller: a model that cannot do the task fails here with its own error. `fill`: for ai_fill, which
-- writes once and has no triggers, so Citus tables do.
CREATE FUNCTION ai.check_derivation(tbl regclass, target name, source name, task text, model text, options jsonb,
                                    fill boolean DEFAULT false)
RETURNS name[] LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tasks text[] := ARRAY['embed', 'classify_label', 'classify', 'ner', 'summarize', 'translate', 'generate',
                          'embed_chunks'];
    allowed text[] := ARRAY['batch_size'] || CASE task
        WHEN 'embed_chunks' THEN ARRAY['max_tokens', 'overlap']
        WHEN 'summarize' THEN ARRAY['max_tokens', 'num_beams']
        WHEN 'translate' THEN ARRAY['max_tokens', 'num_beams', 'source_lang', 'target_lang']
        WHEN 'generate' THEN ARRAY['max_tokens', 'prompt']
        ELSE ARRAY[]::text[] END;
    keys name[];
    source_type regtype;
    target_attr pg_attribute;
    target_type text;
    wanted text;
    unknown text;
    probe real[];
BEGIN
    IF NOT task = ANY (tasks) THEN
        RAISE EXCEPTION 'unknown derivation task "%"', task USING ERRCODE = '22023',
            HINT = 'The tasks are ' || array_to_string(tasks, ', ') || '.';
    END IF;
    IF jsonb_typeof(options) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'options must be a JSON object' USING ERRCODE = '22023';
    END IF;
    SELECT min(k) INTO unknown FROM jsonb_object_keys(options) AS k WHERE NOT k = ANY (allowed);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'option "%" does not apply to task %', unknown, task USING ERRCODE = '22023',
            HINT = 'Its options are ' || array_to_string(allowed, ', ') || '.';
    END IF;
    IF (SELECT bool_or(jsonb_typeof(options->k) <> 'number' OR (options->>k)::numeric NOT BETWEEN 1 AND 100000
                       OR (options->>k)::numeric <> trunc((options->>k)::numeric))
        FROM unnest(ARRAY['batch_size', 'max_tokens', 'num_beams']) AS k WHERE options ? k) THEN
        RAISE EXCEPTION 'batch_size, max_tokens and num_beams must be whole numbers from 1 to 100000'
            USING ERRCODE = '22023';
    END IF;
    IF options ? 'overlap' AND (jsonb_typeof(options->'overlap') <> 'number'
                                OR (options->>'overlap')::numeric NOT BETWEEN 0 AND 100000
                                OR (options->>'overlap')::numeric <> trunc((options->>'overlap')::numeric)) THEN
        RAISE EXCEPTION 'overlap must be a whole number from 0 to 100000' USING ERRCODE = '22023';
    END IF;
    IF task = 'generate' AND coalesce(strpos(options->>'prompt', '{}'), 0) = 0 THEN
        RAISE EXCEPTION 'a generate derivation needs a prompt with {} where the source goes' USING ERRCODE = '22023',
            HINT = 'For example options => ''{"prompt": "Summarize in one line: {}"}''.';
    END IF;
    IF (SELECT relkind FROM pg_class WHERE oid = tbl) <> 'r' THEN
        RAISE EXCEPTION '"%" is not a table', tbl USING ERRCODE = '42809';
    END IF;
    -- Its triggers would fire on the workers' shards, where no derivation worker reads their queue.
    IF NOT fill AND ai.is_citus_table(tbl) THEN
        RAISE EXCEPTION 'derived columns are not supported on Citus tables such as %', tbl
            USING ERRCODE = 'feature_not_supported',
            HINT = 'ai_fill fills the column once, with the model running on the workers.';
    END IF;
    SELECT array_agg(a.attname ORDER BY k.n) INTO keys
    FROM pg_index AS i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, n), pg_attribute AS a
    WHERE i.indrelid = tbl AND i.indisprimary AND a.attrelid = tbl AND a.attnum = k.attnum;
    IF keys IS NULL THEN
        RAISE EXCEPTION 'table % has no primary key', tbl USING ERRCODE = '55000',
            HINT = 'The queue of rows to derive records each row by its primary key.';
    END IF;
    SELECT atttypid INTO source_type FROM pg_attribute
    WHERE attrelid = tbl AND attname = source AND attnum > 0 AND NOT attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of table % does not exist', source, tbl USING ERRCODE = '42703';
    END IF;
    IF source_type NOT IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype) THEN
        RAISE EXCEPTION 'source column "%" is of type %, not text', source, source_type USING ERRCODE = '42804';
    END IF;
    IF task = 'embed_chunks' AND fill THEN
        RAISE EXCEPTION 'ai_fill fills a column: task embed_chunks writes a table of chunks' USING ERRCODE = '22023',
            HINT = 'ai_derive keeps a table of chunks.';
    END IF;
    IF task = 'embed_chunks' THEN
        IF NOT has_column_privilege(tbl, source, 'SELECT')
           OR EXISTS (SELECT FROM unnest(keys) AS k WHERE NOT has_column_privilege(tbl, k, 'SELECT')) THEN
            RAISE EXCEPTION 'permission denied to derive chunks of %.%', tbl, source USING ERRCODE = '42501',
                HINT = 'The worker runs as you: it reads the key and source columns.';
        END IF;
        PERFORM ai.check_chunk_table(tbl, target, keys, model, options);
        RETURN keys;
    END IF;
    SELECT * INTO target_attr FROM pg_attribute
    WHERE attrelid = tbl AND attname = target AND attnum > 0 AND NOT attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of table % does not exist', target, tbl USING ERRCODE = '42703',
            HINT = 'Add the target column first, of the type the task gives.';
    END IF;
    IF target = source OR target = ANY (keys) OR target_attr.attgenerated <> '' THEN
        RAISE EXCEPTION 'column "%" cannot be a target: it is the source, a key or generated', target
            USING ERRCODE = '22023';
    END IF;
    -- pgvector's type, in whichever schema it was installed.
    target_type := CASE WHEN (SELECT typname FROM pg_type WHERE oid = target_attr.atttypid) = 'vector' THEN 'vector'
                        ELSE format_type(target_attr.atttypid, NULL) END;
    wanted := CASE
        WHEN task = 'embed' THEN 'real[], double precision[] or vector'
        WHEN task IN ('classify', 'ner') THEN 'jsonb'
        ELSE 'text or character varying' END;
    IF NOT target_type = ANY (CASE
            WHEN task = 'embed' THEN ARRAY['real[]', 'double precision[]', 'vector']
            WHEN task IN ('classify', 'ner') THEN ARRAY['jsonb']
            ELSE ARRAY['text', 'character varying'] END) THEN
        RAISE EXCEPTION 'target column "%" is of type %, and task % gives %', target, target_type, task, wanted
            USING ERRCODE = '42804';
    END IF;
    IF NOT has_column_privilege(tbl, target, 'UPDATE') OR NOT has_column_privilege(tbl, source, 'SELECT')
       OR EXISTS (SELECT FROM unnest(keys) AS k WHERE NOT has_column_privilege(tbl, k, 'SELECT')) THEN
        RAISE EXCEPTION 'permission denied to derive %.%', tbl, target USING ERRCODE = '42501',
            HINT = 'The worker runs as you: it reads the key and source columns and updates the target.';
    END IF;
    -- The task once, as the worker will run it.
    IF task = 'embed' THEN
        SELECT e.embedding INTO probe FROM @extschema@.ai_embed(ARRAY['probe'], model) AS e;
        IF target_type = 'vector' AND target_attr.atttypmod > 0 AND target_attr.atttypmod <> cardinality(probe) THEN
            RAISE EXCEPTION 'column "%" is vector(%), and model % gives % dimensions', target,
                target_attr.atttypmod, model, cardinality(probe) USING ERRCODE = '22023';
        END IF;
    ELSE
        PERFORM ai.derive_values(task, model, options || '{"max_tokens": 1}', ARRAY['probe']);
    END IF;
    RETURN keys;
END $$;

-- The triggers that queue a derivation's rows.
CREATE FUNCTION ai.create_derivation_triggers(d ai.derivations) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tbl text := d.source_table::regclass::text;
    args text := format('%L', d.id) || (SELECT string_agg(format(', %L', c), '') FROM unnest(d.key_columns) AS c);
    olds text := (SELECT string_agg(format('OLD.%I', c), ', ') FROM unnest(d.key_columns) AS c);
    news text := (SELECT string_agg(format('NEW.%I', c), ', ') FROM unnest(d.key_columns) AS c);
    columns text := (SELECT string_agg(format('%I', c), ', ') FROM unnest(d.source_column || d.key_columns) AS c);
    removal text := CASE WHEN d.task = 'embed_chunks' THEN 'ai.queue_removed_chunks' ELSE 'ai.queue_derivation' END;
BEGIN
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION ai.queue_derivation(%s)',
                   'pg_ai_derivation_' || d.id || '_insert', tbl, args);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE OF %s ON %s FOR EACH ROW
                    WHEN (OLD.%I IS DISTINCT FROM NEW.%I OR ROW(%s) IS DISTINCT FROM ROW(%s))
                    EXECUTE FUNCTION ai.queue_derivation(%s)',
                   'pg_ai_derivation_' || d.id || '_update', columns, tbl, d.source_column, d.source_column,
                   olds, news, args);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)',
                   'pg_ai_derivation_' || d.id || '_delete', tbl, removal, args);
    EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)',
                   'pg_ai_derivation_' || d.id || '_truncate', tbl, removal, args);
END $$;

-- Queues every row of a derivation's table.
CREATE FUNCTION ai.queue_all(d ai.derivations) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('INSERT INTO ai.derivation_queue (derivation, key) SELECT $1, %s FROM %s AS n',
                   ai.key_of(d.key_columns, 'n.'), d.source_table::regclass) USING d.id;
END $$;

-- The caller's derivation of `tbl`.`target`, or an error.
CREATE FUNCTION ai.derivation_of(tbl regclass, target name) RETURNS ai.derivations LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d ai.derivations;
BEGIN
    SELECT * INTO d FROM ai.derivations WHERE source_table = tbl AND target_column = target;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'there is no derivation of %.% of yours', tbl, target USING ERRCODE = '42704',
            HINT = 'SELECT * FROM ai.derivation_status lists them.';
    END IF;
    RETURN d;
END $$;

CREATE FUNCTION @extschema@.ai_derive(tbl regclass, target name, source name, task text, model text,
                                      options jsonb DEFAULT '{}') RETURNS bigint
LANGUAGE plpgsql STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d ai.derivations;
    keys name[] := ai.check_derivation(tbl, target, source, task, model, options);
BEGIN
    IF EXISTS (SELECT FROM ai.derivations AS o WHERE o.source_table = tbl AND o.target_column = target) THEN
        RAISE EXCEPTION 'column %.% is derived already', tbl, target USING ERRCODE = '42710',
            HINT = 'ai_change_derivation changes its model or options.';
    END IF;
    -- A table of chunks feeds no column of the table.
    IF task <> 'embed_chunks' THEN
        PERFORM ai.require_no_loop(tbl, target, source);
    END IF;
    INSERT INTO ai.derivations (source_table, source_column, target_column, target_table, task, model, options,
                                key_columns)
    VALUES (tbl, source, target, CASE WHEN task = 'embed_chunks' THEN ai.chunk_table(tbl, target) END, task, model,
            options, keys)
    RETURNING * INTO d;
    PERFORM ai.create_derivation_triggers(d);
    PERFORM ai.queue_all(d);
    PERFORM ai.start_derivation_worker(d.id);
    RETURN d.id;
END $$;
COMMENT ON FUNCTION @extschema@.ai_derive IS 'Keeps a column derived from another by a model, in the background';

-- One value of ai.derive_values, for a query's rows: ai_fill's, which Citus runs on the workers.
CREATE FUNCTION ai.derive_one(task text, model text, options jsonb, source text) RETURNS text LANGUAGE sql
SET search_path = pg_catalog, pg_temp AS $$
    SELECT (ai.derive_values(task, model, options, ARRAY[source]))[1]
$$;

-- Fills `target` of every row of `tbl` from `source` once, now, in the caller's transaction and with the caller's
-- rights: the values a derivation writes, without queue, triggers or worker. On a Citus distributed table the
-- model runs on the workers, next to the shards (Citus refuses a model call with a column in UPDATE). Returns the
-- rows written.
CREATE FUNCTION @extschema@.ai_fill(tbl regclass, target name, source name, task text, model text,
                                    options jsonb DEFAULT '{}') RETURNS bigint
LANGUAGE plpgsql STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    keys name[] := ai.check_derivation(tbl, target, source, task, model, options, fill => true);
    written bigint;
BEGIN
    EXECUTE format(
        'WITH v AS (SELECT %s, ai.derive_one($1, $2, $3, t.%I::text) AS value FROM %s AS t)
         UPDATE %s AS t SET %I = v.value::%s::%s FROM v WHERE (%s) = (%s)',
        (SELECT string_agg(format('t.%I', k), ', ') FROM unnest(keys) AS k), source, tbl, tbl, target,
        ai.derivation_value_type(task),
        (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute AS a WHERE a.attrelid = tbl AND a.attname = target),
        (SELECT string_agg(format('t.%I', k), ', ') FROM unnest(keys) AS k),
        (SELECT string_agg(format('v.%I', k), ', ') FROM unnest(keys) AS k))
        USING task, model, options;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END $$;
COMMENT ON FUNCTION @extschema@.ai_fill IS 'Fills a column from another by a model, once (on Citus tables too)';

CREATE FUNCTION @extschema@.ai_change_derivation(tbl regclass, target name, model text DEFAULT NULL,
                                                 options jsonb DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d ai.derivations;
BEGIN
    -- Not strict: a NULL model or options leaves it as it is; a NULL table or target changes nothing.
    IF tbl IS NULL OR target IS NULL THEN
        RETURN;
    END IF;
    d := ai.derivation_of(tbl, target);
    d.model := coalesce(model, d.model);
    d.options := coalesce(options, d.options);
    PERFORM ai.check_derivation(tbl, coalesce(d.target_table::text, target)::name, d.source_column, d.task, d.model,
                                d.options);
    UPDATE ai.derivations SET model = d.model, options = d.options, status = 'active', last_error = NULL
    WHERE id = d.id;
    DELETE FROM ai.derivation_queue WHERE derivation = d.id;
    PERFORM ai.queue_all(d);
    PERFORM ai.start_derivation_worker(d.id);
END $$;
COMMENT ON FUNCTION @extschema@.ai_change_derivation IS 'Changes a derivation''s model or options and derives every row again';

CREATE FUNCTION @extschema@.ai_pause_derivation(tbl regclass, target name) RETURNS void
LANGUAGE plpgsql STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d ai.derivations := ai.derivation_of(tbl, target);
BEGIN
    UPDATE ai.derivations SET status = 'paused' WHERE id = d.id;
END $$;
COMMENT ON FUNCTION @extschema@.ai_pause_derivation IS 'Stops deriving after the batch at hand; changes stay queued';

CREATE FUNCTION @extschema@.ai_resume_derivation(tbl regclass, target name) RETURNS void
LANGUAGE plpgsql STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d ai.derivations := ai.derivation_of(tbl, target);
BEGIN
    UPDATE ai.derivations SET status = 'active' WHERE id = d.id;
    PERFORM ai.start_derivation_worker(d.id);
END $$;
COMMENT ON FUNCTION @extschema@.ai_resume_derivation IS 'Derives again after a pause, or starts a stopped derivation''s worker';

CREATE FUNCTION @extschema@.ai_drop_derivation(tbl regclass, target name) RETURNS void
LANGUAGE plpgsql STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d ai.derivations := ai.derivation_of(tbl, target);
    event text;
BEGIN
    FOREACH event IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'pg_ai_derivation_' || d.id || '_' || event, tbl);
    END LOOP;
    DELETE FROM ai.derivation_queue WHERE derivation = d.id;
    DELETE FROM ai.derivations WHERE id = d.id;
END $$;
COMMENT ON FUNCTION @extschema@.ai_drop_derivation IS 'Stops keeping a column derived; its values stay';

-- Derivations of one table may chain (one's target another's source: a change runs down the chain, each
-- worker deriving from what the one before wrote), but not loop: refuses deriving `target` from `source` when
-- `target` feeds, through derivations of the table, back into `source`. Security definer: it must see every
-- role's derivations of the table, and tells the caller no more than that.
CREATE FUNCTION ai.require_no_loop(tbl regclass, target name, source name) RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (WITH RECURSIVE fed (col) AS (
                   SELECT target
                   UNION
                   SELECT d.target_column FROM ai.derivations AS d JOIN fed ON d.source_column = fed.col
                   WHERE d.source_table = tbl AND d.target_table IS NULL)
               SELECT FROM fed WHERE col = source) THEN
        RAISE EXCEPTION 'deriving %.% from % would make a loop: % is derived, through other derivations, from %',
            tbl, target, source, source, target USING ERRCODE = '55000';
    END IF;
END $$;

-- Each derivation with its queue: rows queued (failed ones included), failed (waiting to be tried again), done,
-- the last batch's speed, the age of the oldest queued change, the latest error, and the worker's pid while it runs.
CREATE VIEW ai.derivation_status WITH (security_invoker = true) AS
SELECT d.source_table::regclass AS "table", d.target_column AS target, d.source_column AS source, d.task, d.model,
       d.status, coalesce(q.queued, 0) AS queued, coalesce(q.failed, 0) AS failed, d.done,
       round((d.last_batch / nullif(d.last_batch_seconds, 0))::numeric, 1) AS rows_per_second,
       clock_timestamp() - q.oldest AS lag,
       coalesce(q.last_error, d.last_error) AS last_error,
       CASE WHEN ai.derivation_worker_alive(d.pid) THEN d.pid END AS worker
FROM ai.derivations AS d
LEFT JOIN LATERAL (SELECT count(DISTINCT key) AS queued, count(DISTINCT key) FILTER (WHERE error IS NOT NULL) AS failed,
                          min(queued_at) AS oldest,
                          (array_agg(error ORDER BY id DESC) FILTER (WHERE error IS NOT NULL))[1] AS last_error
                   FROM ai.derivation_queue WHERE derivation = d.id) AS q ON true;
COMMENT ON VIEW ai.derivation_status IS 'Derived columns (ai_derive) with their queues';

GRANT SELECT, INSERT, UPDATE, DELETE ON ai.derivations TO PUBLIC;
GRANT SELECT, INSERT (derivation, key), DELETE, UPDATE (attempts, retry_at, error) ON ai.derivation_queue TO PUBLIC;
GRANT SELECT ON ai.derivation_status TO PUBLIC;
GRANT USAGE ON SEQUENCE ai.derivations_id_seq, ai.derivation_queue_id_seq TO PUBLIC;
