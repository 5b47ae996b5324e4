"""Checks that assets/blazeface.onnx (scripts/convert_blazeface.py) computes what the
shipped BlazeFace model computes: both run in onnxruntime on real photos, the shipped one
on NHWC input as MediaPipe feeds it, the converted one on NCHW input made by the sidecar's
preprocessing. And that the detector does its job: the published anchor layout, decoded
here in numpy, puts a confident box on the face in a portrait.

Run: .venv/bin/python -m pytest tests/python/test_blazeface.py   (after scripts/fetch-assets.sh)
Missing assets skip the tests, or fail them when CI=true.
"""

from __future__ import annotations

import numpy as np

from test_assets import ASSETS, load_image, load_preprocess, ort_session, require

BLAZEFACE_ONNX = ASSETS / "blazeface.onnx"
SHIPPED = ASSETS / "original" / "blazeface" / "face_detection_front_128x128_barracuda.onnx"
AIBENCH_DIR = ASSETS / "data" / "ai-benchmark"
PHOTOS = sorted((AIBENCH_DIR / "segmentation").glob("*.jpg"))[:10]
PORTRAIT = AIBENCH_DIR / "classification" / "54.jpg"
# The conversion only reframes the graph (layout, Pad for Concat-with-zeros, names): the
# arithmetic is the same, so onnxruntime's results agree to float32 summation noise.
OUTPUT_ATOL = 1e-3  # max |converted - shipped| over logits and box offsets (|values| < ~300)
SHIPPED_NAMES = {"scores_16": "Identity:0", "scores_8": "Identity_1:0",
                 "boxes_16": "Identity_2:0", "boxes_8": "Identity_3:0"}


def test_blazeface_matches_the_shipped_model():
    require(BLAZEFACE_ONNX, SHIPPED, *PHOTOS)
    spec = load_preprocess(BLAZEFACE_ONNX)
    converted, shipped = ort_session(BLAZEFACE_ONNX), ort_session(SHIPPED)
    names = [o.name for o in converted.get_outputs()]
    assert sorted(names) == sorted(SHIPPED_NAMES)
    worst = 0.0
    for photo in PHOTOS:
        hwc = load_image(photo, spec)
        ours = dict(zip(names, converted.run(None, {"input": hwc.transpose(2, 0, 1)[None]})))
        theirs = dict(zip([o.name for o in shipped.get_outputs()],
                          shipped.run(None, {"input:0": hwc[None]})))
        for name, shipped_name in SHIPPED_NAMES.items():
            worst = max(worst, float(np.abs(ours[name] - theirs[shipped_name]).max()))
    assert worst <= OUTPUT_ATOL, worst


def test_blazeface_finds_the_face_in_a_portrait():
    require(BLAZEFACE_ONNX, PORTRAIT)
    spec = load_preprocess(BLAZEFACE_ONNX)
    decoder = spec["task"]["decoder"]
    sess = ort_session(BLAZEFACE_ONNX)
    out = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {"input": load_image(PORTRAIT, spec).transpose(2, 0, 1)[None]})))
    best = (0.0, None)
    for scores, boxes, grid, per_cell in zip(decoder["scores"], decoder["boxes"],
                                             decoder["grids"], decoder["anchors_per_cell"]):
        s = 1 / (1 + np.exp(-out[scores][0, :, 0].astype(np.float64)))
        a = int(s.argmax())
        if s[a] > best[0]:
            cell = a // per_cell
            cx, cy = (cell % grid + 0.5) / grid, (cell // grid + 0.5) / grid
            x, y, w, h = out[boxes][0, a, :4] / 128
            best = (s[a], (cx + x, cy + y, w, h))
    score, (cx, cy, w, h) = best
    # One face above the 0.5 MediaPipe keeps (0.74 measured), a plausible size, in the frame.
    assert score > 0.7, score
    assert 0.05 < w < 0.9 and 0.05 < h < 0.9, (w, h)
    assert 0 < cx < 1 and 0 < cy < 1, (cx, cy)
