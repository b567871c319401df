#!/usr/bin/env bash
# pg_ai's engine and transformers generating on the same fixtures, in one run, with the ratios:
#   benches/generate.sh [python]     (default /work/pyenv/bin/python; needs torch and transformers)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-/work/pyenv/bin/python}
ours=$(cargo bench --bench generate 2>/dev/null)
theirs=$("$python" benches/generate_transformers.py 2>/dev/null)
echo "== pg_ai"; echo "$ours"
echo "== transformers"; echo "$theirs"
echo "== pg_ai / transformers (tokens per second)"
# Pair the lines by model heading and measure name, and divide the tokens/s figures.
paste <(echo "$ours" | awk '/^[^ ]/{m=$0} /tokens\/s/{print m " " $1 " " $(NF-1)}') \
      <(echo "$theirs" | awk '/^[^ ]/{m=$0} /tokens\/s/{print m " " $1 " " $(NF-1)}') |
    awk -F'\t' '{split($1,a," "); split($2,b," "); o=a[length(a)]; t=b[length(b)];
                 sub(/ [0-9.]+$/,"",$1); if (t > 0) printf "%s %.2fx\n", $1, o / t}'
