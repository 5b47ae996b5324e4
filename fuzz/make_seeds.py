"""Makes the fuzz seeds in fuzz/seeds/<target>/ from the real assets (scripts/fetch-assets.sh),
each small enough for fast fuzzing (at most 128 KiB).

Run from the repository root with the project venv: `bash scripts/fuzz.sh seeds`. Needs the
`subsetq` release binary (for the compact models) and onnx, numpy, Pillow.
"""

import gzip
import io
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"
ASSETS = ROOT / "assets"
MAX_SEED = 128 * 1024


def put(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    assert len(data) <= MAX_SEED, f"{target}/{name}: {len(data)} bytes"
    (d / name).write_bytes(data)


def light(model, keep=64):
    """The model with every initializer of more than `keep` elements replaced by a
    ConstantOfShape node of the same shape: the real graph, without the weight bytes."""
    g = model.graph
    nodes, kept = [], []
    for t in g.initializer:
        a = numpy_helper.to_array(t)
        if a.size <= keep or a.dtype != np.float32:
            kept.append(t)
            continue
        shape = numpy_helper.from_array(np.array(a.shape, np.int64), t.name + ".shape")
        kept.append(shape)
        value = helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [float(a.std() or 1e-2)])
        nodes.append(
            helper.make_node("ConstantOfShape", [shape.name], [t.name], name=t.name + ".fill", value=value)
        )
    del g.initializer[:]
    g.initializer.extend(kept)
    old = list(g.node)
    del g.node[:]
    g.node.extend(nodes + old)
    return model.SerializeToString()


def onnx_seeds():
    for path in [ROOT / "models/fashion-resnet.onnx", ASSETS / "mnist-cnn.onnx", ASSETS / "efficientnet-lite0.onnx"]:
        put("onnx_plan", path.stem + "-light.onnx", light(onnx.load(path)))
    wheel = Path(onnx.__file__).parent / "backend/test/data/light"
    for name in ["light_bvlc_alexnet", "light_vgg19", "light_squeezenet", "light_inception_v1"]:
        data = (wheel / f"{name}.onnx").read_bytes()
        put("onnx_plan", name + ".onnx", data)
        put("compact_fold", name + ".onnx", data)


def tiny_real_model():
    """Three convs with real weights: fashion-resnet's first conv and two small slices of
    later layers, with a BN after the first (so the planner and the fold see both)."""
    src = {t.name: numpy_helper.to_array(t) for t in onnx.load(ROOT / "models/fashion-resnet.onnx").graph.initializer}
    convs = [a for a in src.values() if a.ndim == 4]
    w1 = convs[0]  # [C, 1, 3, 3]
    c = w1.shape[0]
    w2 = convs[1][:c, :c]
    w3 = convs[2][:4, :c]
    init = [numpy_helper.from_array(np.ascontiguousarray(w), n) for w, n in [(w1, "w1"), (w2, "w2"), (w3, "w3")]]
    for n, v in [("g", 1.0), ("b", 0.0), ("m", 0.1), ("v", 1.0)]:
        init.append(numpy_helper.from_array(np.full([c], v, np.float32), n))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["a", "g", "b", "m", "v"], ["an"], name="bn1"),
        helper.make_node("Relu", ["an"], ["ar"], name="r1"),
        helper.make_node("Conv", ["ar", "w2"], ["b2"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b2"], ["br"], name="r2"),
        helper.make_node("Conv", ["br", "w3"], ["c3"], name="c3", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c3"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["y"], name="flat"),
    ]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 8, 8])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])
    g = helper.make_graph(nodes, "tiny", [x], [y], init)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m.SerializeToString()


def compact_seeds():
    tiny = tiny_real_model()
    put("onnx_plan", "tiny-real.onnx", tiny)
    put("compact_fold", "tiny-real.onnx", tiny)
    binary = ROOT / "target/release/subsetq"
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "tiny.onnx"
        src.write_bytes(tiny)
        # SQ at 2 / 3 / 4 bits (UINT4 codes), uniform at 6 (UINT8 codes).
        for bits, quantizer in [(2, "sq"), (3, "sq"), (4, "sq"), (6, "uniform")]:
            out = Path(d) / f"tiny-w{bits}-{quantizer}.onnx"
            subprocess.run(
                [binary, "quantize", src, "-o", out, "--bits", str(bits), "--quantizer", quantizer],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            data = out.read_bytes()
            put("compact_fold", out.name, data)
            put("onnx_plan", out.name, data)


def sidecar_seeds():
    for p in [ASSETS / "mnist-cnn.preprocess.json", ASSETS / "efficientnet-lite0.preprocess.json", ROOT / "models/fashion-resnet.preprocess.json"]:
        put("sidecar", p.name, p.read_bytes())


def idx_seed(images, labels, n):
    """The first `n` items of a real IDX pair, headers rewritten to count `n`."""
    def head(data, ndim):
        dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
        item = int(np.prod(dims[1:])) if ndim > 1 else 1
        return data[:4] + struct.pack(">I", n) + data[8 : 4 + 4 * ndim] + data[4 + 4 * ndim : 4 + 4 * ndim + n * item]
    return head(images, 3), head(labels, 1)


def with_split(images, labels):
    return struct.pack("<H", len(images)) + images + labels


def idx_seeds():
    mn = ASSETS / "data/mnist"
    img, lab = idx_seed((mn / "t10k-images-idx3-ubyte").read_bytes(), (mn / "t10k-labels-idx1-ubyte").read_bytes(), 3)
    put("idx", "mnist-3.raw", with_split(img, lab))
    put("idx", "mnist-3.gz", with_split(gzip.compress(img, mtime=0), gzip.compress(lab, mtime=0)))
    fm = ASSETS / "data/fashion-mnist"
    img, lab = idx_seed(
        gzip.decompress((fm / "t10k-images-idx3-ubyte.gz").read_bytes()),
        gzip.decompress((fm / "t10k-labels-idx1-ubyte.gz").read_bytes()),
        2,
    )
    put("idx", "fashion-2.mixed", with_split(gzip.compress(img, mtime=0), lab))


def image_seeds():
    fb = ASSETS / "data/foolbox"
    for name in ["cifar10_00_3.png", "cifar100_00_49.png"]:
        p = fb / name
        if p.exists():
            put("image", name, p.read_bytes())
    # ImageNet photos are 512² JPEGs (too big to fuzz fast): re-encoded at 48², as JPEG
    # (baseline and progressive) and as a palette PNG.
    photo = Image.open(sorted(fb.glob("imagenet_*.jpg"))[0]).convert("RGB").resize((48, 48))
    for name, kw in [("imagenet-48.jpg", {"format": "JPEG", "quality": 80}),
                     ("imagenet-48-progressive.jpg", {"format": "JPEG", "quality": 80, "progressive": True}),
                     ("imagenet-48-gray.jpg", {"format": "JPEG", "quality": 80})]:
        buf = io.BytesIO()
        (photo.convert("L") if "gray" in name else photo).save(buf, **kw)
        put("image", name, buf.getvalue())
    buf = io.BytesIO()
    photo.convert("P").save(buf, format="PNG")
    put("image", "imagenet-48-palette.png", buf.getvalue())
    buf = io.BytesIO()
    photo.convert("RGBA").save(buf, format="PNG")
    put("image", "imagenet-48-rgba.png", buf.getvalue())


def main():
    if SEEDS.exists():
        shutil.rmtree(SEEDS)
    onnx_seeds()
    compact_seeds()
    sidecar_seeds()
    idx_seeds()
    image_seeds()
    for d in sorted(SEEDS.iterdir()):
        files = list(d.iterdir())
        print(f"{d.name}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    sys.exit(main())
