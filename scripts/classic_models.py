"""The nine classic CNNs of the onnx wheel (onnx/backend/test/data/light: AlexNet, DenseNet-121,
Inception v1 / v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512) with seeded random
weights, for running them end to end (issue 13, item 4).

The light models give every weight as a ConstantOfShape node (one constant value). This
replaces each by an initializer: He-normal N(0, 2 / fan_in) for Conv / Gemm weights, small
values for biases, BN scales near 1 and shifts near 0, and BN running statistics measured
on photos (the last 4 `imagenet_*` of IMAGE_DIR, through onnxruntime, upstream first), so
that activations keep a sensible range through the network; the last weight layer is
scaled so that the logits' standard deviation on those photos is 2 (softmax not one-hot).
Same seed and photos, same
weights. The graph is left as it is otherwise (batch fixed to 1, as in the original models).

  classic_models.py make OUT_DIR IMAGE_DIR [NAME ...]
      writes OUT_DIR/NAME.onnx and NAME.preprocess.json (default: all nine)
  classic_models.py reference MODEL IMAGE_DIR PREFIX N CASE_DIR
      the first N (sorted) images starting with PREFIX, preprocessed as in the sidecar
      (shorter side 256, center crop 224, (x - 127) / 128, RGB NCHW), run through onnxruntime
      one at a time; writes CASE_DIR/input_0.pb [N, 3, 224, 224], CASE_DIR/model.onnx (the
      model with the final Softmax's input, the logits, as a second output; DenseNet-121 has
      no Softmax, its one output is the logits) and its outputs output_0.pb (probabilities),
      output_1.pb (logits): the layout
      `subsetq run CASE_DIR/model.onnx --inputs CASE_DIR --check` reads
"""

import json
import os
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
# Photos whose statistics set the batch norms' (the last CALIB_PHOTOS of this prefix).
CALIB_PREFIX = "imagenet_"
CALIB_PHOTOS = 4
# Standard deviation of the logits on those photos (see scale_logits).
LOGIT_STD = 2.0
# Operators y = f(x) with f(c x) = c f(x) for c > 0.
SCALE_COMMUTES = (
    "Reshape", "Flatten", "Relu", "GlobalAveragePool", "AveragePool", "Dropout", "Squeeze",
    "Identity", "MaxPool",
)


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
    # ResNet-50 carries an initializer no node reads.
    dropped |= {t.name for t in graph.initializer if t.name not in still_read}
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


def photos(image_dir, prefix, n, last=False):
    """The first (or last) `n` sorted images of `image_dir` starting with `prefix`,
    preprocessed as the sidecar says, [n, 3, 224, 224] float32."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "python"))
    from ort_reference import preprocess

    files = sorted(p for p in Path(image_dir).iterdir() if p.name.startswith(prefix))
    files = files[-n:] if last else files[:n]
    assert files, f"no images starting with {prefix!r} in {image_dir}"
    return np.stack([preprocess(p) for p in files]).astype(np.float32)


def run_each(model, x, outputs):
    """`outputs` of `model` (added as graph outputs) for each image of `x`, one at a time
    (the batch is fixed to 1), concatenated along the batch."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "python"))
    import onnxruntime

    from ort_reference import session

    onnxruntime.set_default_logger_severity(3)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(o) for o in outputs)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"classic-models-{os.getpid()}.onnx"
    onnx.save(m, tmp)
    try:
        sess = session(tmp)
        name = sess.get_inputs()[0].name
        runs = [sess.run(None, {name: x[i : i + 1]}) for i in range(len(x))]
    finally:
        tmp.unlink()
    return [np.concatenate([r[k] for r in runs]) for k in range(len(outputs))]


def calibrate_batch_norms(model, x):
    """Sets every BatchNormalization's running mean and variance to the per-channel
    statistics of its input on the photos `x`, upstream first, so that each normalises what
    it sees (a data-dependent init). Without it the near-(0, 1) statistics leave the BNs
    near the identity and residual sums double the variance block after block: ShuffleNet's
    logits reach 10^4-10^5 and its probabilities are one-hot, which compares nothing."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    depth = {}

    def bn_depth(value):
        # Batch norms upstream of `value` along the longest path (iteratively: deep nets).
        stack = [value]
        while stack:
            v = stack[-1]
            if v in depth:
                stack.pop()
                continue
            n = producer.get(v)
            if n is None:
                depth[v] = 0
                stack.pop()
                continue
            ins = [i for i in n.input if i and i not in inits]
            todo = [i for i in ins if i not in depth]
            if todo:
                stack.extend(todo)
                continue
            d = max((depth[i] for i in ins), default=0)
            depth[v] = d + (n.op_type == "BatchNormalization")
            stack.pop()
        return depth[value]

    bns = [n for n in graph.node if n.op_type == "BatchNormalization"]
    waves = {}
    for n in bns:
        waves.setdefault(bn_depth(n.input[0]), []).append(n)
    for d in sorted(waves):
        wave = waves[d]
        values = run_each(model, x, [n.input[0] for n in wave])
        for n, v in zip(wave, values):
            axes = (0,) + tuple(range(2, v.ndim))
            for k, stat in ((3, v.mean(axes)), (4, v.var(axes))):
                t = inits[n.input[k]]
                t.CopyFrom(numpy_helper.from_array(stat.astype(np.float32), t.name))


def scale_logits(model, x, target_std=LOGIT_STD):
    """Scales the last weight layer (and its bias) so that the logits (the final Softmax's
    input, or the output where there is none) have standard deviation `target_std` on the photos `x`. Random networks without
    batch norm (max pooling raises the scale layer after layer) or with residual sums end
    with logits in the hundreds or more, whose softmax is one-hot."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    # DenseNet-121 has no Softmax: its output is the logits.
    logits = graph.output[0].name
    softmax = producer.get(logits)
    if softmax is not None and softmax.op_type == "Softmax":
        logits = softmax.input[0]
    # Back through what commutes with a positive scale, to the Conv / Gemm making the logits.
    n = producer.get(logits)
    while n is not None and n.op_type in SCALE_COMMUTES:
        n = producer.get(n.input[0])
    if n is None or n.op_type not in ("Conv", "Gemm"):
        return
    (y,) = run_each(model, x, [logits])
    c = target_std / float(y.std())
    for name in n.input[1:3]:
        # Inception v1 reshapes its classifier's weight before the Gemm.
        while name not in inits and name in producer and producer[name].op_type in (
            "Reshape", "Identity", "Unsqueeze", "Flatten"
        ):
            name = producer[name].input[0]
        t = inits[name]
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(c), t.name))


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


def cmd_make(out_dir, image_dir, *names):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Batch-norm statistics from photos the reference comparison does not use.
    x = photos(image_dir, CALIB_PREFIX, CALIB_PHOTOS, last=True)
    for k, name in enumerate(NAMES):
        if names and name not in names:
            continue
        model = onnx.load(light_dir() / f"light_{name}.onnx")
        randomize(model, SEED + k)
        calibrate_batch_norms(model, x)
        scale_logits(model, x)
        onnx.checker.check_model(model)
        tmp = out / f".{name}.onnx.tmp"
        onnx.save(model, tmp)
        tmp.replace(out / f"{name}.onnx")
        (out / f"{name}.preprocess.json").write_text(json.dumps(preprocess_sidecar(model), indent=2))
        print(f"{out / name}.onnx", flush=True)


def cmd_reference(model, image_dir, prefix, n, case_dir):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "python"))
    from ort_reference import session

    x = photos(image_dir, prefix, int(n))
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
