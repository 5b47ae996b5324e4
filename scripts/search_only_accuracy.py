"""Accuracy of search-only quantization (no reconstruction), judged by onnxruntime.

Quantizes each real model with `subsetq quantize` at W4 / W3 / W2 with SQ and uniform-MSE
(every middle layer per tensor; first / last layers 8-bit uniform) and prints one table:
top-1 on the full 10k test sets for mnist-cnn and fashion-resnet, FP32 top-1 agreement on the
20 foolbox ImageNet photos for efficientnet-lite0. Until subsetq has its own engine, an
independent runtime does the judging.

Usage: .venv/bin/python scripts/search_only_accuracy.py   (after bash scripts/fetch-assets.sh)
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from test_assets import load_image  # noqa: E402  (the checked preprocessing)

SUBSETQ = ROOT / "target" / "release" / "subsetq"
BITS = (4, 3, 2)
QUANTIZERS = ("sq", "uniform-mse")


def idx(path: Path, offset: int) -> np.ndarray:
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    return np.frombuffer(raw, np.uint8)[offset:]


def normalized(images: np.ndarray, sidecar: Path) -> np.ndarray:
    spec = json.loads(sidecar.read_text())
    mean, std = np.float32(spec["mean"][0]), np.float32(spec["std"][0])
    return ((images.astype(np.float32) * np.float32(spec["scale"]) - mean) / std).astype(np.float32)


def mnist_like(model: Path, folder: Path, images: str, labels: str):
    x = idx(folder / images, 16).reshape(-1, 1, 28, 28)
    return normalized(x, model.with_name(model.stem + ".preprocess.json")), idx(folder / labels, 8)


def photos(model: Path):
    spec = json.loads(model.with_name(model.stem + ".preprocess.json").read_text())
    files = sorted((ROOT / "assets" / "data" / "foolbox").glob("imagenet_*.jpg"))
    return np.stack([load_image(f, spec).transpose(2, 0, 1) for f in files]), None


def logits(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def main() -> None:
    if not SUBSETQ.exists():
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "subsetq-cli"], cwd=ROOT, check=True)
    models = [
        ("mnist-cnn", ROOT / "assets" / "mnist-cnn.onnx",
         lambda m: mnist_like(m, ROOT / "assets" / "data" / "mnist", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")),
        ("fashion-resnet", ROOT / "models" / "fashion-resnet.onnx",
         lambda m: mnist_like(m, ROOT / "assets" / "data" / "fashion-mnist", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")),
        ("efficientnet-lite0", ROOT / "assets" / "efficientnet-lite0.onnx", photos),
    ]
    print(f"{'model':<20} {'method':<12} " + " ".join(f"{'W' + str(b):>8}" for b in BITS) + "   (FP32)")
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, data in models:
            x, labels = data(model)
            ref = logits(model, x)
            # Top-1 against labels where there are labels, else FP32 top-1 agreement.
            score = (lambda out: (out.argmax(1) == labels).mean() * 100) if labels is not None \
                else (lambda out: (out.argmax(1) == ref.argmax(1)).mean() * 100)
            metric = "top-1 %" if labels is not None else "agree %"
            for q in QUANTIZERS:
                row = []
                for b in BITS:
                    out = Path(tmp) / f"{name}-{q}-w{b}.onnx"
                    subprocess.run([str(SUBSETQ), "quantize", str(model), "-o", str(out), "--bits", str(b),
                                    "--quantizer", q], check=True, capture_output=True)
                    row.append(score(logits(out, x)))
                print(f"{name:<20} {q:<12} " + " ".join(f"{v:8.2f}" for v in row) + f"   ({score(ref):.2f} {metric})")
    print(f"{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
