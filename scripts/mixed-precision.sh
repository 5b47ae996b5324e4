#!/usr/bin/env bash
# Mixed precision against uniform bit-widths at the same size of codes (issue 12 item 4): for
# each W, `subsetq quantize` at uniform W bits (every middle layer), then with --size-budget set
# to that model's bytes of codes (each middle layer's bits from {2, 3, 4, 8}), both with
# reconstruction on the same calibration images, then `subsetq eval --compare` against the FP32
# model. (At W2 the budget leaves no choice: 2 bits is the narrowest.)
#
#   bash scripts/mixed-precision.sh fashion-resnet|efficientnet-lite0 [BITS...] [-- QUANTIZE FLAGS]
#
# fashion-resnet: calibration on the first 256 training images, scored on the 10k test images.
# efficientnet-lite0: calibration on the 20 foolbox ImageNet photos, scored on the same photos
# (there is no other ImageNet data here: the agreement is optimistic for both rows alike).
# Prints one row per (budget, method): mean middle-layer bits, bytes of codes, top-1 and top-1
# agreement with FP32. Outputs go to target/mixed/.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: mixed-precision.sh MODEL [BITS...] [-- FLAGS]}
shift
BITS=()
while [[ $# -gt 0 && $1 != -- ]]; do BITS+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
EXTRA=("$@")
[[ ${#BITS[@]} -gt 0 ]] || BITS=(3 4)
BIN=target/release/subsetq
[[ -x $BIN ]] || cargo build --release -p subsetq-cli
case $MODEL in
fashion-resnet)
    FP32=models/fashion-resnet.onnx
    CALIB=assets/data/fashion-mnist/train-images-idx3-ubyte.gz
    TEST=assets/data/fashion-mnist/t10k-images-idx3-ubyte.gz ;;
efficientnet-lite0)
    FP32=assets/efficientnet-lite0.onnx
    CALIB='assets/data/foolbox/imagenet_*.jpg'
    TEST=$CALIB ;;
*) echo "error: unknown model $MODEL (fashion-resnet, efficientnet-lite0)" >&2; exit 2 ;;
esac
OUT=target/mixed/$MODEL
mkdir -p "$OUT"
printf '%-8s %-10s %10s %12s %8s %10s %8s\n' budget method "mean bits" "code bytes" top-1 agreement "s" | tee "$OUT/summary.txt"
for b in "${BITS[@]}"; do
    for method in uniform mixed; do
        name=$OUT/w$b-$method
        if [[ $method == uniform ]]; then
            flags=(--bits "$b")
        else
            # The same bytes of codes as the uniform model just written.
            flags=(--size-budget "$(.venv/bin/python -c "
import json, math, onnx, sys
meta = {p.key: p.value for p in onnx.load(sys.argv[1]).metadata_props}
print(sum(l['bits'] * math.prod(l['shape']) for l in json.loads(meta['subsetq'])['layers']) // 8)
" "$OUT/w$b-uniform.onnx")")
        fi
        start=$(date +%s.%N)
        "$BIN" quantize "$FP32" -o "$name.onnx" "${flags[@]}" --calib "$CALIB" "${EXTRA[@]}" > "$name.log"
        secs=$(echo "$(date +%s.%N) - $start" | bc)
        "$BIN" eval "$name.onnx" --data "$TEST" --compare "$FP32" --json "$name.eval.json" > /dev/null
        .venv/bin/python - "$name" "$b" "$method" "$secs" <<'PY' | tee -a "$OUT/summary.txt"
import json, math, sys
import onnx
name, budget, method, secs = sys.argv[1:]
ev = json.load(open(name + ".eval.json"))
meta = {p.key: p.value for p in onnx.load(name + ".onnx").metadata_props}
rec = json.loads(meta["subsetq"])
codes = sum(l["bits"] * math.prod(l["shape"]) for l in rec["layers"]) / 8
mean = rec["mixed"]["avg_bits"] if rec.get("mixed") else float(budget)
print(f"W{budget:<7} {method:<10} {mean:10.3f} {codes:12.0f} {ev['top1']:8.2f} "
      f"{ev['agreement_top1']:10.2f} {float(secs):8.1f}")
PY
    done
done
