#!/usr/bin/env bash
# pg_ai's trainer and PyTorch eager training the same configuration on the same rows, in one run, with ratios:
#   benches/train.sh [python]     (needs torch and transformers)
# Default python: Debian's python3 with the packages benches/side_by_side.sh installs into .pybench/site-packages
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-/usr/bin/python3}
[ -n "${1:-}" ] || export PYTHONPATH=$PWD/.pybench/site-packages${PYTHONPATH:+:$PYTHONPATH}
ours=$(cargo bench -p pg_ai_engine --bench train 2>/dev/null)
theirs=$("$python" benches/train_torch.py 2>/dev/null)
echo "== pg_ai"; echo "$ours"
echo "== PyTorch"; echo "$theirs"
echo "== pg_ai / PyTorch (tokens per second)"
paste <(echo "$ours" | awk '/^[a-z]/{m=$1} /tokens\/s/{print m, $(NF-1)}') \
      <(echo "$theirs" | awk '/^[a-z]/{m=$1} /tokens\/s/{print m, $(NF-1)}') |
    awk '$4 > 0 {printf "%s training: %.2fx\n", $1, $2 / $4}'
