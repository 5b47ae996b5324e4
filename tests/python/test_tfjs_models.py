"""Checks that the models converted from TF.js graph models (scripts/convert_tfjs_graph.py:
assets/selfie.onnx, the MediaPipe selfie segmenter, and assets/nanodet.onnx, the NanoDet
COCO detector) compute what the original graphs compute, on real photos.

The reference is an interpreter for TF.js graphs written here: it reads the model JSON
and .bin directly (not the ONNX file, and not through the converter's code) and runs
each TF op with TF's own semantics, in the graph's own layouts: "SAME" padding, average
pooling over in-image pixels only, ResizeBilinear's half-pixel / align-corners sampling,
Conv2DBackpropInput as the gradient of a strided conv, and NanoDet's Transposes, Pads,
SplitV and Reshapes as written. ORT and the interpreter are fed by one preprocessing
routine driven by the model's sidecar <model>.preprocess.json.

Photos: ai-benchmark's cats (segmentation/) and street scenes (enhancement/, in which
there are hardly any people), plus two of its classification photos: a portrait of a
woman and a telephone on a desk. The selfie mask must be a person-sized blob on the
portrait and stay nearly empty on the desk (which fails if the input range is [-1, 1]
instead of the [0, 1] the sidecar says); NanoDet's best class must be cat, car and
person on a cat, a street and the portrait.

Run: .venv/bin/python -m pytest tests/python/test_tfjs_models.py   (after scripts/fetch-assets.sh)
Missing assets skip the tests, or fail them when CI=true.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pytest

from test_assets import ASSETS, load_image, load_preprocess, ort_session, require

SELFIE_ONNX = ASSETS / "selfie.onnx"
SELFIE_JSON = ASSETS / "original" / "selfie" / "selfie.json"
AIBENCH_DIR = ASSETS / "data" / "ai-benchmark"
CATS = [AIBENCH_DIR / "segmentation" / f"{i}.jpg" for i in (0, 13, 23)]
STREETS = [AIBENCH_DIR / "enhancement" / f"{i}.jpg" for i in (0, 9)]
PERSON = AIBENCH_DIR / "classification" / "54.jpg"
NO_PERSON = AIBENCH_DIR / "classification" / "20.jpg"
PHOTOS = [*CATS, *STREETS, PERSON, NO_PERSON]
NANODET_ONNX = ASSETS / "nanodet.onnx"
NANODET_JSON = ASSETS / "original" / "nanodet" / "nanodet.json"
# TF signature output -> ONNX output: per stride 8/16/32 (52², 26², 13² cells), class
# scores [N, cells, 80] and box-side logits [N, cells, 4 sides x 11 distance bins].
NANODET_OUTPUTS = {
    "Identity": ("cls_s8", 2704, 80),
    "Identity_1": ("cls_s16", 676, 80),
    "Identity_2": ("cls_s32", 169, 80),
    "Identity_3": ("box_s8", 2704, 44),
    "Identity_4": ("box_s16", 676, 44),
    "Identity_5": ("box_s32", 169, 44),
}
COCO_PERSON, COCO_CAR, COCO_CAT = 0, 2, 15  # 0-based indices of the 80 COCO classes
NANODET_PHOTOS = {CATS[0]: COCO_CAT, CATS[1]: COCO_CAT, STREETS[0]: COCO_CAR, PERSON: COCO_PERSON}

# --- Named tolerances and expected values ----------------------------------------------
# ORT and numpy sum float32 products in different orders. Over ~50 layers that noise
# reaches ~1.5e-4 at the worst pixel (a mask edge, where the sigmoid is steepest) for
# either side against a float64 run of the same graph; its mean stays below 1e-6. A
# wrong padding or resize mode moves the max to ~1 and the mean above 1e-2.
SELFIE_MASK_ATOL = 5e-4  # max |mask_ort - mask_numpy| over all photos and pixels
SELFIE_MASK_MEAN_ATOL = 1e-5  # mean of the same
# Fraction of mask > 0.5: a portrait fills a good part of the frame, a desk none of it.
PERSON_FRACTION_RANGE = (0.3, 0.8)
NO_PERSON_FRACTION_MAX = 0.05
# NanoDet, measured: scores (sigmoids) <= 1.2e-6, box logits <= 1.8e-5 over 4 photos.
# One Conv's padding or the Resize mode wrong moves them to >= 3e-2 and >= 1.9.
NANODET_SCORE_ATOL = 1e-5  # max |score_ort - score_numpy|
NANODET_BOX_ATOL = 2e-4  # max |logit_ort - logit_numpy|


# --- The TF.js graph, read and run in numpy ----------------------------------------------


def read_tfjs_graph(path: Path) -> tuple[list[dict], dict[str, np.ndarray], list[str]]:
    """(nodes, weights by name, output tensor names) of a TF.js graph model."""
    model = json.loads(path.read_text())
    weights = {}
    for group in model["weightsManifest"]:
        blob = b"".join((path.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            quant = w.get("quantization")
            if quant:
                assert quant["dtype"] == "float16" and w["dtype"] == "float32", w
                dtype = np.dtype("<f2")
            else:
                dtype = np.dtype({"float32": "<f4", "int32": "<i4"}[w["dtype"]])
            count = math.prod(w["shape"])
            weights[w["name"]] = np.frombuffer(blob, dtype, count, offset).reshape(w["shape"])
            offset += count * dtype.itemsize
        assert offset == len(blob), group["paths"]
    weights = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in weights.items()}
    outputs = [name.removesuffix(":0") for name in model["signature"]["outputs"]]
    return model["modelTopology"]["node"], weights, outputs


def node_attr(node: dict, key: str, default=None):
    value = node.get("attr", {}).get(key)
    if value is None:
        assert default is not None, (node["name"], key)
        return default
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "list" in value:
        return [int(i) for i in value["list"]["i"]]
    return value["f"] if "f" in value else value["b"]


def tf_pad_amounts(size: int, k: int, s: int, padding: str) -> tuple[int, int]:
    """TF's padding of one axis: SAME puts the odd pixel after (bottom/right)."""
    if padding == "VALID":
        return 0, 0
    assert padding == "SAME", padding
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def tf_pad(x: np.ndarray, kh: int, kw: int, s: int, padding: str, value: float = 0) -> np.ndarray:
    pads = (tf_pad_amounts(x.shape[1], kh, s, padding), tf_pad_amounts(x.shape[2], kw, s, padding))
    return np.pad(x, ((0, 0), *pads, (0, 0)), constant_values=value)


def windows(xp: np.ndarray, kh: int, kw: int, s: int):
    """(a, b, strided view) for every kernel tap over the padded NHWC xp (VALID)."""
    oh, ow = (xp.shape[1] - kh) // s + 1, (xp.shape[2] - kw) // s + 1
    for a in range(kh):
        for b in range(kw):
            yield a, b, xp[:, a:a + s * (oh - 1) + 1:s, b:b + s * (ow - 1) + 1:s, :]


def strides_of(node: dict) -> int:
    st = node_attr(node, "strides")
    assert st[0] == st[3] == 1 and st[1] == st[2], st
    assert node_attr(node, "dilations", [1, 1, 1, 1]) == [1, 1, 1, 1]
    assert node_attr(node, "data_format", "NHWC") == "NHWC"
    return st[1]


def tf_conv2d(node: dict, x: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Conv2D, HWIO filter: cross-correlation as one GEMM over im2col patches."""
    kh, kw, ci, co = f.shape
    xp = tf_pad(x, kh, kw, strides_of(node), node_attr(node, "padding"))
    cols = np.stack([v for _, _, v in windows(xp, kh, kw, strides_of(node))], axis=3)
    n, oh, ow = cols.shape[:3]
    return (cols.reshape(-1, kh * kw * ci) @ f.reshape(-1, co)).reshape(n, oh, ow, co)


def tf_depthwise(node: dict, x: np.ndarray, f: np.ndarray) -> np.ndarray:
    """DepthwiseConv2dNative, filter (H, W, C, M): output channel c * M + m."""
    kh, kw, c, m = f.shape
    xp = tf_pad(x, kh, kw, strides_of(node), node_attr(node, "padding"))
    out = sum(v[..., :, None] * f[a, b] for a, b, v in windows(xp, kh, kw, strides_of(node)))
    return out.reshape(*out.shape[:3], c * m)


def tf_avg_pool(node: dict, x: np.ndarray) -> np.ndarray:
    """AvgPool: the mean over the window's pixels that lie inside the image."""
    k = node_attr(node, "ksize")
    assert k[0] == k[3] == 1
    s, padding = strides_of(node), node_attr(node, "padding")
    total = sum(v for _, _, v in windows(tf_pad(x, k[1], k[2], s, padding), k[1], k[2], s))
    ones = np.ones((1, *x.shape[1:3], 1), np.float32)
    count = sum(v for _, _, v in windows(tf_pad(ones, k[1], k[2], s, padding), k[1], k[2], s))
    return total / count


def tf_max_pool(node: dict, x: np.ndarray) -> np.ndarray:
    """MaxPool: SAME padding never wins the max."""
    k = node_attr(node, "ksize")
    assert k[0] == k[3] == 1
    s = strides_of(node)
    xp = tf_pad(x, k[1], k[2], s, node_attr(node, "padding"), -np.inf)
    return np.max([v for _, _, v in windows(xp, k[1], k[2], s)], axis=0)


def tf_resize_weights(in_size: int, out_size: int, align: bool, half: bool):
    """TF's compute_interpolation_weights: (lower index, upper index, lerp) per output."""
    scale = (in_size - 1) / (out_size - 1) if align and out_size > 1 else in_size / out_size
    i = np.arange(out_size, dtype=np.float64)
    src = (i + 0.5) * scale - 0.5 if half else i * scale
    lower = np.maximum(np.floor(src), 0).astype(int)
    upper = np.minimum(np.ceil(src), in_size - 1).astype(int)
    return lower, upper, (src - np.floor(src)).astype(np.float32)


def tf_resize_bilinear(node: dict, x: np.ndarray, size: np.ndarray) -> np.ndarray:
    align, half = node_attr(node, "align_corners"), node_attr(node, "half_pixel_centers")
    yl, yu, ly = tf_resize_weights(x.shape[1], int(size[0]), align, half)
    xl, xu, lx = tf_resize_weights(x.shape[2], int(size[1]), align, half)
    ly, lx = ly[None, :, None, None], lx[None, None, :, None]
    top = x[:, yl][:, :, xl] + (x[:, yl][:, :, xu] - x[:, yl][:, :, xl]) * lx
    bottom = x[:, yu][:, :, xl] + (x[:, yu][:, :, xu] - x[:, yu][:, :, xl]) * lx
    return top + (bottom - top) * ly


def tf_conv2d_backprop_input(node: dict, sizes: np.ndarray, f: np.ndarray, dy: np.ndarray):
    """Conv2DBackpropInput: scatter every input pixel times the filter into the output,
    then cut off the padding the forward conv (sizes -> dy) would have added."""
    kh, kw, co, _ = f.shape
    s, padding = strides_of(node), node_attr(node, "padding")
    n, h, w, _ = dy.shape
    (pt, _), (pl, _) = (tf_pad_amounts(int(sizes[i]), k, s, padding) for i, k in ((1, kh), (2, kw)))
    oh, ow = int(sizes[1]), int(sizes[2])
    full = np.zeros((n, max((h - 1) * s + kh, pt + oh), max((w - 1) * s + kw, pl + ow), co), np.float32)
    for a in range(kh):
        for b in range(kw):
            full[:, a:a + s * (h - 1) + 1:s, b:b + s * (w - 1) + 1:s] += dy @ f[a, b].T
    return full[:, pt:pt + oh, pl:pl + ow]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -x))  # 1 / (1 + e^-x) without overflow


def tf_sparse_to_dense(node: dict, indices, shape, values, default):
    out = np.full(shape, default, np.asarray(values).dtype)
    for row, v in zip(np.asarray(indices).reshape(-1, len(shape)), np.broadcast_to(values, len(indices))):
        out[tuple(row)] = v
    return out


TF_OPS = {
    "Conv2D": tf_conv2d,
    "DepthwiseConv2dNative": tf_depthwise,
    "AvgPool": tf_avg_pool,
    "ResizeBilinear": tf_resize_bilinear,
    "Conv2DBackpropInput": tf_conv2d_backprop_input,
    "Add": lambda node, a, b: a + b,
    "AddV2": lambda node, a, b: a + b,
    "AddN": lambda node, *xs: sum(xs),
    "Mul": lambda node, a, b: a * b,
    "Relu": lambda node, x: np.maximum(x, 0),
    "Relu6": lambda node, x: np.clip(x, 0, 6),
    "Sigmoid": lambda node, x: sigmoid(x),
    "LeakyRelu": lambda node, x: np.where(x > 0, x, x * np.float32(node_attr(node, "alpha"))),
    "MaxPool": tf_max_pool,
    "Pad": lambda node, x, pads: np.pad(x, pads),
    "PadV2": lambda node, x, pads, value: np.pad(x, pads, constant_values=value),
    "Transpose": lambda node, x, perm: x.transpose(perm),
    "Reshape": lambda node, x, shape: x.reshape(shape),
    "ConcatV2": lambda node, *xs: np.concatenate(xs[:-1], axis=int(xs[-1])),
    "SplitV": lambda node, x, sizes, axis: np.split(x, np.cumsum(sizes)[:-1], axis=int(axis)),
    "SparseToDense": tf_sparse_to_dense,
    "Identity": lambda node, x: x,
}


def tfjs_forward(graph_json: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run the graph with x fed to its placeholder; returns its outputs by name."""
    nodes, weights, outputs = read_tfjs_graph(graph_json)
    values = dict(weights)
    pending = [n for n in nodes if n["op"] != "Const"]
    while not all(o in values for o in outputs):
        refs = {n["name"]: [i.removesuffix(":0") for i in n.get("input", [])] for n in pending}
        ready = [n for n in pending if all(i in values for i in refs[n["name"]])]
        assert ready, "graph has a cycle or a missing input"
        for node in ready:
            if node["op"] == "Placeholder":
                out = x
            else:
                out = TF_OPS[node["op"]](node, *(values[i] for i in refs[node["name"]]))
            # SplitV gives a list: its outputs are name, name:1, name:2, ...
            for i, v in enumerate(out if isinstance(out, list) else [out]):
                v = np.asarray(v)
                values[f"{node['name']}:{i}" if i else node["name"]] = (
                    v.astype(np.float32) if v.dtype.kind == "f" else v)
        pending = [n for n in pending if n["name"] not in values]
    return {o: values[o] for o in outputs}


# --- Tests ---------------------------------------------------------------------------------


def test_selfie_matches_tfjs_graph():
    require(SELFIE_ONNX, SELFIE_JSON, *PHOTOS)
    spec = load_preprocess(SELFIE_ONNX)
    assert spec["layout"] == "NCHW" and spec["color"] == "RGB" and spec["output"] == "mask"
    x = np.stack([load_image(p, spec) for p in PHOTOS])  # NHWC in [0, 1]
    assert x.shape == (len(PHOTOS), 256, 256, 3) and 0 <= x.min() and x.max() <= 1

    mask_ort = ort_session(SELFIE_ONNX).run(["mask"], {"input": x.transpose(0, 3, 1, 2)})[0]
    (mask_np,) = tfjs_forward(SELFIE_JSON, x).values()
    mask_np = mask_np.transpose(0, 3, 1, 2)

    assert mask_ort.shape == mask_np.shape == (len(PHOTOS), 1, 256, 256)
    diff = np.abs(mask_ort - mask_np)
    fraction = (mask_ort > 0.5).mean(axis=(1, 2, 3))
    print(f"\nselfie, {len(PHOTOS)} photos: |dmask| max {diff.max():.2e} mean {diff.mean():.2e}; "
          "fraction > 0.5: "
          + ", ".join(f"{p.parent.name}/{p.name} {f:.3f}" for p, f in zip(PHOTOS, fraction)))

    assert diff.max() <= SELFIE_MASK_ATOL
    assert diff.mean() <= SELFIE_MASK_MEAN_ATOL
    person, no_person = fraction[PHOTOS.index(PERSON)], fraction[PHOTOS.index(NO_PERSON)]
    assert PERSON_FRACTION_RANGE[0] <= person <= PERSON_FRACTION_RANGE[1], person
    assert no_person <= NO_PERSON_FRACTION_MAX, no_person


def test_nanodet_matches_tfjs_graph():
    photos = list(NANODET_PHOTOS)
    require(NANODET_ONNX, NANODET_JSON, *photos)
    spec = load_preprocess(NANODET_ONNX)
    assert spec["layout"] == "NCHW" and spec["color"] == "RGB" and spec["size"] == [416, 416]
    x = np.stack([load_image(p, spec) for p in photos]).transpose(0, 3, 1, 2)  # the graph is NCHW

    names = [name for name, _, _ in NANODET_OUTPUTS.values()]
    out_ort = dict(zip(names, ort_session(NANODET_ONNX).run(names, {"input": x})))
    # The graph's Reshapes say batch 1: run it photo by photo.
    runs = [tfjs_forward(NANODET_JSON, x[i:i + 1]) for i in range(len(photos))]
    out_np = {name: np.concatenate([r[k] for r in runs]) for k, (name, _, _) in NANODET_OUTPUTS.items()}

    diffs = {}
    for name, cells, width in NANODET_OUTPUTS.values():
        assert out_ort[name].shape == out_np[name].shape == (len(photos), cells, width), name
        diffs[name] = float(np.abs(out_ort[name] - out_np[name]).max())
    scores = np.concatenate([out_ort[f"cls_s{s}"] for s in (8, 16, 32)], axis=1).max(axis=1)
    top = scores.argmax(axis=1)
    print(f"\nnanodet, {len(photos)} photos: max |d| "
          + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()) + "; best class (score): "
          + ", ".join(f"{p.parent.name}/{p.name} {c} ({scores[i, c]:.2f})"
                      for i, (p, c) in enumerate(zip(photos, top))))

    for name, d in diffs.items():
        assert d <= (NANODET_SCORE_ATOL if name.startswith("cls") else NANODET_BOX_ATOL), name
    assert list(top) == list(NANODET_PHOTOS.values())


@pytest.mark.parametrize("model_path, outputs", [
    (SELFIE_ONNX, {"mask": ["N", 1, 256, 256]}),
    (NANODET_ONNX, {name: ["N", cells, width] for name, cells, width in NANODET_OUTPUTS.values()}),
])
def test_tfjs_onnx_conventions(model_path, outputs):
    """Opset 13, NCHW input 'input' [N, 3, H, W] with H, W from the sidecar, the named
    outputs, weights as float32 raw_data initializers (int64 only for Reshape / Split
    shapes), no Constant nodes; sidecar without num_classes."""
    require(model_path)
    import onnx

    model = onnx.load(str(model_path))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}[""] == 13

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    spec = load_preprocess(model_path)
    (inp,) = model.graph.input
    assert inp.name == "input" and dims(inp) == ["N", 3, *spec["size"]]
    assert {o.name: dims(o) for o in model.graph.output} == outputs
    assert not any(n.op_type == "Constant" for n in model.graph.node)
    shape_inputs = {n.input[1] for n in model.graph.node if n.op_type in ("Reshape", "Split")}
    for t in model.graph.initializer:
        assert t.HasField("raw_data"), t.name
        assert t.data_type == onnx.TensorProto.FLOAT or (
            t.data_type == onnx.TensorProto.INT64 and t.name in shape_inputs), t.name
    assert spec["schema"] == "subsetq-preprocess/1" and "num_classes" not in spec
    assert spec["channels"] == 3 and spec["output"] in outputs
