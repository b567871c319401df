#!/usr/bin/env bash
# Semantic search with pgvector: an embedding derivation into a vector(384) column (its dimension checked at the
# declaration), an HNSW index, and `<=>` ranking the rows as the cosine of ai_embed's vectors does. pgvector is
# built from ../shared/vendor when the server does not have it (never copied into this repository); without
# either the test says that it skipped. Run as root by scripts/test.sh, with pg_ai installed and the cluster of
# scripts/cluster.sh running.
set -euo pipefail
cd "$(dirname "$0")/.."
name="pgvector"
source tests/lib.sh
db() { sql -d pg_ai_vector -c "$1"; }

extensions=$(/usr/bin/pg_config --sharedir)/extension
if [ ! -f "$extensions/vector.control" ]; then
    tarball=$(ls ../shared/vendor/pgvector-*.tar.gz 2>/dev/null | head -n 1 || true)
    if [ -z "$tarball" ]; then
        echo "SKIP $name: pgvector is not installed and ../shared/vendor has no pgvector source"
        exit 0
    fi
    # Built once per tarball, outside the repository.
    build=/tmp/pg_ai-vendor/$(sha256sum "$tarball" | cut -c1-16)
    if [ ! -f "$build/done" ]; then
        rm -rf "$build" && mkdir -p "$build"
        tar -xzf "$tarball" -C "$build" --strip-components=1
        make -s -C "$build" PG_CONFIG=/usr/bin/pg_config >/dev/null 2>&1
        touch "$build/done"
    fi
    make -s -C "$build" PG_CONFIG=/usr/bin/pg_config install >/dev/null
fi

sql -c "DROP DATABASE IF EXISTS pg_ai_vector WITH (FORCE)" -c "CREATE DATABASE pg_ai_vector"
sql -d pg_ai_vector -o /dev/null <<SQL
CREATE EXTENSION vector;
CREATE EXTENSION pg_ai;
SELECT ai_load_model('minilm', '$PWD/.models/all-MiniLM-L6-v2');
CREATE TABLE docs (id int PRIMARY KEY, body text, embedding vector(384), wrong vector(3));
CREATE INDEX ON docs USING hnsw (embedding vector_cosine_ops);
INSERT INTO docs (id, body) VALUES
    (1, 'A man is eating food.'), (2, 'A man is riding a horse.'), (3, 'The new movie is awesome.'),
    (4, 'A woman is playing the violin.'), (5, 'Two men pushed carts through the woods.'),
    (6, 'A monkey is playing drums.'), (7, 'The cat sits outside.'), (8, 'Heavy snow is expected tonight.');
SELECT ai_derive('docs', 'embedding', 'body', 'embed', 'minilm');
SQL

# The declaration checks the column's dimension against the model's.
wrong=$(db "DO \$\$ BEGIN PERFORM ai_derive('docs', 'wrong', 'body', 'embed', 'minilm');
            EXCEPTION WHEN OTHERS THEN RAISE WARNING '%: %', SQLSTATE, SQLERRM; END \$\$" 2>&1 | grep -o '22023: .*' || true)
[ "$wrong" = '22023: column "wrong" is vector(3), and model minilm gives 384 dimensions' ] ||
    fail "a vector(3) target was not refused: $wrong"

for _ in $(seq 600); do
    [ "$(db "SELECT queued FROM ai.derivation_status")" = 0 ] && break
    sleep 0.1
done
[ "$(db "SELECT count(*) FROM docs WHERE embedding IS NULL")" = 0 ] || fail "rows were not derived"
# The derived vectors are ai_embed's.
far=$(db "SELECT count(*) FROM docs WHERE embedding <=> ai_embed(body, 'minilm')::vector > 1e-6")
[ "$far" = 0 ] || fail "$far derived vectors differ from ai_embed's"
# The index answers the search, ranked as the cosine of ai_embed's vectors ranks them.
query="ai_embed('Someone is eating a meal.', 'minilm')"
by_index=$(db "SET enable_seqscan = off; SELECT string_agg(id::text, ',') FROM (SELECT id FROM docs
               ORDER BY embedding <=> $query::vector LIMIT 3) AS top")
by_cosine=$(db "SELECT string_agg(id::text, ',') FROM (SELECT id FROM docs
                ORDER BY (SELECT sum(a * b) / sqrt(sum(a * a) * sum(b * b))
                          FROM unnest(ai_embed(body, 'minilm')::float8[], $query::float8[]) AS u(a, b)) DESC
                LIMIT 3) AS top")
[ "$by_index" = "$by_cosine" ] && [ "${by_index%%,*}" = 1 ] || fail "the index ranked $by_index, the cosine $by_cosine"
plan=$(db "SET enable_seqscan = off; EXPLAIN SELECT id FROM docs ORDER BY embedding <=> $query::vector LIMIT 3")
grep -q "Index Scan using docs_embedding_idx" <<<"$plan" || fail "the search did not use the HNSW index: $plan"

# Chunks into a table with a vector(384) column (its dimension checked too), searched by the nearest passage.
db "CREATE TABLE doc_chunks (id int, ord int, chunk text, embedding vector(384), PRIMARY KEY (id, ord))
    ; CREATE TABLE wrong_chunks (id int, ord int, chunk text, embedding vector(3))" >/dev/null
wrong=$(db "DO \$\$ BEGIN PERFORM ai_derive('docs', 'wrong_chunks', 'body', 'embed_chunks', 'minilm');
            EXCEPTION WHEN OTHERS THEN RAISE WARNING '%: %', SQLSTATE, SQLERRM; END \$\$" 2>&1 | grep -o '22023: .*' || true)
[ "$wrong" = '22023: column "embedding" of table public.wrong_chunks is vector(3), and model minilm gives 384 dimensions' ] ||
    fail "a vector(3) table of chunks was not refused: $wrong"
db "SELECT ai_derive('docs', 'doc_chunks', 'body', 'embed_chunks', 'minilm', '{\"max_tokens\": 4}')" >/dev/null
for _ in $(seq 600); do
    [ "$(db "SELECT sum(queued) FROM ai.derivation_status")" = 0 ] && break
    sleep 0.1
done
expected=$(db "SELECT count(*) FROM docs, ai_chunk(body, 'minilm', 4)")
[ "$(db "SELECT count(*) FROM doc_chunks")" = "$expected" ] || fail "the chunks were not all derived"
nearest=$(db "SELECT id FROM doc_chunks ORDER BY embedding <=> $query::vector LIMIT 1")
[ "$nearest" = 1 ] || fail "the nearest passage is from row $nearest"
db "SELECT ai_drop_derivation('docs', 'doc_chunks')" >/dev/null

db "SELECT ai_drop_derivation('docs', 'embedding')" >/dev/null
sql -c "DROP DATABASE pg_ai_vector WITH (FORCE)"
echo "ok   pgvector: derived vector(384) embeddings, searched through an HNSW index as the cosine ranks them, and chunks"
