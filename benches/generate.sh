#!/usr/bin/env bash
# pg_ai's engine and transformers generating on the same fixtures, in one run, with the ratios:
#   benches/generate.sh [python]     (needs torch, transformers, gguf, accelerate)
# Default python: Debian's python3 with the packages benches/side_by_side.sh installs into .pybench/site-packages
# (plus accelerate and psutil: pip install --target .pybench/site-packages --no-deps accelerate psutil)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-/usr/bin/python3}
[ -n "${1:-}" ] || export PYTHONPATH=$PWD/.pybench/site-packages${PYTHONPATH:+:$PYTHONPATH}
ours=$(cargo bench -p pg_ai_engine --bench generate 2>/dev/null)
theirs=$("$python" benches/generate_transformers.py 2>/dev/null)
echo "== pg_ai"; echo "$ours"
echo "== transformers"; echo "$theirs"
echo "== pg_ai / transformers (tokens per second)"
# Pair the figures by model heading and measure name (models only one side runs are left out), and divide.
figures() { awk '/^[^ ]/{m=$0} /tokens\/s/{for (i = 2; i <= NF; i++) if ($i ~ /^tokens\/s[,;]?$/) v = $(i-1); print m " " $1 "\t" v}' | sort; }
join -t $'\t' <(echo "$ours" | figures) <(echo "$theirs" | figures) |
    awk -F'\t' '$3 > 0 {printf "%s %.2fx\n", $1, $2 / $3}'
# pg_ai's int8 figures against transformers' f32 ones (transformers runs the f32 weights as stored).
join -t $'\t' <(echo "$ours" | figures | grep ', int8 ' | sed 's/, int8 /, f32 /') <(echo "$theirs" | figures) |
    awk -F'\t' '$3 > 0 {sub(/, f32 /, ", pg_ai int8 vs f32 ", $1); printf "%s %.2fx\n", $1, $2 / $3}'
