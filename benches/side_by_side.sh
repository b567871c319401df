#!/usr/bin/env bash
# pg_ai against the established Python way, side by side in one PostgreSQL 15 cluster, one run, the same model
# files: PL/Python (postgresql-plpython3-15) calling sentence-transformers / transformers / PyTorch inside the
# backend with the model cached in GD, as PostgresML does (benches/plpython.sql). Every figure is measured for
# both, one right after the other, through the same SQL with only the function prefix changed (ai_ / py_).
# As root, from anywhere:
#
#   benches/side_by_side.sh
#
# Environment (all optional):
#   PYBENCH_SITE_PACKAGES  a site-packages directory with torch, transformers, sentence-transformers and gguf for
#                          CPython 3.11 (Debian 12's plpython3u is CPython 3.11). Unset: they are installed once
#                          with `pip install --target .pybench/site-packages` (git-ignored; several GB)
#   MINILM_DIR             all-MiniLM-L6-v2 (default .models/all-MiniLM-L6-v2, fetched by scripts/fetch-minilm.sh)
#   SMOLLM2_GGUF           SmolLM2-135M-Instruct GGUF, for its tokenizer (default .models/..., scripts/fetch-smollm2.sh)
#   PG_AI_CLUSTER, PG_AI_PORT   the private cluster (default /tmp/pg_ai-pybench, 28830)
#   PYBENCH_THREADS        compute threads per backend, both sides (default: nproc)
#   PYBENCH_SKIP_INSTALL=1 do not build and install pg_ai (use what is installed)
#   PYBENCH_DEVICE         cuda: the embed and fill-mask figures on the first GPU, on both sides (pg_ai built by
#                          scripts/build-cuda.sh with pg_ai.device = cuda; PyTorch on cuda). Generation and
#                          training stay on the CPU, where pg_ai runs them. Default cpu
#   PYBENCH_ROWS           row counts for throughput (default "1000 10000")
#   PYBENCH_WARM, PYBENCH_WARM_BASE, PYBENCH_GEN_CALLS, PYBENCH_FIRST_TRIES   iteration counts (100, 20, 3, 3)
#
# Duration: about 9 minutes with PYBENCH_ROWS=1000 on the quiet 2-core development machine (the 10,000-row
# per-row embeds add most of 20 more). benches/side_by_side.out is the output of that run.
#
# Models: the real all-MiniLM-L6-v2; the tiny fixture BERT (tests/fixtures/models/bert-mlm); and randomly
# initialised full-size BERT-base, GPT-2 (124M) and SmolLM2-135M (Llama) made by benches/make_bench_models.py
# into .models/bench (f32 safetensors, seed 0). Both sides read the same directories.
set -euo pipefail
cd "$(dirname "$0")/.."
name=side_by_side
source tests/lib.sh
repo=$PWD
command_line="$0 $*"
export PG_AI_CLUSTER=${PG_AI_CLUSTER:-/tmp/pg_ai-pybench}
export PG_AI_PORT=${PG_AI_PORT:-28830}
export RUST_BACKTRACE=0
threads=${PYBENCH_THREADS:-$(nproc)}
device=${PYBENCH_DEVICE:-cpu}
case "$device" in cpu | cuda) ;; *) echo "PYBENCH_DEVICE is cpu or cuda, not $device" >&2; exit 1 ;; esac
rows_list=${PYBENCH_ROWS:-1000 10000}
warm_n=${PYBENCH_WARM:-100}
warm_base_n=${PYBENCH_WARM_BASE:-20}
gen_calls=${PYBENCH_GEN_CALLS:-3}
first_tries=${PYBENCH_FIRST_TRIES:-3}
gen_tokens=64
minilm=${MINILM_DIR:-$repo/.models/all-MiniLM-L6-v2}
gguf=${SMOLLM2_GGUF:-$repo/.models/SmolLM2-135M-Instruct.Q4_1.gguf}
db=pybench
log() { echo "== $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "run as root (it installs packages and runs the cluster as postgres)" >&2; exit 1; }

# ---------------------------------------------------------------- setup
scripts/apt-install.sh postgresql-15 postgresql-plpython3-15 python3-pip

site=${PYBENCH_SITE_PACKAGES:-$repo/.pybench/site-packages}
# gguf: transformers reads SmolLM2's tokenizer from its GGUF file with it (benches/make_bench_models.py).
if ! PYTHONPATH=$site /usr/bin/python3 -c "import torch, transformers, sentence_transformers, gguf" 2>/dev/null; then
    [ -n "${PYBENCH_SITE_PACKAGES:-}" ] && { echo "$site lacks torch, transformers, sentence-transformers or gguf" >&2; exit 1; }
    log "installing torch, transformers, sentence-transformers, gguf into $site (once; several GB)"
    /usr/bin/python3 -m pip install --quiet --break-system-packages --target "$site" \
        torch transformers sentence-transformers gguf
fi
chmod -R a+rX "$site" 2>/dev/null || true
pyver=$(PYTHONPATH=$site /usr/bin/python3 -c "import torch, transformers, sentence_transformers as s;
print(f'torch {torch.__version__}, transformers {transformers.__version__}, sentence-transformers {s.__version__}')" 2>/dev/null)

[ -f "$minilm/model.safetensors" ] || { scripts/fetch-minilm.sh; minilm=$repo/.models/all-MiniLM-L6-v2; }
[ -f "$gguf" ] || { scripts/fetch-smollm2.sh; gguf=$repo/.models/SmolLM2-135M-Instruct.Q4_1.gguf; }
log "making the full-size random models in .models/bench (once)"
PYTHONPATH=$site /usr/bin/python3 benches/make_bench_models.py "$repo/.models/bench" "$minilm" "$gguf" 2>&1 |
    grep -v -e Warning -e 'Writing model' >&2 || true
chmod -R a+rX "$repo/.models"

if [ "${PYBENCH_SKIP_INSTALL:-}" != 1 ]; then
    cargo pgrx --version >/dev/null 2>&1 || source scripts/setup.sh
    log "building and installing pg_ai (release, $device)"
    if [ "$device" = cuda ]; then
        scripts/build-cuda.sh pgrx install --release --features cuda --pg-config /usr/bin/pg_config >/dev/null
    else
        cargo pgrx install --release --pg-config /usr/bin/pg_config >/dev/null
    fi
fi
# The server started below inherits the loader path: a CUDA build needs the CUDA libraries build-cuda.sh gathered.
[ "$device" = cuda ] && export LD_LIBRARY_PATH=${CUDA_PREFIX:-$HOME/.cache/pg_ai-cuda13}/root/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

log "starting the cluster $PG_AI_CLUSTER on port $PG_AI_PORT"
scripts/cluster.sh stop   # a running server would keep a previous library loaded
scripts/cluster.sh start
max_rows=$(tr ' ' '\n' <<<"$rows_list" | sort -n | tail -n 1)
sql() { scripts/cluster.sh psql -d "$db" -qAt -v ON_ERROR_STOP=1 "$@"; }
scripts/cluster.sh psql -qAt -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" 2>/dev/null
sql <<SQL
SET client_min_messages = warning;
ALTER DATABASE $db SET pybench.site_packages = '$site';
ALTER DATABASE $db SET pybench.threads = $threads;
ALTER DATABASE $db SET pg_ai.threads = $threads;
ALTER DATABASE $db SET pg_ai.device = $device;
ALTER DATABASE $db SET pybench.device = $device;
ALTER DATABASE $db SET max_parallel_workers_per_gather = 0;  -- one backend computes, on both sides
CREATE EXTENSION pg_ai;
SELECT ai_load_model('minilm', '$minilm') \g /dev/null
SELECT ai_load_model('tiny-mlm', '$repo/tests/fixtures/models/bert-mlm') \g /dev/null
SELECT ai_load_model('bert-base', '$repo/.models/bench/bert-base') \g /dev/null
SELECT ai_load_model('gpt2-124m', '$repo/.models/bench/gpt2-124m') \g /dev/null
SELECT ai_load_model('smollm2-135m', '$repo/.models/bench/smollm2-135m') \g /dev/null
\i benches/plpython.sql
-- milliseconds that one statement takes, measured inside the server
CREATE FUNCTION bench_ms(q text) RETURNS float8 LANGUAGE plpgsql AS \$\$
DECLARE t timestamptz := clock_timestamp();
BEGIN
    EXECUTE q;
    RETURN extract(epoch FROM clock_timestamp() - t) * 1000;
END \$\$;
CREATE TABLE bench_texts AS
SELECT i, format('%s %s %s number %s.', (ARRAY['The cat', 'Alice', 'A man', 'The team', 'My neighbour'])[i % 5 + 1],
                 (ARRAY['is eating', 'looked at', 'ran to', 'talked about'])[i % 4 + 1],
                 (ARRAY['the park', 'a piece of bread', 'the new movie', 'the old house', 'the river'])[i % 7 % 5 + 1], i) AS body
FROM generate_series(1, $max_rows) i;
CREATE TABLE bench_masked AS SELECT i, 'the cat sat in the [MASK] number ' || i % 10 || ' .' AS body FROM generate_series(1, $max_rows) i;
SQL

# ---------------------------------------------------------------- measuring
# Results: one line per figure and side, "key<TAB>side<TAB>value".
results=$(mktemp)
notes=$(mktemp)
trap 'rm -f "$results" "$notes"' EXIT
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$results"; }
value() { awk -F'\t' -v k="$1" -v s="$2" '$1 == k && $2 == s { v = $3 } END { print v }' "$results"; }

# Runs SQL on stdin in one fresh session for each side, pg_ai first; FN_ becomes ai_ or py_. Every output line
# "key|value" is recorded.
both() {
    local script side
    script=$(cat)
    for side in ai py; do
        sed "s/FN_/${side}_/g" <<<"$script" | sql | while IFS='|' read -r key value; do
            [ -n "$value" ] && record "$key" "$side" "$value"
        done
    done
}

log "machine load before: $(cut -d' ' -f1-3 /proc/loadavg)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

log "first call in a fresh connection (best of $first_tries, alternating sides)"
best_connect=999999; best_ai=999999; best_py=999999
for _ in $(seq "$first_tries"); do
    t=$(now_ms); sql -c "SELECT 1" >/dev/null; c=$(($(now_ms) - t)); ((c < best_connect)) && best_connect=$c
    t=$(now_ms); sql -c "SELECT ai_embed('A man is eating food.', 'minilm') IS NOT NULL" >/dev/null
    f=$(($(now_ms) - t)); ((f < best_ai)) && best_ai=$f
    t=$(now_ms); sql -c "SELECT py_embed('A man is eating food.', 'minilm') IS NOT NULL" >/dev/null
    f=$(($(now_ms) - t)); ((f < best_py)) && best_py=$f
done
record first ai "$best_ai"; record first py "$best_py"
echo "connecting and SELECT 1 alone: $best_connect ms (psql through runuser, included in the first-call figures)" >>"$notes"

log "warm single-row latency"
both <<SQL
SELECT count(FN_embed('warm up', 'minilm'));
SELECT count(*) FROM FN_fill_mask('alice is eating [MASK] .', 'tiny-mlm');
SELECT count(*) FROM FN_fill_mask('the man went to the [MASK] .', 'bert-base');
SELECT 'warm_embed', bench_ms(\$\$SELECT count(FN_embed('A man is eating food number ' || i, 'minilm')) FROM generate_series(1, $warm_n) i\$\$) / $warm_n;
SELECT 'warm_fill_tiny', bench_ms(\$\$SELECT count(t) FROM (SELECT FN_fill_mask('the cat sat in the [MASK] number ' || i || ' .', 'tiny-mlm') AS t FROM generate_series(1, $warm_n) i) s\$\$) / $warm_n;
SELECT 'warm_fill_base', bench_ms(\$\$SELECT count(t) FROM (SELECT FN_fill_mask('the man went to the [MASK] number ' || i || ' .', 'bert-base') AS t FROM generate_series(1, $warm_base_n) i) s\$\$) / $warm_base_n;
SQL

for n in $rows_list; do
    log "throughput over $n rows"
    both <<SQL
SELECT count(FN_embed('warm up', 'minilm'));
SELECT 'rows_embed_$n', $n * 1000 / bench_ms(\$\$SELECT count(FN_embed(body, 'minilm')) FROM bench_texts WHERE i <= $n\$\$);
SELECT 'array_embed_$n', $n * 1000 / bench_ms(\$\$SELECT count(embedding) FROM FN_embed(ARRAY(SELECT body FROM bench_texts WHERE i <= $n ORDER BY i), 'minilm')\$\$);
SQL
done
n=$(tr ' ' '\n' <<<"$rows_list" | head -n 1)
log "fill-mask (tiny fixture) throughput over $n rows"
both <<SQL
SELECT count(*) FROM FN_fill_mask('alice is eating [MASK] .', 'tiny-mlm');
SELECT 'rows_fill_$n', $n * 1000 / bench_ms(\$\$SELECT count(t) FROM (SELECT FN_fill_mask(body, 'tiny-mlm') AS t FROM bench_masked WHERE i <= $n) s\$\$);
SELECT 'array_fill_$n', $n * 1000 / bench_ms(\$\$SELECT count(token) FROM FN_fill_mask(ARRAY(SELECT body FROM bench_masked WHERE i <= $n ORDER BY i), 'tiny-mlm')\$\$);
SQL

log "backend memory"
memory="SELECT (regexp_match(s, 'Rss:\\s+(\\d+)'))[1]::int / 1024, (regexp_match(s, 'Pss:\\s+(\\d+)'))[1]::int / 1024
        FROM pg_read_file('/proc/self/smaps_rollup') AS s"
fresh=$(sql -c "$memory")
echo "a fresh backend: RSS ${fresh%|*} MB, PSS ${fresh#*|} MB" >>"$notes"
for side in ai py; do
    m=$(sql -c "SELECT count(${side}_embed('A man is eating food.', 'minilm'))" -c "$memory" | tail -n 1)
    record rss "$side" "${m%|*}"; record pss "$side" "${m#*|}"
done

# pg_ai with its encoder weights in 8 bits (pg_ai.int8_encoders), against the same PL/Python figures in f32: what a
# user gets by turning the setting on (README, Benchmarks, measures what it changes in the answers).
log "encoders in int8: first call, warm single rows, throughput, memory"
int8_encoders="SET pg_ai.int8_encoders = on"
best_ai=999999
for _ in $(seq "$first_tries"); do
    t=$(now_ms); sql -c "$int8_encoders" -c "SELECT ai_embed('A man is eating food.', 'minilm') IS NOT NULL" >/dev/null
    f=$(($(now_ms) - t)); ((f < best_ai)) && best_ai=$f
done
record first_int8 ai "$best_ai"
{
    echo "$int8_encoders;"
    echo "SELECT count(ai_embed('warm up', 'minilm'));"
    echo "SELECT count(*) FROM ai_fill_mask('the man went to the [MASK] .', 'bert-base');"
    echo "SELECT 'warm_embed_int8', bench_ms(\$\$SELECT count(ai_embed('A man is eating food number ' || i, 'minilm')) FROM generate_series(1, $warm_n) i\$\$) / $warm_n;"
    echo "SELECT 'warm_fill_base_int8', bench_ms(\$\$SELECT count(t) FROM (SELECT ai_fill_mask('the man went to the [MASK] number ' || i || ' .', 'bert-base') AS t FROM generate_series(1, $warm_base_n) i) s\$\$) / $warm_base_n;"
    for n in $rows_list; do
        echo "SELECT 'rows_embed_${n}_int8', $n * 1000 / bench_ms(\$\$SELECT count(ai_embed(body, 'minilm')) FROM bench_texts WHERE i <= $n\$\$);"
        echo "SELECT 'array_embed_${n}_int8', $n * 1000 / bench_ms(\$\$SELECT count(embedding) FROM ai_embed(ARRAY(SELECT body FROM bench_texts WHERE i <= $n ORDER BY i), 'minilm')\$\$);"
    done
} | sql | while IFS='|' read -r key value; do [ -n "$value" ] && record "$key" ai "$value"; done
m=$(sql -c "$int8_encoders" -c "SELECT count(ai_embed('A man is eating food.', 'minilm'))" -c "$memory" | tail -n 1)
record rss_int8 ai "${m%|*}"; record pss_int8 ai "${m#*|}"
for key in first warm_embed warm_fill_base rss pss $(for n in $rows_list; do echo "rows_embed_$n array_embed_$n"; done); do
    record "${key}_int8" py "$(value "$key" py)"
done

prompt="PostgreSQL is a powerful, open source object-relational database system with over 35 years of active development that has earned it a strong reputation for reliability, feature robustness, and performance."
for model in gpt2-124m smollm2-135m; do
    log "greedy generation, $model: $gen_tokens new tokens, $gen_calls calls after one warm-up"
    both <<SQL
SELECT 'text_$model', md5(FN_generate('$prompt', '$model', $gen_tokens));
SELECT 'gen_$model', $gen_calls * $gen_tokens * 1000 / bench_ms(\$\$SELECT count(FN_generate('$prompt', '$model', $gen_tokens)) FROM generate_series(1, $gen_calls)\$\$);
SQL
done
# pg_ai with its weights in 8 bits (pg_ai.int8_decoders), against the same PL/Python figure: what a user gets by
# turning the setting on (README, Benchmarks, measures what it changes in the answers).
for model in gpt2-124m smollm2-135m; do
    log "greedy generation, $model in int8: $gen_tokens new tokens, $gen_calls calls after one warm-up"
    sql <<SQL | while IFS='|' read -r key value; do [ -n "$value" ] && record "$key" ai "$value"; done
SET pg_ai.int8_decoders = on;
SELECT 'text_int8_$model', md5(ai_generate('$prompt', '$model', $gen_tokens));
SELECT 'gen_int8_$model', $gen_calls * $gen_tokens * 1000 / bench_ms(\$\$SELECT count(ai_generate('$prompt', '$model', $gen_tokens)) FROM generate_series(1, $gen_calls)\$\$);
SQL
    record "gen_int8_$model" py "$(value "gen_$model" py)"
done
log "training from a table: mlm and clm, 100 steps each, on the fortunes"
fortunes=$(mktemp)
chmod 644 "$fortunes"
if [ -d /usr/share/games/fortunes ]; then
    # Entries end at a line holding "%"; whitespace collapsed, as engine/benches/train.rs reads them.
    find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.*' -print0 | sort -z |
        xargs -0 awk 'BEGIN { RS = "\n%\n" } { gsub(/[ \t\n\r]+/, " "); sub(/^ /, ""); sub(/ $/, "");
             if ($0 != "") { gsub(/"/, "\"\""); print "\"" $0 "\"" } }' >"$fortunes"
else
    awk '{ gsub(/"/, "\"\""); print "\"" $0 "\"" }' tests/fixtures/train/sentences.txt >"$fortunes"
fi
sql -c "CREATE TABLE bench_fortunes (body text)" -c "\\copy bench_fortunes FROM '$fortunes' WITH (FORMAT csv)"
rm -f "$fortunes"
train_options='{"max_steps": 100, "batch_size": 16, "max_length": 128, "hidden_size": 128, "layers": 2, "heads": 4,
                "intermediate_size": 512, "vocab_size": 2000, "test_size": 0.01, "dropout": 0.1}'
for objective in mlm clm; do
    sql -c "SET client_min_messages = warning" \
        -c "SELECT ai_pretrain('bench-$objective', 'SELECT body AS text FROM bench_fortunes', '$objective', '$train_options')" >/dev/null
    record "train_$objective" ai "$(sql -c "SELECT (training->'metrics'->>'tokens_per_second')::float FROM ai.models WHERE name = 'bench-$objective'")"
    record "train_$objective" py "$(sql -c "SELECT py_pretrain('bench-$objective', '$objective', 'SELECT body AS text FROM bench_fortunes')")"
done
echo "training: $(sql -c 'SELECT count(*) FROM bench_fortunes') rows; pg_ai's ai_pretrain (its figure includes the held-out evaluations at start and end) and PL/Python training a fresh copy of the same configuration with the same tokenizer, as benches/train_torch.py does" >>"$notes"

prompt_tokens=$(PYTHONPATH=$site /usr/bin/python3 -c "import sys; from tokenizers import Tokenizer
print(len(Tokenizer.from_file(sys.argv[1]).encode(sys.argv[2]).ids))" "$repo/.models/bench/smollm2-135m/tokenizer.json" "$prompt" 2>/dev/null || echo '?')
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- the table
same_text() { [ "$(value "text_$1" ai)" = "$(value "text_$1" py)" ] && echo "the same text" || echo "DIFFERENT texts"; }
# row LABEL KEY UNIT lower|higher: the ratio is always pg_ai's advantage, > 1 means pg_ai is better
row() {
    local a p
    a=$(value "$2" ai); p=$(value "$2" py)
    awk -v l="$1" -v a="$a" -v p="$p" -v u="$3" -v d="$4" 'BEGIN {
        r = (a > 0 && p > 0) ? (d == "lower" ? p / a : a / p) : 0
        fmt = (a < 10 || p < 10) ? "%.2f" : "%.0f"
        printf "| %-58s | %12s | %12s | %6.2fx |\n", l, sprintf(fmt " %s", a, u), sprintf(fmt " %s", p, u), r }'
}

echo
echo "pg_ai vs PL/Python (transformers / sentence-transformers / PyTorch) in the same PostgreSQL, one run"
echo "command: $command_line"
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GB;" \
     "load average before $load_before, after $load_after"
echo "PostgreSQL $(sql -c 'SHOW server_version'), pg_ai $(git rev-parse --short HEAD) release build," \
     "PL/Python: CPython $(PYTHONPATH=$site /usr/bin/python3 -c 'import platform; print(platform.python_version())') (server: Debian's plpython3u), $pyver"
echo "threads per backend: pg_ai.threads = $threads, torch.set_num_threads($threads); max_parallel_workers_per_gather = 0"
[ "$device" = cuda ] && echo "device: embed and fill-mask on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1) (pg_ai.device = cuda, PyTorch on cuda); generation and training on the CPU"
echo "ratio = pg_ai's advantage: PL/Python time / pg_ai time, pg_ai rate / PL/Python rate; > 1 means pg_ai is better"
echo
printf "| %-58s | %12s | %12s | %7s |\n" figure pg_ai PL/Python ratio
echo "|------------------------------------------------------------|--------------|--------------|---------|"
row "first embed in a fresh connection (connect+load+answer)" first ms lower
row "warm single embed, MiniLM (mean of $warm_n)" warm_embed ms lower
row "warm single fill-mask, tiny fixture BERT (mean of $warm_n)" warm_fill_tiny ms lower
row "warm single fill-mask, BERT-base size (mean of $warm_base_n)" warm_fill_base ms lower
for n in $rows_list; do
    row "embed MiniLM, $n rows, per-row calls in a SELECT" "rows_embed_$n" rows/s higher
    row "embed MiniLM, $n rows, array form" "array_embed_$n" rows/s higher
done
n=$(tr ' ' '\n' <<<"$rows_list" | head -n 1)
row "fill-mask tiny BERT, $n rows, per-row calls in a SELECT" "rows_fill_$n" rows/s higher
row "fill-mask tiny BERT, $n rows, array form" "array_fill_$n" rows/s higher
row "backend RSS after loading MiniLM and one embed" rss MB lower
row "backend PSS after loading MiniLM and one embed" pss MB lower
printf "| %-58s | %12s | %12s | %7s |\n" "pg_ai's encoders in int8 (pg_ai.int8_encoders), PL/Python f32:" "" "" ""
row "  first embed in a fresh connection" first_int8 ms lower
row "  warm single embed, MiniLM" warm_embed_int8 ms lower
row "  warm single fill-mask, BERT-base size" warm_fill_base_int8 ms lower
for n in $rows_list; do
    row "  embed MiniLM, $n rows, per-row calls in a SELECT" "rows_embed_${n}_int8" rows/s higher
    row "  embed MiniLM, $n rows, array form" "array_embed_${n}_int8" rows/s higher
done
row "  backend RSS after loading MiniLM and one embed" rss_int8 MB lower
row "  backend PSS after loading MiniLM and one embed" pss_int8 MB lower
row "greedy generation, GPT-2 124M size, $gen_tokens new tokens" gen_gpt2-124m tok/s higher
row "greedy generation, SmolLM2-135M size (Llama), $gen_tokens new" gen_smollm2-135m tok/s higher
row "  the same, pg_ai in int8 (pg_ai.int8_decoders), GPT-2 size" gen_int8_gpt2-124m tok/s higher
row "  the same, pg_ai in int8 (pg_ai.int8_decoders), SmolLM2 size" gen_int8_smollm2-135m tok/s higher
row "training from a table, MLM (BERT, hidden 128, 2 layers)" train_mlm tok/s higher
row "training from a table, CLM (GPT-2, hidden 128, 2 layers)" train_clm tok/s higher
echo
echo "notes:"
sed 's/^/- /' "$notes"
echo "- generation: prompt of $prompt_tokens tokens (SmolLM2 tokenizer), $gen_tokens new tokens per call, no end-of-text token" \
     "(random weights), prompt processing included; both sides generated $(same_text gpt2-124m) for GPT-2 and" \
     "$(same_text smollm2-135m) for SmolLM2"
