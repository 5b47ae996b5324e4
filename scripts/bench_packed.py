"""End-to-end images per second of compact W4A8 models on the packed kernels, in one run,
against our float engine on the same model and onnxruntime on the FP32 model.

  .venv/bin/python scripts/bench_packed.py [--iters N] [--json OUT]

For fashion-resnet and mnist-cnn: quantize W4 with 8-bit activations (reconstruction on the
training images), then score the 10k test images four ways, batch 100: `subsetq eval
--kernels packed`, `subsetq eval --kernels float`, onnxruntime on the compact model and on the
FP32 model (2 threads each, graph optimisations on, as a user would run it). Prints top-1 and
images per second of each, and the ratios to onnxruntime FP32.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))
from ort_reference import read_idx  # noqa: E402

SUBSETQ = ROOT / "target" / "release" / "subsetq"
MODELS = [
    # name, FP32 model, calibration images, test images, test labels
    (
        "fashion-resnet",
        ROOT / "models/fashion-resnet.onnx",
        ROOT / "assets/data/fashion-mnist/train-images-idx3-ubyte.gz",
        ROOT / "assets/data/fashion-mnist/t10k-images-idx3-ubyte.gz",
        ROOT / "assets/data/fashion-mnist/t10k-labels-idx1-ubyte.gz",
    ),
    (
        "mnist-cnn",
        ROOT / "assets/mnist-cnn.onnx",
        ROOT / "assets/data/mnist/train-images-idx3-ubyte",
        ROOT / "assets/data/mnist/t10k-images-idx3-ubyte",
        ROOT / "assets/data/mnist/t10k-labels-idx1-ubyte",
    ),
]
BATCH = 100


def subsetq(*args):
    return subprocess.run([str(SUBSETQ), *map(str, args)], check=True, capture_output=True, text=True)


def ort_top1(model, x, labels):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    s = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    s.run(None, {name: x[:BATCH]})  # warm-up
    started = time.perf_counter()
    top1 = np.concatenate(
        [s.run(None, {name: x[i : i + BATCH]})[0].argmax(1) for i in range(0, len(x), BATCH)]
    )
    seconds = time.perf_counter() - started
    return 100.0 * (top1 == labels).mean(), len(x) / seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=100, help="reconstruction steps per block")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, fp32, calib, test, labels_path in MODELS:
            q = Path(tmp) / f"{name}-w4a8.onnx"
            subsetq("quantize", fp32, "-o", q, "--bits", 4, "--abits", 8, "--calib", calib,
                    "--iters", args.iters)
            pre = json.loads(Path(f"{fp32.with_suffix('')}.preprocess.json").read_text())
            images = read_idx(test).astype(np.float32)
            x = ((images * pre["scale"] - pre["mean"][0]) / pre["std"][0])[:, None]
            labels = read_idx(labels_path)
            row = {"model": name}
            for kernels in ["packed", "float"]:
                out = Path(tmp) / f"{name}-{kernels}.json"
                subsetq("eval", q, "--data", test, "--kernels", kernels, "--batch", BATCH,
                        "--json", out)
                doc = json.loads(out.read_text())
                row[f"subsetq_{kernels}"] = {"top1": doc["top1"], "images_per_second": doc["images_per_second"]}
            for label, model in [("ort_compact", q), ("ort_fp32", fp32)]:
                top1, ips = ort_top1(model, x, labels)
                row[label] = {"top1": top1, "images_per_second": ips}
            rows.append(row)
            base = row["ort_fp32"]["images_per_second"]
            print(f"{name} (W4A8, 10k test images, batch {BATCH}, 2 threads)")
            for k in ["subsetq_packed", "subsetq_float", "ort_compact", "ort_fp32"]:
                r = row[k]
                print(f"  {k:<15} top-1 {r['top1']:6.2f} %  {r['images_per_second']:8.0f} images/s"
                      f"  ({r['images_per_second'] / base:.2f}× onnxruntime FP32)")
    if args.json:
        args.json.write_text(json.dumps({"batch": BATCH, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
