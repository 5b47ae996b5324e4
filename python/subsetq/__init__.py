"""Subset Quantization (SQ) for CNNs, from Python.

The ``subsetq`` pipeline as three functions, each doing what its ``subsetq`` subcommand
does, with the same defaults, so that the results are the same bytes:

* :func:`search` -- every Conv / Gemm / MatMul layer's chosen subset, alpha and error next to
  the baselines (``subsetq search``);
* :func:`quantize` -- a quantized ONNX model, with optional block reconstruction on
  calibration data (``subsetq quantize``);
* :func:`evaluate` -- top-1 / top-5 on labelled data, and agreement with a second model
  (``subsetq eval --json``).

A model is a path (``str`` or ``os.PathLike``) or ONNX ``bytes``. Images are a data path
(IDX file, image folder, image file or ``folder/pattern*.jpg``, preprocessed as the model's
``<model>.preprocess.json`` sidecar says) or an already preprocessed ``float32`` NCHW numpy
array.

The work runs in Rust with the GIL released. Progress goes to a bar on stderr
(``progress=True``), nowhere (``False``), or to a callable ``progress(stage, done, total,
message)``; an exception raised by the callable (or Ctrl-C) stops the work and is raised.

Errors: ``FileNotFoundError`` for a missing file, ``OSError`` when writing fails, ``ValueError``
for any other bad input, each with the command line's one-line message.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from . import _subsetq

__all__ = ["search", "quantize", "evaluate", "__version__"]
__version__: str = _subsetq.__version__

PathLike = Union[str, "os.PathLike[str]"]
#: A model: a path to an ONNX file, or the file's bytes.
Model = Union[PathLike, bytes, bytearray, memoryview]
#: Progress: ``True`` a bar on stderr, ``False`` nothing, or ``f(stage, done, total, message)``.
ProgressArg = Union[bool, Callable[[str, int, int, str], Any]]


def _model(model: Model, what: str = "model") -> Union[str, bytes]:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    try:
        return os.fspath(model)
    except TypeError:
        raise TypeError(
            f"{what}: expected a path (str or os.PathLike) or ONNX bytes, "
            f"got {type(model).__name__}"
        ) from None


def _path(path: Optional[PathLike]) -> Optional[str]:
    return None if path is None else os.fspath(path)


def _images(images: Any) -> Union[str, np.ndarray]:
    """A data path, or the images as a C-contiguous float32 array."""
    if isinstance(images, (str, os.PathLike)):
        return os.fspath(images)
    array = np.asarray(images)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(
            f"expected a path or a float32 N x C x H x W array of preprocessed images, "
            f"got an array of {array.dtype}"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def search(
    model: Model,
    bits: int = 4,
    uset: str = "paper",
    method: str = "fast",
    first_last_bits: int = 8,
    progress: ProgressArg = True,
) -> List[Dict[str, Any]]:
    """Searches every weight layer's codebook and measures the baselines on it.

    As ``subsetq search MODEL`` (one scale per layer, batch norms not folded): one dict per
    Conv / Gemm / MatMul layer, in graph order, as ``subsetq search --json`` lists them under
    ``layers``: ``name``, ``node``, ``op_type``, ``shape``, ``numel``, ``role``, ``bits``,
    ``quantizer``, ``subset`` (the chosen normalised magnitudes, ascending), ``alpha``,
    ``l2_error``, ``scale``, ``lloyd_max_error``, ``baselines``, ``search_seconds``,
    ``candidates``, ``fitted``.

    Args:
        model: ONNX model path or bytes.
        bits: bits per weight of the middle layers (sign + index), 2..=8.
        uset: universal set: ``paper``, ``sums:K:HI..LO`` or terms like ``[0,-1,-3,_]+[0,-2,-4,_]``.
        method: ``fast`` (the paper's search, exact), ``reference`` (the paper's, slow) or ``dp``.
        first_last_bits: bits of the first and last weight layers, kept uniform, 2..=8.
        progress: see the module's documentation.
    """
    return _subsetq.search(
        _model(model),
        bits=bits,
        uset=uset,
        method=method,
        first_last_bits=first_last_bits,
        progress=progress,
    )


def quantize(
    model: Model,
    output: Optional[PathLike] = None,
    bits: int = 4,
    quantizer: str = "sq",
    granularity: str = "channel",
    calib: Union[None, PathLike, np.ndarray] = None,
    calib_size: int = 256,
    iters: int = 500,
    batch: int = 32,
    lr: Optional[float] = None,
    seed: int = 0,
    abits: Optional[int] = None,
    weights: str = "codes",
    uset: str = "paper",
    method: str = "fast",
    first_last_bits: int = 8,
    preprocess: Optional[PathLike] = None,
    device: str = "cpu",
    avg_bits: Optional[float] = None,
    size_budget: Optional[int] = None,
    progress: ProgressArg = True,
) -> bytes:
    """Quantizes a model; returns the quantized ONNX model's bytes.

    As ``subsetq quantize MODEL -o OUTPUT``: batch norms folded, every weight layer replaced
    by its quantized values (``quantizer`` for the middle layers, uniform at
    ``first_last_bits`` for the first and last), the record of what was done in the model's
    metadata. With ``calib``, the model is reconstructed block by block on the calibration
    images. The same arguments and seed give the same bytes as the command line.

    Args:
        model: ONNX model path or bytes (read only).
        output: also write the model here (atomically; never over the input model).
        bits: bits per weight (sign + index), 2..=8.
        quantizer: ``sq``, ``uniform``, ``uniform-mse``, ``pot`` or ``apot``.
        granularity: weight scales per output ``channel`` (one codebook per layer still), or
            one per layer, ``tensor`` (the paper).
        calib: calibration images: a data path, preprocessed as the model's sidecar (or
            ``preprocess``) says, or an already preprocessed float32 N x C x H x W array.
            Turns on block reconstruction.
        calib_size: calibration images used (the first N), >= 1.
        iters: Adam steps per block.
        batch: calibration images per step, >= 1.
        lr: peak learning rate; ``None``: the paper's (1e-4 at 4+ bits, 5e-4 below).
        seed: seed of the calibration batch sampling.
        abits: also quantize activations (the input of every weight layer but the first) at
            these bits, 2..=16; needs ``calib``.
        weights: how the model stores the quantized weights: ``codes`` (b-bit codes, a table
            and per-channel scales, decoded by standard operators: the small model) or
            ``float`` (float32 values).
        uset: universal set, as for :func:`search`.
        method: search method, as for :func:`search`.
        first_last_bits: bits of the first and last weight layers, 2..=8.
        preprocess: a preprocessing file (schema subsetq-preprocess/1) for calibration images
            read from files, instead of the model's sidecar.
        device: where reconstruction computes: ``cpu``, or ``cuda`` (a build with the
            ``cuda`` feature).
        avg_bits: mixed precision: each middle layer's bits from {2, 3, 4, 8}, their mean at
            most this, least summed output error (measured on ``calib``, which it needs).
        size_budget: mixed precision for a budget of bytes of codes over all weight layers
            (instead of ``avg_bits``).
        progress: see the module's documentation.
    """
    return _subsetq.quantize(
        _model(model),
        _path(output),
        bits=bits,
        quantizer=quantizer,
        granularity=granularity,
        calib=None if calib is None else _images(calib),
        calib_size=calib_size,
        iters=iters,
        batch=batch,
        lr=lr,
        seed=seed,
        abits=abits,
        weights=weights,
        uset=uset,
        method=method,
        first_last_bits=first_last_bits,
        preprocess=_path(preprocess),
        device=device,
        avg_bits=avg_bits,
        size_budget=size_budget,
        progress=progress,
    )


def evaluate(
    model: Model,
    images: Union[PathLike, np.ndarray],
    labels: Union[None, Sequence[int], np.ndarray] = None,
    compare: Optional[Model] = None,
    batch: int = 100,
    limit: Optional[int] = None,
    preprocess: Optional[PathLike] = None,
    kernels: str = "float",
    progress: ProgressArg = True,
) -> Dict[str, Any]:
    """Runs a model on images: top-1 / top-5 and, with ``compare``, a second model's agreement.

    As ``subsetq eval MODEL --data IMAGES --json``, the same keys: ``model``, ``data``, ``n``,
    ``top1`` and ``top5`` in percent (``None`` without labels), ``seconds``,
    ``images_per_second``, ``kernels``, ``packed`` (the layers on each packed path, or
    ``None``); with ``compare`` also ``compare`` (its ``model``, ``top1``, ``top5``,
    ``seconds``, ``images_per_second``),
    ``agreement_top1``, ``top5_overlap`` (percent), ``output_mse`` and ``max_abs_diff``.

    Args:
        model: ONNX model path or bytes.
        images: a data path (labels found as the command line finds them), or preprocessed
            float32 N x C x H x W images.
        labels: one class index per image (overrides the labels found beside a data path).
        compare: a second model, run on the same inputs.
        batch: images per forward pass, 1..=100000.
        limit: use only the first N images.
        preprocess: a preprocessing file instead of the model's sidecar.
        kernels: ``float``, or ``packed``: a compact model's layers run from their codes.
        progress: see the module's documentation.
    """
    if labels is not None:
        labels = np.asarray(labels)
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"labels: expected integers, got an array of {labels.dtype}")
        labels = np.ascontiguousarray(labels, dtype=np.int64)
    return _subsetq.evaluate(
        _model(model),
        _images(images),
        labels,
        compare=None if compare is None else _model(compare, "compare"),
        batch=batch,
        limit=limit,
        preprocess=_path(preprocess),
        kernels=kernels,
        progress=progress,
    )
