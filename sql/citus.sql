-- pg_ai on a Citus cluster: the model catalog as reference tables, so that a model registered, trained,
-- granted or dropped on one node is the same on every node, workers added later included.

-- Whether `tbl` is a Citus table (distributed, reference or Citus local): false without Citus.
CREATE FUNCTION ai.is_citus_table(tbl regclass) RETURNS boolean LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found boolean := false;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)' INTO found
        USING tbl;
    END IF;
    RETURN found;
END $$;

-- Makes ai.models, ai.model_users and ai.model_files Citus reference tables: a copy on every node, written on
-- all of them in one (two-phase) commit, so models registered with store => true (their files are rows) and
-- trained models reach every worker as data. Run once on the coordinator, as the extension's owner. True if it
-- distributed the catalog now, false if it was distributed already.
CREATE FUNCTION ai_distribute_models() RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    catalog regclass[] := ARRAY['ai.models', 'ai.model_users', 'ai.model_files'];
    t regclass;
    node record;
    foreign_keys text;
    done boolean := false;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'Citus is not installed in this database' USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'With citus in shared_preload_libraries, CREATE EXTENSION citus on the coordinator first.';
    END IF;
    IF (SELECT bool_and(ai.is_citus_table(c)) FROM unnest(catalog) AS c) THEN
        RETURN false;
    END IF;
    IF NOT pg_has_role((SELECT relowner FROM pg_class WHERE oid = 'ai.models'::regclass), 'USAGE') THEN
        RAISE EXCEPTION 'must be the owner of pg_ai''s catalog to distribute it'
            USING ERRCODE = 'insufficient_privilege',
            HINT = 'Run it as the role that created the extension pg_ai (usually a superuser).';
    END IF;
    -- A worker's own catalog becomes an empty shell beside the reference tables' copy: models registered there
    -- by hand would vanish from sight, so they must go first.
    FOR node IN EXECUTE 'SELECT nodename, nodeport, success, result
                         FROM pg_catalog.run_command_on_workers(''SELECT count(*) FROM ai.models'')' LOOP
        IF NOT node.success THEN
            RAISE EXCEPTION 'cannot read pg_ai''s catalog on worker %:%: %', node.nodename, node.nodeport, node.result
                USING ERRCODE = 'object_not_in_prerequisite_state',
                HINT = 'pg_ai must be installed on every node (CREATE EXTENSION pg_ai on the coordinator does it).';
        ELSIF node.result <> '0' THEN
            RAISE EXCEPTION 'worker %:% has % model(s) of its own', node.nodename, node.nodeport, node.result
                USING ERRCODE = 'object_not_in_prerequisite_state',
                HINT = 'Drop them there (ai_drop_model), then register them on the coordinator.';
        END IF;
    END LOOP;
    -- Without this, Citus would first turn ai.model_users and ai.model_files, whose foreign keys reference
    -- ai.models, into Citus local tables, which an extension's tables cannot become.
    foreign_keys := current_setting('citus.enable_local_reference_table_foreign_keys');
    PERFORM set_config('citus.enable_local_reference_table_foreign_keys', 'off', true);
    FOREACH t IN ARRAY catalog LOOP
        IF NOT ai.is_citus_table(t) THEN
            EXECUTE 'SELECT pg_catalog.create_reference_table($1)' USING t;
            done := true;
        END IF;
    END LOOP;
    PERFORM set_config('citus.enable_local_reference_table_foreign_keys', foreign_keys, true);
    -- The rows now live in the reference tables' shards; the copies left in the tables themselves go.
    FOREACH t IN ARRAY ARRAY['ai.model_files', 'ai.model_users', 'ai.models']::regclass[] LOOP
        PERFORM pg_catalog.truncate_local_data_after_distributing_table(t);
    END LOOP;
    RETURN done;
END $$;
COMMENT ON FUNCTION ai_distribute_models IS 'Citus: makes the model catalog reference tables, so models reach every node';
