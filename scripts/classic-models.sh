#!/usr/bin/env bash
# The nine classic CNNs of the onnx wheel end to end (issue 13, item 4), with seeded
# He-normal weights (scripts/classic_models.py): for each, our engine against onnxruntime on
# real photos (max abs diff of the probabilities and of the logits), then
# `subsetq quantize --calib` (4-bit SQ, a short reconstruction) with its wall time, then
# `subsetq eval --compare` of the quantized model against the float one.
#
#   bash scripts/classic-models.sh [OUT_DIR [NAME ...]]     (default OUT_DIR: target/classic)
#
# Needs the assets (scripts/fetch-assets.sh) and a release build of subsetq. Long: minutes
# per model on 2 cores (VGG-19 and AlexNet have 144M and 61M weights). The summary goes to
# OUT_DIR/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/classic}
shift || true
NAMES=("$@")
[[ ${#NAMES[@]} -gt 0 ]] || NAMES=(bvlc_alexnet densenet121 inception_v1 inception_v2 resnet50 shufflenet squeezenet vgg19 zfnet512)
PY=.venv/bin/python
BIN=target/release/subsetq
PHOTOS=assets/data/foolbox
CALIB="$PHOTOS/imagenet_*.jpg"
[[ -x $BIN ]] || cargo build --release -p subsetq-cli
mkdir -p "$OUT"
"$PY" scripts/classic_models.py make "$OUT" "${NAMES[@]}"
SUMMARY=$OUT/summary.txt
printf '%-14s %10s %10s %10s %10s %s\n' model "probs diff" "logit diff" "max logit" "quantize s" "eval --compare (quantized vs float)" > "$SUMMARY"
for name in "${NAMES[@]}"; do
    model=$OUT/$name.onnx
    case=$OUT/$name-case
    "$PY" scripts/classic_models.py reference "$model" "$PHOTOS" imagenet_ 4 "$case" 2>/dev/null
    # ONNX's tolerances; the max abs diffs are what we record (logits of random-weight nets
    # without BN can be large: their magnitude is recorded too).
    check=$("$BIN" run "$case/model.onnx" --inputs "$case" --check 2>&1 || true)
    echo "$check"
    diffs=$(grep -o 'max abs diff [0-9.e+-]*' <<< "$check" | awk '{print $4}' | tr '\n' ' ')
    top=$("$PY" -c "import onnx,numpy as np; from onnx import numpy_helper as h; print('%.3g' % np.abs(h.to_array(onnx.load_tensor('$case/output_1.pb'))).max())")
    start=$(date +%s.%N)
    "$BIN" quantize "$model" -o "$OUT/$name-w4.onnx" --bits 4 --calib "$CALIB" \
        --calib-size 20 --iters 20 --recon-batch 4 > "$OUT/$name-quantize.log"
    secs=$(echo "$(date +%s.%N) - $start" | bc)
    agree=$("$BIN" eval "$OUT/$name-w4.onnx" --data "$CALIB" --compare "$model" | tail -1)
    echo "$name: quantize ${secs} s; $agree"
    printf '%-14s %10s %10s %10s %10.1f %s\n' "$name" $diffs "$top" "$secs" "$agree" >> "$SUMMARY"
done
cat "$SUMMARY"
