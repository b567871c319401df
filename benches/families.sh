#!/usr/bin/env bash
# Sequence classification with BERT-base-size BERT, MPNet, DeBERTa-v3 and ModernBERT models, pg_ai (engine,
# release) against transformers (PyTorch eager) on the same random weights and rows, in one sitting:
#
#   benches/families.sh      # needs torch and transformers for python3 (PYTHON to name another), and
#                            # scripts/fetch-minilm.sh's MiniLM (its vocabulary serves every model)
#
# THREADS (default nproc) sets both sides' threads. The models (about 1.7 GB) are made once in
# .models/bench-families by benches/families.py.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
threads=${THREADS:-$(nproc)}
out=$PWD/.models/bench-families
minilm=.models/all-MiniLM-L6-v2
[ -f "$minilm/tokenizer.json" ] || { echo "run scripts/fetch-minilm.sh first" >&2; exit 1; }
mkdir -p "$out"
"$python" benches/families.py make "$out" "$minilm"
dirs=("$out/bert-base" "$out/mpnet-base" "$out/deberta-v3-base" "$out/modernbert-base")
echo "== $(nproc) cores, $threads threads each side: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$python" benches/families.py time "$threads" "${dirs[@]}"
PG_AI_THREADS=$threads cargo bench -q -p pg_ai_engine --bench families -- "${dirs[@]}"
