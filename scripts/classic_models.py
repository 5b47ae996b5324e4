"""The nine classic CNNs of the onnx wheel (onnx/backend/test/data/light: AlexNet, DenseNet-121,
Inception v1 / v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512) with seeded random
weights, for running them end to end (issue 13, item 4).

The light models give every weight as a ConstantOfShape node (one constant value). This
replaces each by an initializer: He-normal N(0, 2 / fan_in) for Conv / Gemm weights, small
values for biases, BN statistics near (0, 1) and scales near 1, so that activations keep a
sensible range through the network. Same seed, same weights. The graph is left as it is
otherwise (batch fixed to 1, as in the original models).

  classic_models.py make OUT_DIR [NAME ...]
      writes OUT_DIR/NAME.onnx and NAME.preprocess.json (default: all nine)
  classic_models.py reference MODEL IMAGE_DIR PREFIX N CASE_DIR
      the first N (sorted) images starting with PREFIX, preprocessed as in the sidecar
      (shorter side 256, center crop 224, (x - 127) / 128, RGB NCHW), run through onnxruntime
      one at a time; writes CASE_DIR/input_0.pb [N, 3, 224, 224], CASE_DIR/model.onnx (the
      model with the final Softmax's input, the logits, as a second output) and its outputs
      output_0.pb (probabilities), output_1.pb (logits): the layout
      `subsetq run CASE_DIR/model.onnx --inputs CASE_DIR --check` reads
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

NAMES = [
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
]
SEED = 20241302


def light_dir():
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def consumers(graph):
    uses = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            uses.setdefault(name, []).append((node, i))
    return uses


def attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def random_value(shape, uses, rng):
    """A value for a constant of `shape` read by `uses` [(node, input index)]."""
    shape = tuple(int(d) for d in shape)
    node, i = uses[0] if uses else (None, -1)
    op = node.op_type if node is not None else ""
    if op in ("Conv", "Gemm") and i == 1:
        if op == "Conv":
            fan_in = int(np.prod(shape[1:]))
        else:
            fan_in = shape[1] if attr(node, "transB", 0) else shape[0]
        return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    if op in ("Conv", "Gemm") and i == 2:
        return rng.standard_normal(shape) * 0.01
    if op == "BatchNormalization":
        noise = rng.standard_normal(shape) * 0.1
        return {1: 1.0 + noise, 2: noise, 3: noise, 4: 1.0 + np.abs(noise)}.get(i, noise)
    if op == "Mul":
        return 1.0 + rng.standard_normal(shape) * 0.1
    return rng.standard_normal(shape) * 0.1


def randomize(model, seed):
    graph = model.graph
    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in graph.initializer}
    uses = consumers(graph)
    # Through an Unsqueeze (DenseNet, Inception v2 broadcast their BN-like scales that way).
    def final_uses(name):
        out = []
        for node, i in uses.get(name, []):
            if node.op_type in ("Unsqueeze", "Identity", "Reshape") and i == 0:
                out.extend(final_uses(node.output[0]))
            else:
                out.append((node, i))
        return out

    kept, dropped = [], set()
    for node in graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in inits:
            kept.append(node)
            continue
        shape = numpy_helper.to_array(inits[node.input[0]])
        value = random_value(shape, final_uses(node.output[0]), rng).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        dropped.add(node.input[0])
    del graph.node[:]
    graph.node.extend(kept)
    still_read = {i for n in graph.node for i in n.input}
    dropped -= still_read
    keep_inits = [t for t in graph.initializer if t.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(keep_inits)
    initializers = {t.name for t in graph.initializer}
    keep_inputs = [v for v in graph.input if v.name not in dropped | initializers]
    del graph.input[:]
    graph.input.extend(keep_inputs)
    # IR >= 4: initializers need not be listed as graph inputs.
    model.ir_version = max(model.ir_version, 4)
    return model


def preprocess_sidecar(model):
    return {
        "schema": "subsetq-preprocess/1",
        "input": [i.name for i in model.graph.input][0],
        "output": model.graph.output[0].name,
        "layout": "NCHW",
        "color": "RGB",
        "channels": 3,
        "resize": {"shorter_side": 256, "filter": "bilinear", "antialias": True},
        "crop": {"mode": "center", "size": [224, 224]},
        "size": [224, 224],
        "scale": 1.0,
        "mean": [127.0, 127.0, 127.0],
        "std": [128.0, 128.0, 128.0],
        "num_classes": 1000,
    }


def cmd_make(out_dir, *names):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(NAMES):
        if names and name not in names:
            continue
        model = onnx.load(light_dir() / f"light_{name}.onnx")
        randomize(model, SEED + k)
        onnx.checker.check_model(model)
        tmp = out / f".{name}.onnx.tmp"
        onnx.save(model, tmp)
        tmp.replace(out / f"{name}.onnx")
        (out / f"{name}.preprocess.json").write_text(json.dumps(preprocess_sidecar(model), indent=2))
        print(f"{out / name}.onnx", flush=True)


def cmd_reference(model, image_dir, prefix, n, case_dir):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "python"))
    from ort_reference import preprocess, session

    files = sorted(p for p in Path(image_dir).iterdir() if p.name.startswith(prefix))[: int(n)]
    assert files, f"no images starting with {prefix!r} in {image_dir}"
    x = np.stack([preprocess(p) for p in files]).astype(np.float32)
    case = Path(case_dir)
    case.mkdir(parents=True, exist_ok=True)
    m = onnx.load(model)
    softmax = [n for n in m.graph.node if n.output[0] == m.graph.output[0].name]
    if softmax and softmax[0].op_type == "Softmax":
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(softmax[0].input[0]))
    onnx.save(m, case / "model.onnx")
    sess = session(case / "model.onnx")
    name = sess.get_inputs()[0].name
    # The batch is fixed to 1: one image at a time.
    runs = [sess.run(None, {name: x[i : i + 1]}) for i in range(len(x))]
    onnx.save_tensor(numpy_helper.from_array(x, name), case / "input_0.pb")
    for k, out in enumerate(sess.get_outputs()):
        y = np.concatenate([r[k] for r in runs]).astype(np.float32)
        onnx.save_tensor(numpy_helper.from_array(y, out.name), case / f"output_{k}.pb")
        print(out.name, ",".join(str(d) for d in y.shape))


def main():
    commands = {"make": cmd_make, "reference": cmd_reference}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
