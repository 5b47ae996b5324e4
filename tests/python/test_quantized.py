"""The quantized ONNX that `subsetq quantize` writes runs in an independent runtime
(onnxruntime) and keeps the MNIST CNN's accuracy (search only, no reconstruction; the default
per-channel scales).

Measured (10k MNIST test images, FP32 99.07 %): SQ 99.05 / 98.93 / 98.99 % at W4 / W3 / W2
with per-channel scales (99.03 / 98.93 / 98.96 % per tensor). This CNN is easy to quantize, so this is a
smoke test of the written model, not a comparison of quantizers.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from test_assets import MNIST_DIR, MNIST_ONNX, ROOT, ort_session, require

SUBSETQ = ROOT / "target" / "release" / "subsetq"
# Worst SQ top-1 accepted at W4 / W3 / W2 (measured 99.05 / 98.93 / 98.99).
MIN_TOP1 = {4: 0.985, 3: 0.985, 2: 0.985}


def mnist_test_set():
    images = np.fromfile(MNIST_DIR / "t10k-images-idx3-ubyte", dtype=np.uint8)[16:]
    labels = np.fromfile(MNIST_DIR / "t10k-labels-idx1-ubyte", dtype=np.uint8)[8:]
    return images.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0, labels


def quantize(tmp_path, bits: int, quantizer: str):
    if not SUBSETQ.exists():
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "subsetq-cli"], cwd=ROOT, check=True)
    out = tmp_path / f"mnist-{quantizer}-w{bits}.onnx"
    subprocess.run(
        [str(SUBSETQ), "quantize", str(MNIST_ONNX), "-o", str(out), "--bits", str(bits), "--quantizer", quantizer],
        check=True,
        capture_output=True,
    )
    return out


@pytest.mark.parametrize("bits", [4, 3, 2])
def test_quantized_mnist_cnn_runs_in_onnxruntime_and_keeps_accuracy(tmp_path, bits):
    require(MNIST_ONNX, MNIST_DIR / "t10k-images-idx3-ubyte")
    images, labels = mnist_test_set()
    path = quantize(tmp_path, bits, "sq")
    probs = ort_session(path).run(None, {"input": images})[0]
    top1 = float((probs.argmax(1) == labels).mean())
    print(f"W{bits} SQ top-1 {top1:.4f}")
    assert top1 >= MIN_TOP1[bits]
    # The codebooks recorded in the metadata are the only magnitudes in the weights.
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    record = json.loads({p.key: p.value for p in model.metadata_props}["subsetq"])
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for layer in record["layers"]:
        assert on_codebook(weights[layer["name"]], layer), layer["name"]


def on_codebook(w: np.ndarray, layer: dict) -> bool:
    """At most 2^(bits-1) nonzero magnitudes: in the whole layer, or, with per-channel scales
    (`calpha` in the record), in each output channel."""
    k = 2 ** (layer["bits"] - 1)
    calpha = layer.get("calpha")
    if calpha is None:
        magnitudes = np.unique(np.abs(w))
        return len(magnitudes[magnitudes > 0]) <= k
    # The output-channel axis is one whose length is the number of channel scales.
    for axis in [a for a in range(w.ndim) if w.shape[a] == len(calpha)]:
        rows = np.moveaxis(np.abs(w), axis, 0).reshape(len(calpha), -1)
        if all(len(np.unique(row[row > 0])) <= k for row in rows):
            return True
    return False
