"""Small helpers shared by the asset converters (convert_*.py).

Every converted model is written the same way: ONNX opset 13 (IR version 7, the
oldest IR that carries opset 13, so older readers accept it), float32 initializers
stored as raw_data, one graph input "input" [N, C, H, W] with a symbolic batch dim,
checked with onnx.checker, and written atomically (temp file + rename) so that an
interrupted run never leaves a half-written model that later steps would skip.

Preprocessing sidecar (<model>.preprocess.json), schema "subsetq-preprocess/1":

    {
      "schema":  "subsetq-preprocess/1",
      "input":   "input",            graph input the tensor is fed to
      "output":  "logits" | "probs", graph output; "probs" already went through Softmax
      "layout":  "NCHW",
      "color":   "GRAY" | "RGB",     channel order of the decoded image
      "channels": 1 | 3,
      "resize":  null | {"shorter_side": S, "filter": "bilinear", "antialias": true}
                 scale so that min(h, w) == S, keeping the aspect ratio
                 (antialias: Pillow's BILINEAR, which widens the filter when shrinking)
      "crop":    null | {"mode": "center", "size": [H, W]}
                 offsets top = (h - H) // 2, left = (w - W) // 2 of the resized h x w
      "size":    [H, W],             spatial size of the tensor fed to the model
      "scale":   s,                  x = (pixel * scale - mean[c]) / std[c]
      "mean":    [m_c ...],          with pixel the 0..255 value of channel c
      "std":     [s_c ...],
      "num_classes": K
    }

Steps apply in the order resize -> crop -> normalise.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 7
PREPROCESS_SCHEMA = "subsetq-preprocess/1"


def initializer(name: str, array: np.ndarray) -> onnx.TensorProto:
    """A float32 (or int64) initializer stored as raw_data."""
    array = np.ascontiguousarray(array)
    if array.dtype.kind == "f":
        array = array.astype(np.float32)
    tensor = numpy_helper.from_array(array, name)
    assert tensor.HasField("raw_data"), name
    return tensor


def image_input(channels: int, height: int, width: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", channels, height, width])


def output(name: str, classes: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", classes])


def make_model(graph: onnx.GraphProto, doc: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="subsetq-scripts",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates 0600; give the file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_model(model: onnx.ModelProto, path: Path) -> None:
    _atomic_write(Path(path), model.SerializeToString())


def save_preprocess(path: Path, spec: dict) -> None:
    spec = {"schema": PREPROCESS_SCHEMA, **spec}
    _atomic_write(Path(path), (json.dumps(spec, indent=2) + "\n").encode())
