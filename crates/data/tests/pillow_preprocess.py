"""Reference preprocessing with Pillow, for crates/data/tests/real_assets.rs.

Usage: pillow_preprocess.py SIDECAR.json OUT.f32 IMAGE...

Writes the images as one little-endian float32 NCHW tensor, made by `load_image` of
tests/python/test_assets.py (the very function the project's effnet / ONNX checks use:
Pillow decode, convert, BILINEAR resize of the shorter side, center crop, normalise), so
the Rust loader is compared with exactly what the Python side feeds the models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "python"))

from test_assets import load_image  # noqa: E402


def main() -> None:
    sidecar, out, *images = sys.argv[1:]
    spec = json.loads(Path(sidecar).read_text())
    x = np.stack([load_image(Path(p), spec) for p in images])  # NHWC
    np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype="<f4").tofile(out)


if __name__ == "__main__":
    main()
