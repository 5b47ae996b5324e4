"""Checks that the converted real-asset models (scripts/fetch-assets.sh) compute what the
original weights compute, on real data.

Each converted ONNX model is run in onnxruntime and compared with an independent numpy
forward pass written here from the *original* weight files (not the ONNX file, and not
through the converters' code):
  * mnist-cnn: Keras weights read from keras/cnn.h5 with h5py (the converter reads the
    TF.js shards instead), NHWC math as in Keras, on the full 10k MNIST test set;
  * efficientnet-lite0: the .pth state dict, BN applied explicitly, TF-same padding, on
    the 20 labelled ImageNet photos that ship with foolbox.
Both sides are fed by one preprocessing routine driven by the model's sidecar
<model>.preprocess.json, so the accuracy asserts also check the sidecar.

Run: .venv/bin/python -m pytest tests/python   (after scripts/fetch-assets.sh)
Missing assets skip the tests, or fail them when CI=true.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "assets"
sys.path.insert(0, str(ROOT / "scripts"))

MNIST_ONNX = ASSETS / "mnist-cnn.onnx"
MNIST_H5 = ASSETS / "original" / "mnist-cnn" / "cnn.h5"
MNIST_DIR = ASSETS / "data" / "mnist"
EFFNET_ONNX = ASSETS / "efficientnet-lite0.onnx"
EFFNET_PTH = ASSETS / "original" / "efficientnet-lite0" / "efficientnet-lite0-57934424.pth"
FOOLBOX_DIR = ASSETS / "data" / "foolbox"

# --- Named tolerances and expected scores --------------------------------------------
# ORT and numpy sum float32 products in different orders; these bound that noise.
MNIST_PROB_ATOL = 1e-5  # max |p_ort - p_numpy| over 10k images x 10 classes
EFFNET_LOGIT_ATOL = 2e-4  # max |logit_ort - logit_numpy| over 20 photos x 1000 classes
# Measured with the independent numpy forward (shared/ASSETS.md says the same).
MNIST_TOP1_EXPECTED = 0.9907
MNIST_TOP1_WINDOW = 0.0005  # +- 5 images of 10k
EFFNET_TOP1_EXPECTED = 17  # of 20
EFFNET_TOP5_EXPECTED = 19  # of 20
EFFNET_BN_EPSILON = 1e-3  # lukemelas EfficientNet batch_norm_epsilon


def require(*paths: Path) -> None:
    """Skip (or, under CI=true, fail) when an asset has not been fetched."""
    missing = [str(p.relative_to(ROOT)) for p in paths if not p.exists()]
    if missing:
        msg = f"missing {', '.join(missing)}: run scripts/fetch-assets.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def load_preprocess(model: Path) -> dict:
    return json.loads(model.with_name(model.stem + ".preprocess.json").read_text())


def normalize(pixels: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 HWC / NHWC pixels -> float32 following the sidecar: (p*scale - mean) / std."""
    mean = np.asarray(spec["mean"], np.float32)
    std = np.asarray(spec["std"], np.float32)
    return ((pixels.astype(np.float32) * np.float32(spec["scale"]) - mean) / std).astype(np.float32)


def load_image(path: Path, spec: dict) -> np.ndarray:
    """Decode, resize, crop and normalise one image as the sidecar says; returns HWC float32."""
    from PIL import Image

    img = Image.open(path).convert({"RGB": "RGB", "GRAY": "L"}[spec["color"]])
    if spec["resize"]:
        assert spec["resize"]["filter"] == "bilinear"
        s = spec["resize"]["shorter_side"]
        w, h = img.size
        nw, nh = (s, round(h * s / w)) if w <= h else (round(w * s / h), s)
        img = img.resize((nw, nh), Image.BILINEAR)  # Pillow: antialiased when shrinking
    if spec["crop"]:
        assert spec["crop"]["mode"] == "center"
        ch, cw = spec["crop"]["size"]
        w, h = img.size
        left, top = (w - cw) // 2, (h - ch) // 2
        img = img.crop((left, top, left + cw, top + ch))
    arr = np.asarray(img, np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    assert list(arr.shape[:2]) == spec["size"]
    return normalize(arr, spec)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --- MNIST -----------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """IDX file (MNIST's format): magic (0, 0, dtype=0x08 ubyte, ndim), big-endian dims, data."""
    raw = path.read_bytes()
    zero, dtype, ndim = struct.unpack_from(">HBB", raw, 0)
    assert zero == 0 and dtype == 0x08, path
    dims = struct.unpack_from(f">{ndim}I", raw, 4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def keras_conv_valid(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Keras Conv2D, padding='valid', stride 1, NHWC, HWIO kernel (cross-correlation)."""
    kh, kw, _, cout = kernel.shape
    n, h, w, _ = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    # im2col: patches in (kh, kw, cin) order match the HWIO kernel flattened to 2-D.
    cols = np.stack([x[:, i:i + oh, j:j + ow, :] for i in range(kh) for j in range(kw)], axis=3)
    out = cols.reshape(n * oh * ow, -1) @ kernel.reshape(-1, cout)
    return out.reshape(n, oh, ow, cout) + bias


def keras_mnist_forward(w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The Keras Sequential model on NHWC input; returns softmax probabilities."""
    x = np.maximum(keras_conv_valid(x, w["conv2d_1/kernel"], w["conv2d_1/bias"]), 0)
    x = np.maximum(keras_conv_valid(x, w["conv2d_2/kernel"], w["conv2d_2/bias"]), 0)
    n, h, wd, c = x.shape
    x = x.reshape(n, h // 2, 2, wd // 2, 2, c).max(axis=(2, 4))  # MaxPooling2D 2x2
    x = x.reshape(n, -1)  # Keras Flatten: H, W, C order
    x = np.maximum(x @ w["dense_1/kernel"] + w["dense_1/bias"], 0)
    return softmax(x @ w["dense_2/kernel"] + w["dense_2/bias"])


def test_mnist_cnn_matches_keras_weights():
    images_path = MNIST_DIR / "t10k-images-idx3-ubyte"
    labels_path = MNIST_DIR / "t10k-labels-idx1-ubyte"
    require(MNIST_ONNX, MNIST_H5, images_path, labels_path)
    import h5py

    images, labels = read_idx(images_path), read_idx(labels_path)
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    spec = load_preprocess(MNIST_ONNX)
    assert spec["layout"] == "NCHW" and spec["channels"] == 1 and spec["size"] == [28, 28]
    x = normalize(images[..., None], spec)  # NHWC, pixels/255

    with h5py.File(MNIST_H5, "r") as f:
        g = f["model_weights"]
        w = {
            f"{layer}/{kind}": g[layer][layer][f"{kind}:0"][()].astype(np.float32)
            for layer in ("conv2d_1", "conv2d_2", "dense_1", "dense_2")
            for kind in ("kernel", "bias")
        }

    sess = ort_session(MNIST_ONNX)
    batch = 1000
    p_ort = np.concatenate([
        sess.run(["probs"], {"input": x[i:i + batch].transpose(0, 3, 1, 2)})[0]
        for i in range(0, len(x), batch)
    ])
    p_np = np.concatenate([keras_mnist_forward(w, x[i:i + batch]) for i in range(0, len(x), batch)])

    top_ort, top_np = p_ort.argmax(1), p_np.argmax(1)
    acc_ort = float((top_ort == labels).mean())
    acc_np = float((top_np == labels).mean())
    max_diff = float(np.abs(p_ort - p_np).max())
    print(f"\nMNIST 10k: top-1 ORT {acc_ort:.4f}, numpy {acc_np:.4f}, "
          f"argmax agreement {(top_ort == top_np).sum()}/10000, max |dp| {max_diff:.2e}")

    assert (top_ort == top_np).all(), f"{(top_ort != top_np).sum()} argmax disagreements"
    assert max_diff <= MNIST_PROB_ATOL
    assert abs(acc_ort - MNIST_TOP1_EXPECTED) <= MNIST_TOP1_WINDOW, acc_ort


# --- EfficientNet-Lite0 ------------------------------------------------------------------

# Stride of each of the 16 MBConv blocks (EfficientNet-B0 stages: first block of stages
# 2, 3, 4 and 6 downsamples). Kernel sizes and channels come from the weights.
EFFNET_BLOCK_STRIDES = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]


def tf_same_pad(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """Zero-pad NHWC x the way TensorFlow's SAME does (extra pixel bottom/right)."""
    def amounts(n):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        return total // 2, total - total // 2
    return np.pad(x, ((0, 0), amounts(x.shape[1]), amounts(x.shape[2]), (0, 0)))


def conv_im2col(x: np.ndarray, w_oihw: np.ndarray, s: int) -> np.ndarray:
    """Dense kxk conv, TF-same, NHWC, via im2col (used for the 3-channel stem)."""
    o, i, k, _ = w_oihw.shape
    n, h, wd, _ = x.shape
    oh, ow = math.ceil(h / s), math.ceil(wd / s)
    xp = tf_same_pad(x, k, s)
    cols = np.stack([xp[:, a:a + s * oh:s, b:b + s * ow:s, :] for a in range(k) for b in range(k)], axis=3)
    # Patch order (kh, kw, cin) matches the kernel transposed to (kh, kw, in, out).
    out = cols.reshape(n * oh * ow, k * k * i) @ w_oihw.transpose(2, 3, 1, 0).reshape(k * k * i, o)
    return out.reshape(n, oh, ow, o)


def conv_1x1(x: np.ndarray, w_oihw: np.ndarray) -> np.ndarray:
    # As one 2-D GEMM: a 4-D @ would run one small GEMM per image row.
    out = x.reshape(-1, x.shape[3]) @ w_oihw[:, :, 0, 0].T
    return out.reshape(*x.shape[:3], -1)


def conv_depthwise(x: np.ndarray, w_c1kk: np.ndarray, s: int) -> np.ndarray:
    """Depthwise kxk conv, TF-same, NHWC: a weighted sum of k*k shifted views."""
    c, _, k, _ = w_c1kk.shape
    n, h, wd, _ = x.shape
    oh, ow = math.ceil(h / s), math.ceil(wd / s)
    xp = tf_same_pad(x, k, s)
    out = np.zeros((n, oh, ow, c), np.float32)
    for a in range(k):
        for b in range(k):
            out += xp[:, a:a + s * oh:s, b:b + s * ow:s, :] * w_c1kk[:, 0, a, b]
    return out


def batch_norm(x: np.ndarray, sd: dict, prefix: str) -> np.ndarray:
    """Inference BN, gamma * (x - mean) / sqrt(var + eps) + beta, as one multiply-add."""
    g, b = sd[prefix + ".weight"], sd[prefix + ".bias"]
    m, v = sd[prefix + ".running_mean"], sd[prefix + ".running_var"]
    scale = g / np.sqrt(v + EFFNET_BN_EPSILON)
    return x * scale + (b - m * scale)


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 6)


def effnet_forward(sd: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """EfficientNet-Lite0 on NHWC input; returns logits."""
    x = relu6(batch_norm(conv_im2col(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    for i, stride in enumerate(EFFNET_BLOCK_STRIDES):
        p = f"_blocks.{i}."
        inp = x
        if p + "_expand_conv.weight" in sd:
            x = relu6(batch_norm(conv_1x1(x, sd[p + "_expand_conv.weight"]), sd, p + "_bn0"))
        x = relu6(batch_norm(conv_depthwise(x, sd[p + "_depthwise_conv.weight"], stride), sd, p + "_bn1"))
        x = batch_norm(conv_1x1(x, sd[p + "_project_conv.weight"]), sd, p + "_bn2")
        if stride == 1 and x.shape == inp.shape:
            x = x + inp
    assert f"_blocks.{len(EFFNET_BLOCK_STRIDES)}._project_conv.weight" not in sd
    x = relu6(batch_norm(conv_1x1(x, sd["_conv_head.weight"]), sd, "_bn1"))
    x = x.mean(axis=(1, 2))
    return x @ sd["_fc.weight"].T + sd["_fc.bias"]


@functools.cache
def effnet_state_dict() -> dict[str, np.ndarray]:
    """The .pth read once per session (callers check that it exists first)."""
    from torch_legacy import load_state_dict

    return load_state_dict(EFFNET_PTH)


def test_efficientnet_lite0_matches_pth():
    require(EFFNET_ONNX, EFFNET_PTH, FOOLBOX_DIR)
    photos = sorted(FOOLBOX_DIR.glob("imagenet_*.jpg"))
    assert len(photos) == 20, photos
    labels = np.array([int(re.fullmatch(r"imagenet_\d+_(\d+)\.jpg", p.name).group(1)) for p in photos])
    spec = load_preprocess(EFFNET_ONNX)
    assert spec["layout"] == "NCHW" and spec["color"] == "RGB" and spec["output"] == "logits"
    x = np.stack([load_image(p, spec) for p in photos])  # NHWC

    logits_ort = ort_session(EFFNET_ONNX).run(["logits"], {"input": x.transpose(0, 3, 1, 2)})[0]
    logits_np = effnet_forward(effnet_state_dict(), x)

    top_ort, top_np = logits_ort.argmax(1), logits_np.argmax(1)
    max_diff = float(np.abs(logits_ort - logits_np).max())
    top5 = np.argsort(-logits_ort, axis=1)[:, :5]
    top1_ok = int((top_ort == labels).sum())
    top5_ok = int((top5 == labels[:, None]).any(1).sum())
    print(f"\nEfficientNet-Lite0, 20 foolbox photos: top-1 {top1_ok}/20, top-5 {top5_ok}/20, "
          f"ORT vs numpy top-1 agreement {(top_ort == top_np).sum()}/20, max |dlogit| {max_diff:.2e}")

    assert (top_ort == top_np).all()
    assert max_diff <= EFFNET_LOGIT_ATOL
    assert top1_ok == EFFNET_TOP1_EXPECTED
    assert top5_ok == EFFNET_TOP5_EXPECTED


def test_efficientnet_initializers_are_pth_keys():
    """Test vectors are keyed by .pth names: the ONNX must use exactly those names."""
    require(EFFNET_ONNX, EFFNET_PTH)
    import onnx

    sd = effnet_state_dict()

    model = onnx.load(str(EFFNET_ONNX))
    onnx_names = [t.name for t in model.graph.initializer]
    pth_names = [k for k in sd if not k.endswith(".num_batches_tracked")]
    assert len(onnx_names) == len(set(onnx_names))
    assert sorted(onnx_names) == sorted(pth_names)
    for t in model.graph.initializer:
        np.testing.assert_array_equal(
            onnx.numpy_helper.to_array(t), sd[t.name], err_msg=t.name)


# --- Structure shared by both models -----------------------------------------------------


@pytest.mark.parametrize("model_path, output", [(MNIST_ONNX, "probs"), (EFFNET_ONNX, "logits")])
def test_onnx_conventions(model_path, output):
    """Opset 13, NCHW input 'input' with a symbolic batch dim, float32 raw_data weights."""
    require(model_path)
    import onnx

    model = onnx.load(str(model_path))
    onnx.checker.check_model(model)
    assert {o.domain: o.version for o in model.opset_import}[""] == 13
    (inp,) = model.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == "input" and len(dims) == 4 and dims[0].dim_param and not dims[0].dim_value
    assert [o.name for o in model.graph.output] == [output]
    for t in model.graph.initializer:
        assert t.data_type == onnx.TensorProto.FLOAT and t.HasField("raw_data"), t.name
    spec = load_preprocess(model_path)
    assert spec["schema"] == "subsetq-preprocess/1"
    assert [d.dim_value for d in dims[1:]] == [spec["channels"], *spec["size"]]
