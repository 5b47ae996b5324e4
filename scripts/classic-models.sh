#!/usr/bin/env bash
# The nine classic CNNs of the onnx wheel end to end (issue 13, item 4), with seeded
# He-normal weights (scripts/classic_models.py): for each, our engine against onnxruntime on
# real photos (max abs diff of the output, the probabilities, and of the logits; ≤ 1e-4 for
# the output), then
# `subsetq quantize --calib` (4-bit SQ, a short reconstruction) with its wall time, then
# `subsetq eval --compare` of the quantized model against the float one.
#
#   bash scripts/classic-models.sh [OUT_DIR [NAME ...]]     (default OUT_DIR: target/classic)
#
# Schedule (environment): CALIB_SIZE (calibration photos, default 20), ITERS (Adam steps per
# block, default 20), RECON_BATCH (photos per step, default 4), PHOTOS (photos compared with
# onnxruntime, default 4).
#
# Needs the assets (scripts/fetch-assets.sh) and a release build of subsetq. Long: minutes
# per model on 2 cores (VGG-19 and AlexNet have 144M and 61M weights). The summary goes to
# OUT_DIR/summary.txt; a model that fails is marked FAILED there (its log beside it) and the
# script goes on with the next, exiting 1 at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/classic}
shift || true
NAMES=("$@")
[[ ${#NAMES[@]} -gt 0 ]] || NAMES=(bvlc_alexnet densenet121 inception_v1 inception_v2 resnet50 shufflenet squeezenet vgg19 zfnet512)
CALIB_SIZE=${CALIB_SIZE:-20}
ITERS=${ITERS:-20}
RECON_BATCH=${RECON_BATCH:-4}
NPHOTOS=${PHOTOS:-4}
PY=.venv/bin/python
BIN=target/release/subsetq
PHOTO_DIR=assets/data/foolbox
CALIB="$PHOTO_DIR/imagenet_*.jpg"
# The engine-vs-onnxruntime bound of the issue (probabilities).
BOUND=1e-4
[[ -x $PY ]] || { echo "no $PY: run scripts/fetch-assets.sh" >&2; exit 2; }
[[ -d $PHOTO_DIR ]] || { echo "no $PHOTO_DIR: run scripts/fetch-assets.sh" >&2; exit 2; }
[[ -x $BIN ]] || cargo build --release -p subsetq-cli || exit 2
mkdir -p "$OUT"
"$PY" scripts/classic_models.py make "$OUT" "$PHOTO_DIR" "${NAMES[@]}" || exit 2
SUMMARY=$OUT/summary.txt
{
    echo "schedule: --bits 4 --calib-size $CALIB_SIZE --iters $ITERS --recon-batch $RECON_BATCH; $NPHOTOS photos against onnxruntime"
    printf '%-13s %-10s %-10s %-9s %-10s %s\n' model "out diff" "logit diff" "max logit" "quantize s" "eval --compare (quantized vs float, $CALIB_SIZE photos)"
} > "$SUMMARY"
failed=0
for name in "${NAMES[@]}"; do
    model=$OUT/$name.onnx
    case=$OUT/$name-case
    log=$OUT/$name.log
    fail() {
        echo "$name: FAILED ($1), see $log" >&2
        printf '%-13s FAILED (%s)\n' "$name" "$1" >> "$SUMMARY"
        failed=1
    }
    if ! "$PY" scripts/classic_models.py reference "$model" "$PHOTO_DIR" imagenet_ "$NPHOTOS" "$case" > "$log" 2>&1; then
        fail "onnxruntime reference"; continue
    fi
    # At ONNX's tolerances (rtol 1e-3, atol 1e-7; its pass / fail is logged); the max abs
    # diffs are what we record, with the largest |logit| for scale.
    check=$("$BIN" run "$case/model.onnx" --inputs "$case" --check 2>&1)
    check_rc=$?
    echo "$check" | tee -a "$log"
    mapfile -t diffs < <(grep -o 'max abs diff [0-9.e+-]*' <<< "$check" | awk '{print $4}')
    # Two outputs (probabilities, logits), or one where the model has no Softmax (DenseNet:
    # its output is the logits).
    case ${#diffs[@]} in
        2) ;;
        1) diffs=("${diffs[0]}" "${diffs[0]}") ;;
        *) fail "subsetq run: exit $check_rc"; continue ;;
    esac
    last=$(ls "$case"/output_*.pb | sort | tail -1)
    top=$("$PY" -c "import onnx,numpy as np; from onnx import numpy_helper as h; print('%.3g' % np.abs(h.to_array(onnx.load_tensor('$last'))).max())")
    within=$(awk -v d="${diffs[0]}" -v b="$BOUND" 'BEGIN { print (d <= b) ? "yes" : "no" }')
    start=$(date +%s.%N)
    if ! "$BIN" quantize "$model" -o "$OUT/$name-w4.onnx" --bits 4 --calib "$CALIB" \
        --calib-size "$CALIB_SIZE" --iters "$ITERS" --recon-batch "$RECON_BATCH" >> "$log" 2>&1; then
        fail "quantize"; continue
    fi
    secs=$(echo "$(date +%s.%N) - $start" | bc)
    if ! agree=$("$BIN" eval "$OUT/$name-w4.onnx" --data "$CALIB" --limit "$CALIB_SIZE" \
        --compare "$model" 2>> "$log" | tee -a "$log" | tail -1); then
        fail "eval --compare"; continue
    fi
    agree=${agree#other vs model: }
    echo "$name: output diff ${diffs[0]} (<= $BOUND: $within), quantize ${secs} s; $agree"
    printf '%-13s %-10s %-10s %-9s %-10.1f %s\n' "$name" "${diffs[0]}" "${diffs[1]}" "$top" "$secs" "$agree" >> "$SUMMARY"
    [[ $within == yes ]] || { echo "$name: outputs differ by more than $BOUND" >&2; failed=1; }
done
cat "$SUMMARY"
exit $failed
