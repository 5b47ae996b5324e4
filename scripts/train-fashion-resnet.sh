#!/usr/bin/env bash
# Retrain models/fashion-resnet.onnx (+ .preprocess.json, .md) from the Fashion-MNIST training
# split with the recorded settings. Needs assets/data/fashion-mnist (scripts/fetch-assets.sh).
#
# Usage: scripts/train-fashion-resnet.sh [extra args for train_fashion_resnet.py]
# The Python environment is .venv-train (git-ignored), made from scripts/train-requirements.txt
# and remade when that file changes. Training takes ~15-20 min on 2 busy CPU cores.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV=.venv-train
REQS=scripts/train-requirements.txt
REQ_HASH=$(sha256sum "$REQS" | cut -d' ' -f1)
STAMP=$VENV/.requirements.sha256
if [[ ! -x $VENV/bin/python || ! -f $STAMP || $(cat "$STAMP") != "$REQ_HASH" ]]; then
    echo "[train-fashion-resnet] installing $VENV from $REQS"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS"
    echo "$REQ_HASH" > "$STAMP"
fi

for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
    if [[ ! -f assets/data/fashion-mnist/$f ]]; then
        echo "error: assets/data/fashion-mnist/$f missing: run scripts/fetch-assets.sh" >&2
        exit 2
    fi
done

exec "$VENV/bin/python" scripts/train_fashion_resnet.py --seed 0 --epochs 8 --out models/fashion-resnet.onnx "$@"
