"""The paper's block reconstruction in plain PyTorch: the baseline of `subsetq bench recon`.

`subsetq bench recon` writes a job directory (see `crates/cli/src/bench_recon.rs`): the
BN-folded float model (`float.onnx`), every weight layer's searched quantizer (`job.json`:
levels, alpha, per-channel scales), the blocks subsetq reconstructed (their nodes and learned
layers, in order), the calibration samples and the labelled test set (raw little-endian
float32 / uint32). This script runs the same loop subsetq runs, block by block:

    w_q = m_c * calpha_c * Q(w / m_c * clv)   (Q: nearest of +-alpha * levels, straight through)
    loss = sum((y - t)^2) / (N * H * W) + lambda(t) * sum_layers ||w| - |w_q||_2
    Adam (torch.optim.Adam), lr on a cosine from the peak to 0, batches drawn by the same
    SplitMix64 as subsetq, the block's input from the model quantized so far, its target from
    the float model;

then scores top-1 on the test set and prints one JSON line: seconds per part (data, weights,
forward, backward, optimizer), the total, top-1. Needs torch and onnx (Debian:
python3-torch, python3-onnx); numpy comes with them.

    python3 scripts/recon_torch.py JOB_DIR [--threads N]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

MASK = (1 << 64) - 1


class SplitMix:
    """SplitMix64, as subsetq's sampler (crates/engine/src/reconstruct/sampler.rs)."""

    def __init__(self, seed: int):
        self.state = seed & MASK

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def batch(self, batch: int, n: int) -> list[int]:
        return [self.next() % n for _ in range(max(1, min(batch, n)))]


def lam(step: int, iters: int) -> float:
    """The regulariser's weight: 0 for the first 20 %, then 1e-2 falling linearly to 1e-3."""
    warmup = iters * 20 // 100
    if step < warmup or iters <= warmup:
        return 0.0
    t = (step - warmup) / max(iters - warmup, 1)
    return 1e-2 + (1e-3 - 1e-2) * t


def cosine_lr(peak: float, step: int, iters: int) -> float:
    return peak * 0.5 * (1.0 + math.cos(math.pi * step / iters))


def attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def conv_padding(a: dict, x: torch.Tensor, kernel) -> tuple[torch.Tensor, object]:
    pads = list(a.get("pads", [0] * (2 * len(kernel))))
    half = len(pads) // 2
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise SystemExit("error: auto_pad is not supported by this baseline")
    if pads[:half] == pads[half:]:
        return x, pads[:half]
    # Asymmetric: pad explicitly (F.pad takes the last axis first).
    flat = []
    for i in reversed(range(half)):
        flat += [pads[i], pads[i + half]]
    return F.pad(x, flat), [0] * half


def run_node(node, env: dict) -> None:
    """Computes one ONNX node on torch tensors in `env` (the operators these models use)."""
    op = node.op_type
    a = attrs(node)
    x = [env[i] if i else None for i in node.input]
    if op == "Conv":
        w = x[1]
        kernel = a.get("kernel_shape", list(w.shape[2:]))
        inp, pads = conv_padding(a, x[0], kernel)
        y = F.conv2d(
            inp,
            w,
            x[2] if len(x) > 2 else None,
            stride=a.get("strides", [1, 1]),
            padding=pads,
            dilation=a.get("dilations", [1, 1]),
            groups=a.get("group", 1),
        )
    elif op == "Gemm":
        A, B = x[0], x[1]
        if a.get("transA", 0):
            A = A.t()
        if a.get("transB", 0):
            B = B.t()
        y = a.get("alpha", 1.0) * (A @ B)
        if len(x) > 2 and x[2] is not None:
            y = y + a.get("beta", 1.0) * x[2]
    elif op == "MatMul":
        y = x[0] @ x[1]
    elif op == "Relu":
        y = F.relu(x[0])
    elif op == "Clip":
        lo = x[1] if len(x) > 1 and x[1] is not None else a.get("min")
        hi = x[2] if len(x) > 2 and x[2] is not None else a.get("max")
        y = torch.clamp(x[0], min=None if lo is None else float(lo), max=None if hi is None else float(hi))
    elif op == "Sigmoid":
        y = torch.sigmoid(x[0])
    elif op == "Add":
        y = x[0] + x[1]
    elif op == "Mul":
        y = x[0] * x[1]
    elif op == "GlobalAveragePool":
        y = x[0].mean(dim=(2, 3), keepdim=True)
    elif op in ("MaxPool", "AveragePool"):
        kernel = a["kernel_shape"]
        inp, pads = conv_padding(a, x[0], kernel)
        pool = F.max_pool2d if op == "MaxPool" else F.avg_pool2d
        y = pool(inp, kernel, stride=a.get("strides", kernel), padding=pads)
    elif op == "Flatten":
        axis = a.get("axis", 1)
        y = x[0].reshape(int(np.prod(x[0].shape[:axis])), -1)
    elif op == "Reshape":
        shape = [int(v) for v in x[1].tolist()]
        shape = [x[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
        y = x[0].reshape(shape)
    elif op == "Softmax":
        y = torch.softmax(x[0], dim=a.get("axis", -1))
    else:
        raise SystemExit(f"error: node {node.name or node.output[0]}: {op} is not supported by this baseline")
    env[node.output[0]] = y


class Quantizer:
    """One layer's searched quantizer: Q(x) = sign(x) * alpha * (nearest level to |x| / alpha)."""

    def __init__(self, spec: dict, weight: torch.Tensor):
        self.name = spec["name"]
        self.shape = list(spec["shape"])
        axis = spec["out_axis"]
        self.count = self.shape[axis]
        self.outer = int(np.prod(self.shape[:axis]))
        self.inner = int(np.prod(self.shape[axis + 1 :]))
        levels = np.array(spec["levels"], dtype=np.float64)
        alpha = float(spec["alpha"])
        self.midpoints = torch.from_numpy(alpha * (levels[:-1] + levels[1:]) * 0.5)
        self.values = torch.from_numpy((alpha * levels).astype(np.float32))
        self.scales = torch.tensor(spec["scales"], dtype=torch.float32).reshape(1, self.count, 1)
        self.weight = weight.reshape(self.outer, self.count, self.inner)
        self.normalized = self.weight / self.scales
        self.abs_w = self.weight.abs()
        self.sign = torch.sign(self.weight)

    def rounded(self, x: torch.Tensor) -> torch.Tensor:
        """The codebook's rounding of x (no gradient)."""
        idx = torch.searchsorted(self.midpoints, x.abs().double(), right=False)
        q = self.values[idx]
        return torch.where(x < 0, -q, torch.where(x == 0, torch.zeros_like(q), q))

    def straight_through(self, clv: torch.Tensor, calpha: torch.Tensor) -> torch.Tensor:
        xq = self.normalized * clv
        q = self.rounded(xq.detach()) + (xq - xq.detach())
        return q * (calpha.reshape(1, self.count, 1) * self.scales)

    def final(self, clv: torch.Tensor, calpha: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            q = self.rounded(self.normalized * clv)
            return (q * (calpha.reshape(1, self.count, 1) * self.scales)).reshape(self.shape)


def read_f32(path: Path, shape: list[int]) -> torch.Tensor:
    return torch.from_numpy(np.fromfile(path, dtype="<f4").reshape(shape).copy())


def run_graph(nodes, env: dict, wanted: str, x_name: str, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    outs = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            local = dict(env)
            local[x_name] = x[i : i + batch]
            for n in nodes:
                run_node(n, local)
            outs.append(local[wanted])
    return torch.cat(outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job", type=Path)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    job = json.loads((args.job / "job.json").read_text())
    model = onnx.load(str(args.job / job["float_model"]))
    graph = model.graph
    nodes = list(graph.node)
    float_env = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    for n in nodes:
        if n.op_type == "Constant":
            float_env[n.output[0]] = torch.from_numpy(numpy_helper.to_array(n.attribute[0].t).copy())
    nodes = [n for n in nodes if n.op_type != "Constant"]
    input_name = job["input"]
    quantizers = {s["name"]: Quantizer(s, float_env[s["name"]]) for s in job["layers"]}
    # The model quantized so far: every layer at its searched weights.
    quant_env = dict(float_env)
    for name, q in quantizers.items():
        quant_env[name] = q.final(torch.ones(q.outer * q.count * q.inner).reshape(q.outer, q.count, q.inner), torch.ones(q.count))
    calib = job["calibration"]
    samples = read_f32(args.job / calib["file"], [calib["n"], *calib["shape"]])
    iters, batch, peak, seed = job["iters"], job["batch"], job["lr"], job["seed"]

    parts = dict.fromkeys(["data", "weights", "forward", "backward", "optimizer"], 0.0)
    blocks_out = []
    started = time.perf_counter()
    for bi, block in enumerate(job["blocks"]):
        block_started = time.perf_counter()
        block_nodes = [graph.node[i] for i in block["nodes"]]
        inputs = samples if block["input"] == input_name else run_graph(nodes, quant_env, block["input"], input_name, samples)
        targets = run_graph(nodes, float_env, block["output"], input_name, samples)
        learned = [quantizers[name] for name in block["layers"]]
        clvs = [torch.ones(q.outer, q.count, q.inner, requires_grad=True) for q in learned]
        calphas = [torch.ones(q.count, requires_grad=True) for q in learned]
        opt = torch.optim.Adam(clvs + calphas, lr=peak, betas=(0.9, 0.999), eps=1e-8)
        sampler = SplitMix(seed + bi)
        channels = targets.shape[1] if targets.dim() > 1 else 1
        for step in range(iters):
            t0 = time.perf_counter()
            idx = torch.tensor(sampler.batch(batch, samples.shape[0]))
            x, t = inputs.index_select(0, idx), targets.index_select(0, idx)
            t1 = time.perf_counter()
            env = dict(quant_env)
            wqs = []
            for q, clv, ca in zip(learned, clvs, calphas):
                wq = q.straight_through(clv, ca)
                wqs.append(wq)
                env[q.name] = wq.reshape(q.shape)
            t2 = time.perf_counter()
            env[block["input"]] = x
            for n in block_nodes:
                run_node(n, env)
            y = env[block["output"]]
            loss = (y - t).square().sum() / max(y.numel() // channels, 1)
            weight = lam(step, iters)
            if weight > 0:
                reg = sum(((q.abs_w - wq * q.sign).square().sum().sqrt() for q, wq in zip(learned, wqs)))
                loss = loss + weight * reg
            t3 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t4 = time.perf_counter()
            for g in opt.param_groups:
                g["lr"] = cosine_lr(peak, step, iters)
            opt.step()
            t5 = time.perf_counter()
            for k, a, b in (("data", t0, t1), ("weights", t1, t2), ("forward", t2, t3), ("backward", t3, t4), ("optimizer", t4, t5)):
                parts[k] += b - a
        for q, clv, ca in zip(learned, clvs, calphas):
            quant_env[q.name] = q.final(clv.detach(), ca.detach())
        blocks_out.append({"output": block["output"], "seconds": time.perf_counter() - block_started})
    seconds = time.perf_counter() - started

    test = job["test"]
    images = read_f32(args.job / test["file"], [test["n"], *test["shape"]])
    labels = torch.from_numpy(np.fromfile(args.job / test["labels"], dtype="<u4").astype(np.int64))
    logits = run_graph(nodes, quant_env, graph.output[0].name, input_name, images, batch=500)
    top1 = float((logits.argmax(dim=1) == labels).double().mean() * 100.0)
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "seconds": seconds,
                "train_seconds": sum(parts.values()),
                "parts": parts,
                "blocks": blocks_out,
                "top1": top1,
                "n": int(labels.shape[0]),
            }
        )
    )


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        sys.exit(1)
