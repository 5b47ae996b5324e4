"""Convert the mnist-react-tfjs Keras CNN (TF.js model.json + shards) to ONNX.

Usage: convert_mnist_cnn.py TFJS_DIR OUT.onnx
Writes OUT.onnx and OUT.preprocess.json (sidecar schema: see onnx_helpers.py):

    {"layout": "NCHW", "color": "GRAY", "channels": 1, "size": [28, 28],
     "resize": null, "crop": null, "scale": 1/255, "mean": [0], "std": [1],
     "output": "probs", ...}

The Keras 2.0.4 model is
    Conv2D 32 3x3 relu (valid) -> Conv2D 64 3x3 relu -> MaxPool 2x2 -> Dropout
    -> Flatten -> Dense 128 relu -> Dropout -> Dense 10 softmax
on NHWC input. The ONNX graph is the same in NCHW:
    Conv+Relu, Conv+Relu, MaxPool, Flatten, Gemm+Relu, Gemm, Softmax
Dropout is the identity at inference and is dropped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import onnx_helpers as oh  # noqa: E402

EXPECTED_LAYERS = [
    "Conv2D", "Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense", "Dropout", "Dense",
]


def load_tfjs_weights(tfjs_dir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read model.json and its binary shards; returns (topology, name -> array)."""
    manifest = json.loads((tfjs_dir / "model.json").read_text())
    weights: dict[str, np.ndarray] = {}
    for group in manifest["weightsManifest"]:
        # A group's shards are one byte stream cut into files; weights are packed in order.
        blob = b"".join((tfjs_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            if w["dtype"] != "float32":
                raise ValueError(f"{w['name']}: dtype {w['dtype']} not handled")
            count = int(np.prod(w["shape"]))
            weights[w["name"]] = np.frombuffer(blob, "<f4", count, offset).reshape(w["shape"])
            offset += 4 * count
        if offset != len(blob):
            raise ValueError(f"group {group['paths']}: {len(blob) - offset} unused bytes")
    return manifest["modelTopology"], weights


def build(topology: dict, w: dict[str, np.ndarray]):
    layers = topology["model_config"]["config"]
    classes = [layer["class_name"] for layer in layers]
    if classes != EXPECTED_LAYERS:
        raise ValueError(f"unexpected Keras layers {classes}")
    for layer in layers:
        cfg = layer["config"]
        if layer["class_name"] == "Conv2D":
            assert cfg["padding"] == "valid" and cfg["strides"] == [1, 1], cfg["name"]
            assert cfg["data_format"] == "channels_last", cfg["name"]

    # Keras conv kernels are HWIO; ONNX wants OIHW.
    conv1_w = w["conv2d_1/kernel"].transpose(3, 2, 0, 1)
    conv2_w = w["conv2d_2/kernel"].transpose(3, 2, 0, 1)

    # Keras flattens the [12, 12, 64] map in H, W, C order; ONNX Flatten of the NCHW
    # map gives C, H, W order. Re-order the first Dense kernel's rows to match,
    # then store it as [out, in] for Gemm(transB=1).
    k1 = w["dense_1/kernel"]
    h = wd = 12
    c = conv2_w.shape[0]
    assert k1.shape[0] == h * wd * c, k1.shape
    fc1_w = k1.reshape(h, wd, c, -1).transpose(2, 0, 1, 3).reshape(h * wd * c, -1).T
    fc2_w = w["dense_2/kernel"].T

    inits = [
        oh.initializer("conv1.weight", conv1_w),
        oh.initializer("conv1.bias", w["conv2d_1/bias"]),
        oh.initializer("conv2.weight", conv2_w),
        oh.initializer("conv2.bias", w["conv2d_2/bias"]),
        oh.initializer("fc1.weight", fc1_w),
        oh.initializer("fc1.bias", w["dense_1/bias"]),
        oh.initializer("fc2.weight", fc2_w),
        oh.initializer("fc2.bias", w["dense_2/bias"]),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["input", "conv1.weight", "conv1.bias"], ["conv1"], name="conv1",
          kernel_shape=[3, 3], pads=[0, 0, 0, 0], strides=[1, 1]),
        n("Relu", ["conv1"], ["conv1.relu"], name="conv1.relu"),
        n("Conv", ["conv1.relu", "conv2.weight", "conv2.bias"], ["conv2"], name="conv2",
          kernel_shape=[3, 3], pads=[0, 0, 0, 0], strides=[1, 1]),
        n("Relu", ["conv2"], ["conv2.relu"], name="conv2.relu"),
        n("MaxPool", ["conv2.relu"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        n("Flatten", ["pool"], ["flatten"], name="flatten", axis=1),
        n("Gemm", ["flatten", "fc1.weight", "fc1.bias"], ["fc1"], name="fc1", transB=1),
        n("Relu", ["fc1"], ["fc1.relu"], name="fc1.relu"),
        n("Gemm", ["fc1.relu", "fc2.weight", "fc2.bias"], ["logits"], name="fc2", transB=1),
        n("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "mnist_cnn", [oh.image_input(1, 28, 28)], [oh.output("probs", 10)], inits
    )
    return oh.make_model(
        graph, "mnist-react-tfjs@0.1.1 Keras CNN; input = pixels/255, NCHW [N,1,28,28]"
    )


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: convert_mnist_cnn.py TFJS_DIR OUT.onnx")
    tfjs_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    topology, weights = load_tfjs_weights(tfjs_dir)
    oh.save_model(build(topology, weights), out)
    oh.save_preprocess(
        out.with_name(out.stem + ".preprocess.json"),
        {
            "input": "input",
            "output": "probs",
            "layout": "NCHW",
            "color": "GRAY",
            "channels": 1,
            "resize": None,
            "crop": None,
            "size": [28, 28],
            "scale": 1.0 / 255.0,
            "mean": [0.0],
            "std": [1.0],
            "num_classes": 10,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
