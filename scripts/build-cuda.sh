#!/usr/bin/env bash
# Builds pg_ai with `--features cuda` on a machine without a CUDA toolkit or driver, from NVIDIA's PyPI wheels:
#   scripts/build-cuda.sh [cargo arguments]      (default: build --lib --features cuda)
# Environment: CUDA_PREFIX (default ~/.cache/pg_ai-cuda13; about 1.2 GB), CUDA_COMPUTE_CAP (default 90: H100/H200).
#
# Why this way: the only complete nvcc on PyPI is CUDA 13's (the -cu12 nvcc wheels hold ptxas but no nvcc). The
# wheels unpack into one tree, nvidia/cu13/{bin,include,lib,nvvm}; candle's build wants a CUDA root with lib64 and
# unversioned library names, and links the driver (cudarc's dynamic-linking), which is not on PyPI: a stub
# libcuda.so with cuda.h's functions stands in at link time. The library built needs, where it runs, an NVIDIA
# driver >= 580 (CUDA 13) and libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10 on the loader
# path (LD_LIBRARY_PATH=$CUDA_PREFIX/root/lib64 serves); it does not load at all without them, so it is a separate
# build, never the default one. A cold build takes about 30 minutes on 2 cores.
set -euo pipefail
prefix=${CUDA_PREFIX:-$HOME/.cache/pg_ai-cuda13}
venv=$prefix/venv
root=$prefix/root
nvcc_version=13.0.88

[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
# nvcc (nvcc, cudafe++, fatbinary), cicc (nvvm), crt and runtime headers, cub/thrust (cccl), and the libraries
# candle links: nvrtc, cublas, curand.
"$venv/bin/pip" install -q --disable-pip-version-check \
    nvidia-cuda-nvcc==$nvcc_version nvidia-nvvm==$nvcc_version nvidia-cuda-crt==$nvcc_version \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==$nvcc_version \
    nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
cu=$("$venv/bin/python" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
[ -x "$cu/bin/nvcc" ] && [ -x "$cu/nvvm/bin/cicc" ] || { echo "nvcc or cicc missing under $cu" >&2; exit 1; }

mkdir -p "$root/lib64/stubs"
for d in bin include nvvm; do ln -sfn "$cu/$d" "$root/$d"; done
ln -sfn lib64 "$root/lib"
for so in "$cu"/lib/*.so.*; do
    base=$(basename "$so")
    ln -sfn "$so" "$root/lib64/$base"
    case "$base" in *builtins* | *.alt.*) continue ;; esac
    ln -sfn "$so" "$root/lib64/${base%%.so.*}.so" # libcublas.so -> libcublas.so.13, for -lcublas
done
# The stub driver: every cu* function cuda.h declares (after its _v2 renaming), soname libcuda.so.1, so that the
# library built asks for the real driver when it loads.
if [ ! -f "$root/lib64/stubs/libcuda.so" ]; then
    gcc -E -P -x c "$cu/include/cuda.h" |
        grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' (' | sort -u |
        sed 's/.*/void &(void) {}/' >"$root/lib64/stubs/libcuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib64/stubs/libcuda.so" "$root/lib64/stubs/libcuda_stub.c"
fi

export CUDA_ROOT=$root CUDA_HOME=$root CUDA_PATH=$root CUDA_TOOLKIT_ROOT_DIR=$root
export PATH=$root/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDARC_CUDA_VERSION=13000
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- build --lib --features cuda
exec cargo "$@"
