#!/usr/bin/env bash
# subsetq's block reconstruction against the same loop in PyTorch (issue 14), in one run:
# installs Debian's python3-torch and python3-onnx when /usr/bin/python3 lacks them, builds
# subsetq and runs `subsetq bench recon` (fashion-resnet and mnist-cnn, W4 SQ, the default
# schedule: 500 steps of 32 per block on 256 calibration images). Extra flags go to the bench,
# e.g. `--models fashion-resnet --iters 100 --json target/bench-recon.json`.
#
#   bash scripts/bench-recon.sh [BENCH FLAGS]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
if ! "$PY" -c 'import torch, onnx' 2>/dev/null; then
    SUDO=$([[ $(id -u) == 0 ]] || echo sudo)
    $SUDO apt-get install -y -qq --no-install-recommends python3-torch python3-onnx >/dev/null \
        || { $SUDO apt-get update -qq \
            && $SUDO apt-get install -y -qq --no-install-recommends python3-torch python3-onnx >/dev/null; }
fi
[[ -f assets/mnist-cnn.onnx ]] || bash scripts/fetch-assets.sh
cargo build --release -p subsetq-cli
exec target/release/subsetq bench recon --python "$PY" "$@"
