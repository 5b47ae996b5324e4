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
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for layer in record["layers"]:
        # Compact form: b-bit codes (UINT4 at <= 4 bits), a 2^b-entry table, channel scales.
        name, bits = layer["name"], layer["bits"]
        assert name not in init, f"{name} is stored as floats"
        codes, table, scales = (init[f"{name}.{part}"] for part in ("codes", "table", "scales"))
        assert str(codes.dtype) == ("uint4" if bits <= 4 else "uint8"), (name, codes.dtype)
        codes = codes.astype(np.int64)
        assert int(codes.max()) < 2**bits, name
        assert len(table) == 2**bits, name
        assert np.array_equal(table[: 2 ** (bits - 1)], -table[2 ** (bits - 1) :]), name
        w = table[codes].reshape(init[f"{name}.shape"]) * scales
        assert on_codebook(w, scales, bits), name


def on_codebook(w: np.ndarray, scales: np.ndarray, bits: int) -> bool:
    """At most 2^(bits-1) nonzero magnitudes in each output channel (the axis of the scales)."""
    k = 2 ** (bits - 1)
    axis = int(np.argmax(scales.shape))
    rows = np.moveaxis(np.abs(w), axis, 0).reshape(w.shape[axis], -1)
    return all(len(np.unique(row[row > 0])) <= k for row in rows)
