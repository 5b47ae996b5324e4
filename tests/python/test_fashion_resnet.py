"""Checks models/fashion-resnet.onnx, the ResNet the project trained on Fashion-MNIST
(scripts/train_fashion_resnet.py; the run is recorded in models/fashion-resnet.md):
  * onnxruntime on the full 10k Fashion-MNIST test split gives the recorded top-1,
    with the input prepared as the sidecar fashion-resnet.preprocess.json says;
  * the graph is a real ResNet: residual Add nodes joining a BN'd conv branch with a
    shortcut, every Conv followed by its own (unfolded) BatchNormalization;
  * the project's ONNX conventions, readable initializer names, and a valid sidecar whose
    mean / std are the training split's (what the model was trained with).

Run: .venv/bin/python -m pytest tests/python   (needs assets/data/fashion-mnist from
scripts/fetch-assets.sh; missing data skips, or fails under CI=true)
"""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from test_assets import ROOT, load_preprocess, normalize, ort_session, require

MODEL = ROOT / "models" / "fashion-resnet.onnx"
RECORD = ROOT / "models" / "fashion-resnet.md"
FASHION_DIR = ROOT / "assets" / "data" / "fashion-mnist"

# onnxruntime top-1 on the 10k test split, as recorded in models/fashion-resnet.md.
FASHION_TOP1_EXPECTED = 0.9246
FASHION_TOP1_WINDOW = 0.0005  # +- 5 images of 10k (summation-order noise between runtimes)

STAGES, BLOCKS_PER_STAGE = 3, 2
RESIDUAL_ADDS = STAGES * BLOCKS_PER_STAGE
PROJECTIONS = STAGES  # every stage's first block changes the shape (stride 2)
CONVS = 1 + 2 * RESIDUAL_ADDS + PROJECTIONS
NAME_RE = re.compile(
    r"(stem\.(conv|bn)|stage\d\.block\d\.(conv[12]|bn[12]|shortcut\.(conv|bn))|fc)"
    r"\.(weight|bias|running_mean|running_var)")


def read_idx_gz(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    zero, dtype, ndim = struct.unpack_from(">HBB", raw, 0)
    assert zero == 0 and dtype == 0x08, path
    dims = struct.unpack_from(f">{ndim}I", raw, 4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def test_fashion_resnet_top1_onnxruntime():
    images_path = FASHION_DIR / "t10k-images-idx3-ubyte.gz"
    labels_path = FASHION_DIR / "t10k-labels-idx1-ubyte.gz"
    require(MODEL, images_path, labels_path)
    images, labels = read_idx_gz(images_path), read_idx_gz(labels_path)
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    spec = load_preprocess(MODEL)
    x = normalize(images[..., None], spec).transpose(0, 3, 1, 2)  # NCHW

    sess = ort_session(MODEL)
    batch = 1000
    logits = np.concatenate([sess.run([spec["output"]], {spec["input"]: x[i:i + batch]})[0]
                             for i in range(0, len(x), batch)])
    assert logits.shape == (10000, 10) and np.isfinite(logits).all()
    acc = float((logits.argmax(1) == labels).mean())
    print(f"\nfashion-resnet, Fashion-MNIST 10k test: onnxruntime top-1 {acc:.4f}")
    assert acc >= 0.91, acc
    assert abs(acc - FASHION_TOP1_EXPECTED) <= FASHION_TOP1_WINDOW, acc


def test_fashion_resnet_record_matches():
    """The .md written by the training run states the top-1 this file expects."""
    require(MODEL, RECORD)
    text = RECORD.read_text()
    m = re.search(r"\| test top-1, onnxruntime \| (\d+\.\d+)% \((\d+) / 10000\)", text)
    assert m, "no onnxruntime top-1 line in models/fashion-resnet.md"
    assert int(m.group(2)) / 10000 == pytest.approx(FASHION_TOP1_EXPECTED, abs=1e-9)
    assert f"| file size | {MODEL.stat().st_size} bytes |" in text


def test_fashion_resnet_graph_is_a_resnet_with_bn():
    require(MODEL)
    import onnx

    model = onnx.load(str(MODEL))
    onnx.checker.check_model(model, full_check=True)
    g = model.graph
    producer = {out: n for n in g.node for out in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    ops = [n.op_type for n in g.node]

    # Every Conv is bias-free and feeds exactly one BatchNormalization, and nothing else.
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert len(convs) == CONVS
    for c in convs:
        assert len(c.input) == 2, f"{c.name}: conv bias (BN should follow instead)"
        (nxt,) = consumers[c.output[0]]
        assert nxt.op_type == "BatchNormalization", c.name
    assert ops.count("BatchNormalization") == CONVS

    # Residual Adds: branch = conv2's BN; shortcut = the block input (a Relu) or a projection BN.
    adds = [n for n in g.node if n.op_type == "Add"]
    assert len(adds) == RESIDUAL_ADDS
    projections = 0
    for a in adds:
        branch, shortcut = (producer[i] for i in a.input)
        assert branch.op_type == "BatchNormalization" and branch.name.endswith(".bn2"), a.name
        assert shortcut.op_type in ("Relu", "BatchNormalization"), a.name
        if shortcut.op_type == "BatchNormalization":
            assert shortcut.name.endswith(".shortcut.bn"), a.name
            projections += 1
        else:
            # Identity shortcut: the Add's other input is also the start of the branch.
            assert any(n.op_type == "Conv" for n in consumers[shortcut.output[0]]), a.name
        (after,) = consumers[a.output[0]]
        assert after.op_type == "Relu", a.name
    assert projections == PROJECTIONS
    assert ops[-3:] == ["GlobalAveragePool", "Flatten", "Gemm"]
    assert set(ops) == {"Conv", "BatchNormalization", "Relu", "Add", "GlobalAveragePool", "Flatten", "Gemm"}

    # Readable, unique initializer names; BN statistics are real (not an identity BN).
    names = [t.name for t in g.initializer]
    assert len(names) == len(set(names))
    for name in names:
        assert NAME_RE.fullmatch(name), name
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    var = inits["stage2.block1.bn1.running_var"]
    assert (var > 0).all() and not np.allclose(var, 1.0)

    # Project ONNX conventions, as for the converted assets.
    assert {o.domain: o.version for o in model.opset_import}[""] == 13
    (inp,) = g.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == "input" and dims[0].dim_param and not dims[0].dim_value
    assert [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert [o.name for o in g.output] == ["logits"]
    for t in g.initializer:
        assert t.data_type == onnx.TensorProto.FLOAT and t.HasField("raw_data"), t.name
    assert MODEL.stat().st_size <= 2 * 1024 * 1024


def test_fashion_resnet_preprocess_sidecar():
    require(MODEL)
    spec = load_preprocess(MODEL)
    assert spec["schema"] == "subsetq-preprocess/1"
    assert set(spec) == {"schema", "input", "output", "layout", "color", "channels", "resize",
                         "crop", "size", "scale", "mean", "std", "num_classes"}
    assert spec["input"] == "input" and spec["output"] == "logits"
    assert spec["layout"] == "NCHW" and spec["color"] == "GRAY" and spec["channels"] == 1
    assert spec["size"] == [28, 28] and spec["resize"] is None and spec["crop"] is None
    assert spec["scale"] == pytest.approx(1 / 255, rel=1e-12)
    assert spec["num_classes"] == 10
    (mean,), (std,) = spec["mean"], spec["std"]
    assert 0 < mean < 1 and 0 < std < 1

    # The training split's pixel mean / std, which the model was trained with.
    train_path = FASHION_DIR / "train-images-idx3-ubyte.gz"
    require(train_path)
    train = read_idx_gz(train_path).astype(np.float64) / 255
    assert mean == pytest.approx(train.mean(), abs=5e-5)
    assert std == pytest.approx(train.std(), abs=5e-5)
