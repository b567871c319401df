-- pg_ai's catalog: the registered models and, for models stored in the database, their files.

CREATE SCHEMA ai;
COMMENT ON SCHEMA ai IS 'pg_ai: the model registry';

CREATE TABLE ai.models (
    name         text PRIMARY KEY CHECK (name <> ''),
    task         text NOT NULL,
    architecture text NOT NULL,
    source       text NOT NULL,
    stored       boolean NOT NULL DEFAULT false,
    config       jsonb NOT NULL,
    sha256       text NOT NULL,
    owner        regrole NOT NULL DEFAULT current_user::regrole,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE ai.models IS 'Models registered with ai_load_model; one row per name';

-- Files of models loaded with store => true, in chunks of at most 64 MB.
CREATE TABLE ai.model_files (
    model text NOT NULL REFERENCES ai.models (name) ON DELETE CASCADE,
    path  text NOT NULL,
    chunk int NOT NULL,
    data  bytea NOT NULL,
    PRIMARY KEY (model, path, chunk)
);

-- pg_dump keeps the rows of both tables: stored models travel with a dump.
SELECT pg_catalog.pg_extension_config_dump('ai.models', '');
SELECT pg_catalog.pg_extension_config_dump('ai.model_files', '');

-- Everyone may use the registered models; registering needs INSERT, which the owner grants.
GRANT USAGE ON SCHEMA ai TO PUBLIC;
GRANT SELECT ON ai.models, ai.model_files TO PUBLIC;
