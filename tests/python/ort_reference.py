"""onnxruntime reference outputs for the Rust tests (engine and CLI).

Run with the project's venv (scripts/fetch-assets.sh creates it):

  ort_reference.py mnist  MODEL IDX_IMAGES N OUT_PROBS
      first N images of an IDX file, pixels/255, NCHW [N,1,28,28] -> probabilities (raw f32)
  ort_reference.py top1   MODEL IDX_IMAGES SCALE MEAN STD
      every image of an IDX images file (raw or gzip) with its labels beside it (standard
      name), x = (pixel * SCALE - MEAN) / STD in float32, NCHW [N,1,H,W]; prints the number
      of images and how many have the label as the top-1 class
  ort_reference.py images MODEL IMAGE_DIR PREFIX N OUT_INPUT OUT_LOGITS
      first N (sorted) images whose name starts with PREFIX, resized (shorter side 256,
      bilinear), center-cropped 224, (x-127)/128, NCHW RGB -> input tensor and logits (raw f32)
  ort_reference.py run    MODEL INPUT_F32 SHAPE OUT_F32
      one float input of SHAPE (comma separated) -> first output (raw f32); prints its shape
  ort_reference.py outputs MODEL INPUT_F32 SHAPE OUT_PREFIX
      one float input of SHAPE -> every output, OUT_PREFIX.K.f32 for output K; a model with
      a fixed batch runs row by row; prints one line per output: NAME SHAPE
  ort_reference.py time   MODEL INPUT_F32 SHAPE BATCH
      runs the input through onnxruntime (2 threads) in batches of BATCH; prints the seconds
      taken (session creation excluded) and the top-1 class of every row
  ort_reference.py ops    OUT_DIR
      writes single-operator test models with seeded random inputs and their outputs, and
      OUT_DIR/manifest.txt: one line per case: NAME X_SHAPE Y_SHAPE (comma-separated dims)

All raw files are little-endian float32, row-major.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def session(model_path):
    opts = ort.SessionOptions()
    # Plain kernels, no graph rewrites: the reference is the model as written.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


def run_model(model_path, x):
    sess = session(model_path)
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: x})[0]


def read_idx_images(path, n):
    data = Path(path).read_bytes()
    magic, count, rows, cols = np.frombuffer(data[:16], dtype=">u4")
    assert magic == 0x803, f"{path}: not an IDX image file (magic {magic:#x})"
    n = min(n, int(count))
    pixels = np.frombuffer(data[16 : 16 + n * rows * cols], dtype=np.uint8)
    return (pixels.reshape(n, 1, rows, cols).astype(np.float32) / np.float32(255.0))


def read_idx(path):
    import gzip

    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    ndims = data[3]
    dims = np.frombuffer(data[4 : 4 + 4 * ndims], dtype=">u4").astype(int)
    return np.frombuffer(data[4 + 4 * ndims :], dtype=np.uint8).reshape(dims)


def cmd_top1(model, images_path, scale, mean, std):
    images = Path(images_path)
    labels_path = images.with_name(images.name.replace("images-idx3", "labels-idx1"))
    images, labels = read_idx(images), read_idx(labels_path)
    x = images[:, None, :, :].astype(np.float32)
    x = (x * np.float32(scale) - np.float32(mean)) / np.float32(std)
    sess = session(model)
    name = sess.get_inputs()[0].name
    out = np.concatenate([sess.run(None, {name: x[i : i + 500]})[0] for i in range(0, len(x), 500)])
    correct = int((out.reshape(len(x), -1).argmax(axis=1) == labels).sum())
    print(f"{len(x)} {correct}")


def cmd_mnist(model, idx, n, out):
    x = read_idx_images(idx, int(n))
    y = run_model(model, x).astype("<f4")
    y.tofile(out)


def preprocess(path):
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    a = np.asarray(img, dtype=np.float32)
    a = (a - 127.0) / 128.0
    return a.transpose(2, 0, 1)


def cmd_images(model, image_dir, prefix, n, out_input, out_logits):
    files = sorted(p for p in Path(image_dir).iterdir() if p.name.startswith(prefix))[: int(n)]
    assert files, f"no images starting with {prefix!r} in {image_dir}"
    x = np.stack([preprocess(p) for p in files]).astype("<f4")
    x.tofile(out_input)
    run_model(model, x).astype("<f4").tofile(out_logits)
    print(",".join(str(d) for d in x.shape))


def cmd_run(model, input_path, shape, out):
    dims = [int(d) for d in shape.split(",")]
    x = np.fromfile(input_path, dtype="<f4").reshape(dims)
    y = run_model(model, x)
    y.astype("<f4").tofile(out)
    print(",".join(str(d) for d in y.shape))


def cmd_outputs(model, input_path, shape, out_prefix):
    dims = [int(d) for d in shape.split(",")]
    x = np.fromfile(input_path, dtype="<f4").reshape(dims)
    sess = session(model)
    (inp,) = sess.get_inputs()
    rows = [x[i : i + 1] for i in range(len(x))] if inp.shape[0] == 1 else [x]
    runs = [sess.run(None, {inp.name: r}) for r in rows]
    for k, out in enumerate(sess.get_outputs()):
        y = np.concatenate([r[k] for r in runs])
        y.astype("<f4").tofile(f"{out_prefix}.{k}.f32")
        print(out.name, ",".join(str(d) for d in y.shape))


def cmd_time(model, input_path, shape, batch):
    import time

    dims = [int(d) for d in shape.split(",")]
    x = np.fromfile(input_path, dtype="<f4").reshape(dims)
    sess = session(model)
    name = sess.get_inputs()[0].name
    batch = int(batch)
    start = time.perf_counter()
    outs = [sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    seconds = time.perf_counter() - start
    top1 = np.concatenate(outs).reshape(len(x), -1).argmax(axis=1)
    print(f"{seconds:.4f}")
    print(",".join(str(int(c)) for c in top1))


# ----------------------------------------------------------------------------- op cases

RNG = np.random.default_rng(20240603)


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def single(nodes, x_shape, inits=(), opset=13):
    graph = helper.make_graph(
        nodes,
        "case",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=list(inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    # (onnxruntime validates the model when it loads it)
    return model


def conv(x_shape, w_shape, bias=True, **attrs):
    inputs = ["x", "w"] + (["b"] if bias else [])
    inits = [init("w", rand(*w_shape, scale=0.3))] + ([init("b", rand(w_shape[0]))] if bias else [])
    return single([helper.make_node("Conv", inputs, ["y"], **attrs)], x_shape, inits)


def conv_transpose(x_shape, w_shape, bias=True, group=1, **attrs):
    inputs = ["x", "w"] + (["b"] if bias else [])
    inits = [init("w", rand(*w_shape, scale=0.3))]
    inits += [init("b", rand(w_shape[1] * group))] if bias else []
    node = helper.make_node("ConvTranspose", inputs, ["y"], group=group, **attrs)
    return single([node], x_shape, inits)


def pool(op, x_shape, **attrs):
    return single([helper.make_node(op, ["x"], ["y"], **attrs)], x_shape)


def unary(op, x_shape, **attrs):
    return single([helper.make_node(op, ["x"], ["y"], **attrs)], x_shape)


def binary(op, x_shape, c):
    return single([helper.make_node(op, ["x", "c"], ["y"])], x_shape, [init("c", c)])


def cases():
    c = {}
    c["conv_basic"] = conv([2, 3, 8, 8], [4, 3, 3, 3], pads=[1, 1, 1, 1])
    c["conv_stride2_asym_pads"] = conv([1, 3, 9, 9], [4, 3, 3, 3], False, strides=[2, 2], pads=[0, 0, 1, 1])
    c["conv_dilation"] = conv([1, 2, 10, 11], [3, 2, 3, 3], dilations=[2, 2], pads=[2, 1, 2, 1])
    c["conv_group2"] = conv([1, 4, 7, 7], [6, 2, 3, 3], group=2, pads=[1, 0, 0, 1])
    c["conv_depthwise_s2"] = conv([2, 5, 9, 9], [5, 1, 3, 3], group=5, strides=[2, 2], pads=[1, 1, 1, 1])
    c["conv_depthwise_5x5"] = conv([1, 4, 11, 11], [4, 1, 5, 5], group=4, strides=[2, 2], pads=[1, 1, 2, 2])
    c["conv_same_upper"] = conv([1, 2, 8, 8], [3, 2, 3, 3], auto_pad="SAME_UPPER", strides=[2, 2])
    c["conv_same_lower"] = conv([1, 2, 8, 8], [3, 2, 4, 4], auto_pad="SAME_LOWER", strides=[2, 2])
    c["conv_valid_rect"] = conv([1, 2, 9, 7], [3, 2, 3, 2], auto_pad="VALID", strides=[2, 1])
    c["conv_1x1"] = conv([2, 6, 5, 5], [4, 6, 1, 1])
    c["gemm_alpha_beta"] = single(
        [helper.make_node("Gemm", ["x", "b", "c"], ["y"], alpha=0.5, beta=2.0)],
        [5, 4], [init("b", rand(4, 3)), init("c", rand(3))])
    c["gemm_trans_ab"] = single(
        [helper.make_node("Gemm", ["x", "b", "c"], ["y"], transA=1, transB=1)],
        [4, 5], [init("b", rand(3, 4)), init("c", rand(1, 3))])
    c["gemm_no_c"] = single([helper.make_node("Gemm", ["x", "b"], ["y"], transB=1)], [2, 6], [init("b", rand(4, 6))])
    c["matmul_batch"] = binary("MatMul", [2, 3, 4], rand(4, 5))
    c["matmul_vector"] = binary("MatMul", [4], rand(4, 5))
    c["matmul_broadcast"] = binary("MatMul", [2, 1, 3, 4], rand(3, 4, 2))
    c["batchnorm"] = single(
        [helper.make_node("BatchNormalization", ["x", "s", "bb", "m", "v"], ["y"], epsilon=1e-3)],
        [2, 3, 4, 4],
        [init("s", rand(3)), init("bb", rand(3)), init("m", rand(3)), init("v", np.abs(rand(3)) + 0.1)])
    c["relu"] = unary("Relu", [2, 3, 4])
    c["clip_inputs"] = single(
        [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], [3, 4],
        [init("lo", np.float32(-0.5)), init("hi", np.float32(0.7))])
    c["clip_max_only"] = single(
        [helper.make_node("Clip", ["x", "", "hi"], ["y"])], [3, 4], [init("hi", np.float32(0.2))])
    c["clip_constant_nodes"] = single(
        [helper.make_node("Constant", [], ["lo"], value=helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0])),
         helper.make_node("Constant", [], ["hi"], value=helper.make_tensor("hi", TensorProto.FLOAT, [], [6.0])),
         helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], [2, 3, 4, 4])
    c["clip_opset6_attrs"] = single(
        [helper.make_node("Clip", ["x"], ["y"], min=-0.3, max=0.4)], [3, 4], opset=6)
    c["add_broadcast"] = binary("Add", [2, 3, 4, 5], rand(3, 1, 1))
    c["mul_broadcast"] = binary("Mul", [2, 3, 4, 5], rand(5))
    c["sub_scalar"] = binary("Sub", [2, 3], np.float32(1.5))
    c["div_broadcast"] = binary("Div", [2, 3], np.abs(rand(2, 1)) + 0.5)
    c["maxpool_2x2"] = pool("MaxPool", [1, 2, 6, 6], kernel_shape=[2, 2], strides=[2, 2])
    c["maxpool_3x3_pad"] = pool("MaxPool", [1, 2, 7, 7], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c["maxpool_ceil"] = pool("MaxPool", [1, 1, 8, 8], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    c["maxpool_asym_pads"] = pool("MaxPool", [1, 2, 7, 6], kernel_shape=[3, 2], strides=[2, 2], pads=[0, 0, 1, 1])
    c["maxpool_dilation"] = pool("MaxPool", [1, 1, 9, 9], kernel_shape=[2, 2], dilations=[2, 2])
    c["avgpool_pad_exclude"] = pool("AveragePool", [1, 2, 6, 6], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    c["avgpool_pad_include"] = pool("AveragePool", [1, 2, 6, 6], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)
    c["avgpool_asym_exclude"] = pool("AveragePool", [1, 2, 7, 7], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0])
    c["avgpool_asym_include"] = pool("AveragePool", [1, 2, 7, 7], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0], count_include_pad=1)
    c["avgpool_ceil"] = pool("AveragePool", [1, 1, 8, 8], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    c["global_avgpool"] = unary("GlobalAveragePool", [2, 3, 5, 7])
    # 1-D and 3-D windows.
    c["conv1d_dilated_asym"] = conv([2, 3, 11], [4, 3, 3], strides=[2], pads=[1, 2], dilations=[2])
    c["conv1d_group_same"] = conv([1, 4, 9], [6, 2, 4], False, group=2, auto_pad="SAME_LOWER", strides=[2])
    c["conv3d_group_asym"] = conv([1, 4, 5, 6, 7], [6, 2, 3, 2, 3], group=2, strides=[1, 2, 2],
                                  pads=[1, 0, 1, 0, 1, 1], dilations=[1, 1, 2])
    c["conv3d_depthwise_same"] = conv([2, 3, 4, 5, 6], [3, 1, 3, 3, 3], group=3, auto_pad="SAME_UPPER")
    c["maxpool1d_ceil_dil"] = pool("MaxPool", [1, 2, 11], kernel_shape=[3], strides=[2], pads=[1, 1],
                                   dilations=[2], ceil_mode=1)
    c["avgpool1d_exclude"] = pool("AveragePool", [2, 2, 9], kernel_shape=[3], strides=[2], pads=[1, 0])
    c["maxpool3d_ceil_pads"] = pool("MaxPool", [1, 2, 5, 6, 7], kernel_shape=[2, 3, 2], strides=[2, 2, 1],
                                    pads=[1, 1, 0, 0, 1, 1], ceil_mode=1)
    c["maxpool3d_dilation"] = pool("MaxPool", [1, 1, 6, 7, 8], kernel_shape=[2, 2, 3], dilations=[2, 1, 2])
    c["avgpool3d_exclude"] = pool("AveragePool", [1, 2, 5, 6, 7], kernel_shape=[3, 2, 3], strides=[2, 2, 2],
                                  pads=[1, 0, 1, 1, 1, 0])
    c["avgpool3d_include_ceil"] = pool("AveragePool", [1, 2, 5, 6, 7], kernel_shape=[3, 3, 2],
                                       strides=[2, 2, 2], pads=[1, 1, 0, 0, 1, 1], count_include_pad=1,
                                       ceil_mode=1)
    # Transposed convolutions.
    c["convT_basic"] = conv_transpose([2, 3, 5, 5], [3, 2, 3, 3])
    c["convT_stride2_asym_pads"] = conv_transpose([1, 3, 5, 6], [3, 4, 3, 3], False, strides=[2, 2],
                                                  pads=[1, 0, 0, 1])
    c["convT_output_padding"] = conv_transpose([1, 2, 4, 4], [2, 3, 3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                               output_padding=[1, 1])
    c["convT_output_shape"] = conv_transpose([1, 2, 4, 5], [2, 3, 3, 3], strides=[2, 2], output_shape=[8, 10])
    c["convT_group2_dilation"] = conv_transpose([1, 4, 4, 4], [4, 3, 3, 3], group=2, dilations=[2, 2])
    c["convT_same_upper"] = conv_transpose([1, 2, 4, 4], [2, 2, 3, 3], strides=[2, 2], auto_pad="SAME_UPPER")
    c["convT_1d"] = conv_transpose([1, 2, 7], [2, 3, 4], strides=[3], pads=[1, 2])
    c["convT_3d"] = conv_transpose([1, 2, 3, 4, 3], [2, 2, 2, 3, 2], strides=[2, 1, 2], pads=[1, 0, 0, 0, 1, 1])
    c["sign"] = unary("Sign", [2, 3, 4])
    c["shrink"] = unary("Shrink", [2, 3, 4], bias=0.25, lambd=0.4)
    c["flatten_axis1"] = unary("Flatten", [2, 3, 4, 5], axis=1)
    c["flatten_axis0"] = unary("Flatten", [2, 3, 4], axis=0)
    c["flatten_axis_neg"] = unary("Flatten", [2, 3, 4, 5], axis=-2)
    c["reshape_zero_minus1"] = single(
        [helper.make_node("Reshape", ["x", "s"], ["y"])], [2, 3, 4, 5],
        [init("s", np.array([0, -1, 5], dtype=np.int64))])
    c["transpose_nhwc"] = unary("Transpose", [2, 3, 4, 5], perm=[0, 2, 3, 1])
    c["transpose_default"] = unary("Transpose", [2, 3, 4])
    c["pad_constant"] = single(
        [helper.make_node("Pad", ["x", "p", "v"], ["y"])], [1, 2, 3, 4],
        [init("p", np.array([0, 0, 1, 2, 0, 1, 2, 0], dtype=np.int64)), init("v", np.float32(1.5))])
    c["pad_reflect"] = single(
        [helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect")], [1, 2, 4, 5],
        [init("p", np.array([0, 0, 2, 1, 0, 0, 1, 3], dtype=np.int64))])
    c["pad_edge"] = single(
        [helper.make_node("Pad", ["x", "p"], ["y"], mode="edge")], [2, 3, 4],
        [init("p", np.array([0, 1, 2, 0, 2, 1], dtype=np.int64))])
    c["concat_axis1"] = single(
        [helper.make_node("Concat", ["x", "c", "x"], ["y"], axis=1)], [2, 3, 4], [init("c", rand(2, 2, 4))])
    c["concat_axis_neg"] = single(
        [helper.make_node("Concat", ["c", "x"], ["y"], axis=-1)], [2, 3], [init("c", rand(2, 5))])
    # Resize as the converted TF.js models use it (bilinear up and down, half-pixel and
    # align-corners) and the other sampling / coordinate modes the engine reads.
    empty = init("roi", np.zeros(0, np.float32))

    def resize(x_shape, scales=None, sizes=None, opset=13, **attrs):
        inputs = ["x", "roi", "scales"] + (["sizes"] if sizes is not None else [])
        inits = [empty, init("scales", np.array(scales if scales else [], np.float32))]
        inits += [init("sizes", np.array(sizes, np.int64))] if sizes is not None else []
        return single([helper.make_node("Resize", inputs, ["y"], **attrs)], x_shape, inits, opset)

    c["resize_linear_half_pixel_up"] = resize([2, 3, 5, 4], [1, 1, 2, 2], mode="linear")
    c["resize_linear_half_pixel_down"] = resize([1, 2, 8, 10], [1, 1, 0.5, 0.5], mode="linear")
    c["resize_linear_align_corners_sizes"] = resize(
        [1, 2, 5, 7], sizes=[1, 2, 9, 4], mode="linear", coordinate_transformation_mode="align_corners")
    c["resize_linear_asymmetric_odd"] = resize(
        [1, 2, 3, 5], [1, 1, 1.7, 2.5], mode="linear", coordinate_transformation_mode="asymmetric")
    c["resize_linear_pytorch_half_pixel"] = resize(
        [1, 1, 4, 1], sizes=[1, 1, 7, 1], mode="linear",
        coordinate_transformation_mode="pytorch_half_pixel")
    c["resize_nearest_default"] = resize([1, 2, 3, 4], [1, 1, 2, 3])
    c["resize_nearest_floor_asymmetric"] = resize(
        [1, 2, 4, 6], [1, 1, 0.5, 1.5], nearest_mode="floor", coordinate_transformation_mode="asymmetric")
    c["resize_nearest_ceil_align_corners"] = resize(
        [2, 1, 3, 3], sizes=[2, 1, 5, 4], nearest_mode="ceil", coordinate_transformation_mode="align_corners")
    c["softmax_axis1"] = unary("Softmax", [2, 3, 4], axis=1)
    c["softmax_last"] = unary("Softmax", [2, 3, 4])
    c["softmax_opset11_coerce"] = single([helper.make_node("Softmax", ["x"], ["y"], axis=1)], [2, 3, 4], opset=11)
    c["identity_dropout"] = single(
        [helper.make_node("Dropout", ["x"], ["d"]), helper.make_node("Identity", ["d"], ["y"])], [2, 3])
    # A residual block in the style of EfficientNet-Lite0 (conv-bn-relu6, add).
    c["residual_block"] = single(
        [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], group=4),
         helper.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["b1"]),
         helper.make_node("Constant", [], ["lo"], value=helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0])),
         helper.make_node("Constant", [], ["hi"], value=helper.make_tensor("hi", TensorProto.FLOAT, [], [6.0])),
         helper.make_node("Clip", ["b1", "lo", "hi"], ["r1"]),
         helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
         helper.make_node("Add", ["c2", "x"], ["y"])],
        [2, 4, 6, 6],
        [init("w1", rand(4, 1, 3, 3)), init("s", rand(4)), init("bb", rand(4)), init("m", rand(4)),
         init("v", np.abs(rand(4)) + 0.1), init("w2", rand(4, 4, 1, 1)), init("b2", rand(4))])
    return c


def cmd_ops(out_dir):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, model in cases().items():
        path = out / f"{name}.onnx"
        onnx.save(model, path)
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        x = rand(*dims)
        y = run_model(path, x)
        x.astype("<f4").tofile(out / f"{name}.x.f32")
        y.astype("<f4").tofile(out / f"{name}.y.f32")
        shape = lambda s: ",".join(str(d) for d in s)
        lines.append(f"{name} {shape(x.shape)} {shape(y.shape)}")
    (out / "manifest.txt").write_text("\n".join(lines) + "\n")


def main():
    commands = {
        "mnist": cmd_mnist,
        "top1": cmd_top1,
        "images": cmd_images,
        "run": cmd_run,
        "outputs": cmd_outputs,
        "time": cmd_time,
        "ops": cmd_ops,
    }
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
