#!/usr/bin/env bash
# The whole test suite: fetch the real assets (cheap when present), then the Rust tests
# and the Python checks of the asset conversions. Run from anywhere.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/fetch-assets.sh
cargo test --workspace --release
.venv/bin/python -m pytest tests/python -q

# The Python package (python/: PyO3 + maturin) into .venv, built from the release build above
# in target/: only PyO3 and the extension crate compile, burn is reused (python/Cargo.toml
# says how). Then its tests, against target/release/subsetq.
WHEEL_LOG=target/python-wheel-build.log
if ! PATH="$PWD/.venv/bin:$PATH" .venv/bin/pip install -v --disable-pip-version-check \
    --no-build-isolation ./python >"$WHEEL_LOG" 2>&1; then
    tail -n 60 "$WHEEL_LOG"
    echo "error: building the Python package failed (full log: $WHEEL_LOG)" >&2
    exit 1
fi
{ grep -E '^ *(Compiling subsetq-python|Finished)' "$WHEEL_LOG" || true; } | sed 's/^ */[python wheel] /'
if grep -q 'Compiling burn' "$WHEEL_LOG"; then
    echo "warning: the wheel build compiled burn a second time: a dependency's features differ" \
        "from cargo test's; see the note in python/Cargo.toml ($WHEEL_LOG)" >&2
fi
.venv/bin/python -m pytest tests/python_api -q
