"""Checks the `subsetq` Python package (python/, built with maturin) against the command line:
  * `quantize` writes and returns the same bytes as `subsetq quantize` for the same arguments
    and seed, without and with calibration data;
  * calibration from a numpy array (the IDX images preprocessed here, in numpy, as the model's
    sidecar says) gives the same model as from the IDX file;
  * `search` gives one report per weight layer, `evaluate` the same top-1 as
    `subsetq eval --json`;
  * bad input raises FileNotFoundError / ValueError with the command line's message;
  * progress callbacks get the stages, and an exception raised in one stops the work.

Run: .venv/bin/python -m pytest tests/python_api   (scripts/test.sh installs the package into
.venv first and builds target/release/subsetq; missing assets skip, or fail under CI=true)
"""

from __future__ import annotations

import _thread
import gzip
import inspect
import json
import os
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import subsetq
from subsetq import _subsetq

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "target" / "release" / "subsetq"
RESNET = ROOT / "models" / "fashion-resnet.onnx"
RESNET_PRE = ROOT / "models" / "fashion-resnet.preprocess.json"
FASHION = ROOT / "assets" / "data" / "fashion-mnist"
TRAIN_IMAGES = FASHION / "train-images-idx3-ubyte.gz"
TEST_IMAGES = FASHION / "t10k-images-idx3-ubyte.gz"
TEST_LABELS = FASHION / "t10k-labels-idx1-ubyte.gz"

CALIB = dict(calib_size=64, iters=20)  # small, so that the test stays quick
EVAL_N = 500
# fashion-resnet's float top-1 is 92.46 % on the 10k test split; on the first 500 images
# the float and the 4-bit models stay well above chance (10 %).
TOP1_RANGE = (80.0, 100.0)


def require(*paths: Path) -> None:
    """Skip (or, under CI=true, fail) when an asset has not been fetched or built."""
    missing = [str(p.relative_to(ROOT)) for p in paths if not p.exists()]
    if missing:
        msg = f"missing {', '.join(missing)}: run scripts/fetch-assets.sh and cargo build --release"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def cli(*args: str) -> None:
    subprocess.run([str(CLI), *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def read_idx_gz(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    zero, dtype, ndim = struct.unpack_from(">HBB", raw, 0)
    assert zero == 0 and dtype == 0x08, path
    dims = struct.unpack_from(f">{ndim}I", raw, 4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """N x H x W uint8 -> N x 1 x H x W float32 as the sidecar says: (p * scale - mean) / std,
    in float32, in that order (as the Rust loader computes it)."""
    spec = json.loads(RESNET_PRE.read_text())
    assert spec["color"] == "GRAY" and spec["resize"] is None and spec["crop"] is None
    scale = np.float32(spec["scale"])
    mean = np.float32(spec["mean"][0])
    std = np.float32(spec["std"][0])
    x = (pixels.astype(np.float32) * scale - mean) / std
    return x[:, None, :, :].astype(np.float32)


@pytest.fixture(scope="module")
def float_model() -> Path:
    require(RESNET, RESNET_PRE, CLI)
    return RESNET


def test_quantize_without_calibration_is_the_cli_bytes(float_model, tmp_path):
    cli("quantize", str(float_model), "-o", str(tmp_path / "cli.onnx"), "--bits", "4")
    out = tmp_path / "py.onnx"
    data = subsetq.quantize(str(float_model), out, bits=4, progress=False)
    expected = (tmp_path / "cli.onnx").read_bytes()
    assert data == expected
    assert out.read_bytes() == expected
    assert subsetq.quantize(float_model, bits=4, progress=False) == expected  # a Path
    # The output carries the model's preprocessing (from its sidecar): the same bytes from the
    # model as bytes with the sidecar given; without it, nothing to carry.
    assert "subsetq-preprocess" in _metadata(expected)
    raw = float_model.read_bytes()
    assert subsetq.quantize(raw, bits=4, preprocess=RESNET_PRE, progress=False) == expected
    assert "subsetq-preprocess" not in _metadata(subsetq.quantize(raw, progress=False))


def test_quantize_other_options_are_the_cli_bytes(float_model, tmp_path):
    cli("quantize", str(float_model), "-o", str(tmp_path / "cli.onnx"), "--bits", "3",
        "--quantizer", "apot", "--granularity", "tensor", "--first-last-bits", "6",
        "--weights", "float")
    data = subsetq.quantize(float_model, bits=3, quantizer="apot", granularity="tensor",
                            first_last_bits=6, weights="float", progress=False)
    assert data == (tmp_path / "cli.onnx").read_bytes()


def test_quantize_with_calibration_is_the_cli_bytes(float_model, tmp_path):
    require(TRAIN_IMAGES)
    cli("quantize", str(float_model), "-o", str(tmp_path / "cli.onnx"), "--bits", "4",
        "--calib", str(TRAIN_IMAGES), "--calib-size", str(CALIB["calib_size"]),
        "--iters", str(CALIB["iters"]))
    out = tmp_path / "py.onnx"
    data = subsetq.quantize(float_model, out, bits=4, calib=TRAIN_IMAGES, progress=False,
                            **CALIB)
    expected = (tmp_path / "cli.onnx").read_bytes()
    assert data == expected and out.read_bytes() == expected
    record = json.loads(_metadata(data)["subsetq"])
    assert record["reconstruction"]["calibration_samples"] == CALIB["calib_size"]


def test_calibration_array_is_the_idx_file(float_model):
    require(TRAIN_IMAGES)
    n = CALIB["calib_size"]
    x = preprocess(read_idx_gz(TRAIN_IMAGES)[:n])
    assert x.shape == (n, 1, 28, 28) and x.dtype == np.float32
    from_file = subsetq.quantize(float_model, calib=TRAIN_IMAGES, progress=False, **CALIB)
    from_array = subsetq.quantize(float_model, calib=x, progress=False, **CALIB)
    assert from_array == from_file
    # Only the first calib_size images are used, as from files; any float dtype and layout.
    more = preprocess(read_idx_gz(TRAIN_IMAGES)[: 2 * n]).astype(np.float64)
    assert subsetq.quantize(float_model, calib=np.asfortranarray(more), progress=False,
                            **CALIB) == from_file


def test_search_reports_every_weight_layer(float_model):
    reports = subsetq.search(float_model, bits=4, progress=False)
    assert isinstance(reports, list) and len(reports) == 17  # 16 Conv + 1 Gemm
    for r in reports:
        assert {"name", "subset", "alpha", "l2_error", "bits", "quantizer", "role"} <= set(r)
        assert r["subset"] and r["subset"] == sorted(r["subset"])
        assert r["alpha"] > 0 and r["l2_error"] >= 0
    assert [r["role"] for r in reports][0] == "first" and reports[-1]["role"] == "last"
    assert {r["quantizer"] for r in reports[1:-1]} == {"sq"}
    assert all(r["bits"] == 4 for r in reports[1:-1])
    assert reports[0]["bits"] == 8 and reports[-1]["bits"] == 8


def test_search_is_the_cli_json(float_model, tmp_path):
    cli("search", str(float_model), "--bits", "3", "--json", str(tmp_path / "s.json"))
    expected = json.loads((tmp_path / "s.json").read_text())["layers"]
    got = subsetq.search(float_model, bits=3, progress=False)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "search_seconds"} for r in rs]
    assert strip(got) == strip(expected)


def test_evaluate_is_the_cli_top1(float_model, tmp_path):
    require(TEST_IMAGES, TEST_LABELS)
    quantized = tmp_path / "w4.onnx"
    subsetq.quantize(float_model, quantized, bits=4, progress=False)
    cli("eval", str(float_model), "--data", str(TEST_IMAGES), "--limit", str(EVAL_N),
        "--compare", str(quantized), "--json", str(tmp_path / "eval.json"))
    expected = json.loads((tmp_path / "eval.json").read_text())

    got = subsetq.evaluate(float_model, TEST_IMAGES, limit=EVAL_N, compare=quantized,
                           progress=False)
    assert got["n"] == EVAL_N
    assert TOP1_RANGE[0] <= got["top1"] <= TOP1_RANGE[1]
    ignore = {"seconds", "images_per_second"}
    assert {k for k in got} == {k for k in expected}
    for key in expected:
        if key == "compare":
            assert {k: v for k, v in got[key].items() if k not in ignore} == {
                k: v for k, v in expected[key].items() if k not in ignore}
        elif key not in ignore:
            assert got[key] == expected[key], key

    # The same images as a preprocessed array, the labels as an int array.
    x = preprocess(read_idx_gz(TEST_IMAGES)[:EVAL_N])
    y = read_idx_gz(TEST_LABELS)[:EVAL_N].astype(np.int64)
    got = subsetq.evaluate(float_model, x, y, compare=quantized.read_bytes(), progress=False)
    assert got["n"] == EVAL_N
    for key in ("top1", "top5", "agreement_top1", "top5_overlap"):
        assert got[key] == expected[key], key
    assert got["output_mse"] == pytest.approx(expected["output_mse"], rel=1e-6)
    # Without labels: only the comparison.
    got = subsetq.evaluate(float_model, x, compare=quantized, progress=False)
    assert got["top1"] is None and got["agreement_top1"] == expected["agreement_top1"]


def test_missing_files_raise_file_not_found(float_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        subsetq.quantize(tmp_path / "nope.onnx", progress=False)
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        subsetq.search(str(tmp_path / "nope.onnx"), progress=False)
    with pytest.raises(FileNotFoundError):
        subsetq.quantize(float_model, calib=tmp_path / "no-images", progress=False)
    with pytest.raises(FileNotFoundError):
        subsetq.evaluate(float_model, tmp_path / "no-images", progress=False)


def test_bad_input_raises_value_error_with_the_cli_message(float_model, tmp_path):
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        subsetq.quantize(b"\x08\x01garbage bytes, not protobuf", progress=False)
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        subsetq.search(b"\xff" * 64, progress=False)
    for kwargs in ({"bits": 9}, {"bits": 1}, {"first_last_bits": 9}, {"calib_size": 0},
                   {"seed": -1}, {"quantizer": "nope"}, {"granularity": "row"},
                   {"method": "nope"}, {"uset": "sums:x"}, {"device": "tpu"},
                   {"weights": "int4"}):
        with pytest.raises(ValueError):
            subsetq.quantize(float_model, progress=False, **kwargs)
    with pytest.raises(ValueError, match="9 is not in 2..=8"):
        subsetq.search(float_model, bits=9, progress=False)
    with pytest.raises(ValueError, match="--abits needs --calib"):
        subsetq.quantize(float_model, abits=8, progress=False)
    with pytest.raises(ValueError, match="refusing to overwrite"):
        subsetq.quantize(float_model, float_model, progress=False)
    bad = np.zeros((2, 1, 28, 28), np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        subsetq.quantize(float_model, calib=bad, iters=1, progress=False)
    with pytest.raises(ValueError, match="N × C × H × W"):
        subsetq.quantize(float_model, calib=np.zeros((2, 28, 28), np.float32), progress=False)
    with pytest.raises(ValueError, match="labels"):
        subsetq.evaluate(float_model, np.zeros((3, 1, 28, 28), np.float32), [1, 2],
                         progress=False)
    with pytest.raises(TypeError):
        subsetq.quantize(12, progress=False)
    with pytest.raises(TypeError):
        subsetq.quantize(float_model, progress="yes")
    with pytest.raises(OSError):
        subsetq.quantize(float_model, tmp_path / "no-dir" / "q.onnx", progress=False)


def test_progress_callback_and_its_exceptions(float_model):
    seen = []
    subsetq.quantize(float_model, progress=lambda *a: seen.append(a))
    assert seen and all(isinstance(s, str) and isinstance(d, int) and isinstance(t, int)
                        and isinstance(m, str) for s, d, t, m in seen)
    assert seen[-1][:3] == ("search", 17, 17)

    class Stop(Exception):
        pass

    def stop(stage, done, total, message):
        if done == 3:
            raise Stop(stage)

    with pytest.raises(Stop, match="search"):
        subsetq.quantize(float_model, progress=stop)
    # The module works afterwards.
    assert subsetq.search(float_model, progress=True)


def test_the_gil_is_released_and_ctrl_c_stops_the_work(float_model):
    require(TRAIN_IMAGES)
    # Reconstruction takes seconds; meanwhile this thread keeps running Python.
    kwargs = dict(calib=TRAIN_IMAGES, progress=False, **CALIB)
    started = time.monotonic()
    subsetq.quantize(float_model, **kwargs)
    alone = time.monotonic() - started
    done = threading.Event()
    worker = threading.Thread(target=lambda: (subsetq.quantize(float_model, **kwargs), done.set()))
    worker.start()
    last, longest = time.monotonic(), 0.0
    while not done.is_set() and worker.is_alive():
        now = time.monotonic()
        longest, last = max(longest, now - last), now
    worker.join()
    assert done.is_set()
    assert longest < alone / 2, (longest, alone)

    # Ctrl-C (KeyboardInterrupt) a second into a long reconstruction (500 steps per block,
    # tens of seconds) stops it within a fraction of a second. A shell starts background
    # jobs with SIGINT ignored, and Python then installs no handler, so that interrupt_main
    # does nothing: install Python's own for the test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, _thread.interrupt_main)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            subsetq.quantize(float_model, **dict(kwargs, iters=500))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < 2.0


def test_wrapper_and_native_defaults_agree():
    """The documented defaults in subsetq/__init__.py are the native module's (the CLI's)."""
    for name in ("search", "quantize", "evaluate"):
        wrapper = inspect.signature(getattr(subsetq, name)).parameters
        native = inspect.signature(getattr(_subsetq, name)).parameters
        assert list(wrapper) == list(native), name
        for p in wrapper.values():
            if p.name == "progress":
                continue  # the package draws a bar by default; the native module is quiet
            assert p.default == native[p.name].default, (name, p.name)


def _metadata(onnx_bytes: bytes) -> dict:
    import onnx

    model = onnx.load_model_from_string(onnx_bytes)
    return {p.key: p.value for p in model.metadata_props}
