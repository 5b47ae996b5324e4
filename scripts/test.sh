#!/usr/bin/env bash
# The whole test suite: fetch the real assets (cheap when present), then the Rust tests
# and the Python checks of the asset conversions. Run from anywhere.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/fetch-assets.sh
cargo test --workspace --release
.venv/bin/python -m pytest tests/python -q
