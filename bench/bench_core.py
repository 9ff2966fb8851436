#!/usr/bin/env python3
"""Benchmark of the C training core against PyTorch CPU, measured in the same run.

Cases (batch 20, threads equal on both sides):
  conv2_step   one full training step (forward, backward, masked SGD) of the PruneFL Conv-2 (FEMNIST,
               62 classes) with every prunable layer at the given density (random mask);
  fc1_fwd      the linear 3136->2048 layer alone, forward;
  fc1_fwdbwd   the same layer, forward + backward (input and weight gradients).
References: (a) PyTorch dense, (b) PyTorch sparse COO (`torch.sparse.mm`, the path of the PruneFL reference
code), (c) PyTorch sparse CSR where PyTorch supports the operation (null otherwise).

Ours runs each layer dense or sparse by its switch-over density; `--calibrate` (default on) first measures,
per prunable layer, the density where the sparse step becomes faster than the dense one, and prints it: that
measurement is where the per-layer threshold comes from (`prunefl-edge profile` does the same on a device).

It also reports the peak RSS of a process training Conv-2 at density 0.13 through our binding vs one doing
it with PyTorch dense: of the whole process, and of the training loop alone (the peak reset after setup).

    python bench/bench_core.py [--threads 2] [--repeat 10] [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("bench_core")

DENSITIES = (1.0, 0.5, 0.3, 0.13, 0.1, 0.05, 0.01)
BATCH = 20
LR = 0.05


def conv2_spec(num_classes: int = 62):  # noqa: ANN201 - ModelSpec, imported lazily
    from prunefl_common.model_spec import Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU

    return ModelSpec(
        input_shape=(1, 28, 28),
        layers=(
            Conv2d(32, (5, 5), padding=(2, 2)), ReLU(), MaxPool2d((2, 2)),
            Conv2d(64, (5, 5), padding=(2, 2)), ReLU(), MaxPool2d((2, 2)),
            Flatten(), Linear(2048), ReLU(), Linear(num_classes),
        ),
        name="conv2",
    )


def random_masks(shapes: list[tuple[int, ...]], density: float, rng: np.random.Generator) -> list[np.ndarray]:
    masks = []
    for shape in shapes:
        size = int(np.prod(shape))
        kept = int(round(density * size))
        flat = np.zeros(size, dtype=bool)
        flat[rng.choice(size, kept, replace=False)] = True
        masks.append(flat.reshape(shape))
    return masks


def time_ms(fn: Callable[[], object], repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


@dataclass
class Row:
    case: str
    density: float
    ours_ms: float
    torch_dense_ms: float | None
    torch_coo_ms: float | None
    torch_csr_ms: float | None
    threads: int

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


# ---------------------------------------------------------------------------------------------- ours
class OursConv2:
    """Conv-2 through the binding with every prunable layer at one density."""

    def __init__(self, threads: int, seed: int = 0) -> None:
        from prunefl_edge.engine import Network, SGDConfig

        self.spec = conv2_spec()
        self.net = Network(self.spec, threads=threads)
        self.net.init_weights(seed=seed)
        self.cfg = SGDConfig(lr=LR)
        rng = np.random.default_rng(seed)
        self.x = rng.random((BATCH, 1, 28, 28), dtype=np.float32)
        self.y = rng.integers(0, 62, BATCH).astype(np.int32)
        self.weight_params = [i for i, p in enumerate(self.net.param_shapes) if p.prunable]
        self.prunable_layers = self.spec.prunable_layers()

    def set_density(self, density: float, rng: np.random.Generator) -> None:
        shapes = [self.net.param_shapes[i].shape for i in self.weight_params]
        masks = random_masks(shapes, density, rng)
        self.net.set_masks(dict(zip(self.weight_params, masks)))
        self.net.init_weights(seed=1)  # newly kept weights start at zero: give them values again

    def force(self, mode: str | dict[int, float]) -> None:
        for layer in self.prunable_layers:
            if isinstance(mode, dict):
                self.net.set_sparse_threshold(layer, mode[layer])
            else:
                self.net.set_sparse_threshold(layer, 1.0 if mode == "sparse" else 0.0)

    def step(self) -> None:
        self.net.train_step(self.x, self.y, self.cfg)


def calibrate(ours: OursConv2, repeat: int, rng: np.random.Generator) -> dict[int, float]:
    """Per prunable layer, the highest density of the grid where the sparse step beats the dense one.

    Measured on the whole Conv-2 step with only that layer switched, so the time includes everything the
    switch changes (products, gradient at kept weights, SGD on CSR values)."""
    grid = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7)
    thresholds = {layer: 0.0 for layer in ours.prunable_layers}
    for density in grid:
        ours.set_density(density, rng)
        ours.force("dense")
        base = time_ms(ours.step, repeat)
        for layer in ours.prunable_layers:
            ours.net.set_sparse_threshold(layer, 1.0)
            t_sparse = time_ms(ours.step, repeat)
            ours.net.set_sparse_threshold(layer, 0.0)
            log.info("calibrate: layer %d density %.2f dense %.2f ms sparse %.2f ms", layer, density, base, t_sparse)
            if t_sparse < base:
                thresholds[layer] = max(thresholds[layer], density)
    return thresholds


# --------------------------------------------------------------------------------------------- torch
def torch_conv2_dense(torch, threads: int):  # noqa: ANN001, ANN201
    nn = torch.nn
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 2048), nn.ReLU(), nn.Linear(2048, 62),
    )
    return model


def torch_dense_step(torch, threads: int, density: float):  # noqa: ANN001, ANN201
    """Dense PyTorch step with masked weights (the mask is re-applied after the update, as dense FL does)."""
    model = torch_conv2_dense(torch, threads)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    masks = {}
    gen = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            masks[name] = (torch.rand(p.shape, generator=gen) < density).float()
            with torch.no_grad():
                p.mul_(masks[name])
    x = torch.rand(BATCH, 1, 28, 28)
    y = torch.randint(0, 62, (BATCH,))
    params = dict(model.named_parameters())
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        loss_fn(model(x), y).backward()
        opt.step()
        with torch.no_grad():
            for name, m in masks.items():
                params[name].mul_(m)

    return step


class TorchSparseConv2:
    """Conv-2 whose prunable weights are sparse tensors multiplied with torch.sparse.mm (as the PruneFL
    reference implementation does), convolutions through unfold; SGD on the sparse values."""

    def __init__(self, torch, threads: int, density: float, layout: str) -> None:  # noqa: ANN001
        self.torch = torch
        torch.set_num_threads(threads)
        gen = torch.Generator().manual_seed(2)
        shapes = [(32, 25), (64, 800), (2048, 3136), (62, 2048)]
        self.weights = []
        for m, k in shapes:
            dense = (torch.rand(m, k, generator=gen) - 0.5) * 0.1
            dense *= (torch.rand(m, k, generator=gen) < density).float()
            w = dense.to_sparse_coo() if layout == "coo" else dense.to_sparse_csr()
            self.weights.append(w.requires_grad_(True))
        self.biases = [torch.zeros(m, requires_grad=True) for m, _ in shapes]
        self.x = torch.rand(BATCH, 1, 28, 28)
        self.y = torch.randint(0, 62, (BATCH,))
        self.layout = layout

    def forward(self):  # noqa: ANN201
        t = self.torch
        f = t.nn.functional
        h = self.x
        for i, (cin, size) in enumerate(((1, 28), (32, 14))):
            cols = f.unfold(h, 5, padding=2)  # (B, cin*25, size*size)
            cols = cols.transpose(0, 1).reshape(cin * 25, -1)  # (K, B*P)
            out = t.sparse.mm(self.weights[i], cols) + self.biases[i][:, None]
            out = out.reshape(-1, BATCH, size, size).transpose(0, 1)
            h = f.max_pool2d(f.relu(out), 2)
        h = h.reshape(BATCH, -1).t()  # (3136, B)
        h = f.relu(t.sparse.mm(self.weights[2], h) + self.biases[2][:, None])
        logits = (t.sparse.mm(self.weights[3], h) + self.biases[3][:, None]).t()
        return f.cross_entropy(logits, self.y)

    def step(self) -> None:
        t = self.torch
        for p in self.weights + self.biases:
            p.grad = None
        self.forward().backward()
        with t.no_grad():
            for w in self.weights:
                g = w.grad.coalesce() if self.layout == "coo" else w.grad
                if g.values().shape != w.values().shape:
                    raise RuntimeError("sparse gradient pattern differs from the weight's")
                w.values().sub_(LR * g.values())
            for b in self.biases:
                b.sub_(LR * b.grad)


def fc1_cases(torch, threads: int, density: float, repeat: int, ours_threshold: float):  # noqa: ANN001, ANN201
    """fc1 (3136->2048) alone: ours, dense, COO and CSR, forward and forward+backward."""
    from prunefl_common.model_spec import Linear, ModelSpec
    from prunefl_edge.engine import Network

    torch.set_num_threads(threads)
    rng = np.random.default_rng(3)
    spec = ModelSpec(input_shape=(3136, 1, 1), layers=(Linear(2048),), name="fc1")
    net = Network(spec, threads=threads)
    net.init_weights(seed=3)
    mask = random_masks([(2048, 3136)], density, rng)[0]
    w = net.get_param(0)
    net.set_masks({0: mask})
    net.set_param(0, w)
    net.set_sparse_threshold(0, ours_threshold)
    x = rng.random((BATCH, 3136), dtype=np.float32)
    y = rng.integers(0, 2048, BATCH).astype(np.int32)
    net.enable_input_grad(True)
    ours_fwd = time_ms(lambda: net.logits(x), repeat)
    ours_fb = time_ms(lambda: net.forward_backward(x, y), repeat)
    net.close()

    wd = torch.from_numpy(w * mask).requires_grad_(True)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = torch.from_numpy(y.astype(np.int64))
    f = torch.nn.functional

    def dense_fwd() -> None:
        with torch.no_grad():
            f.linear(xt, wd)

    def dense_fb() -> None:
        wd.grad = None
        xt.grad = None
        f.cross_entropy(f.linear(xt, wd), yt).backward()

    res = {"dense": (time_ms(dense_fwd, repeat), time_ms(dense_fb, repeat))}
    for layout in ("coo", "csr"):
        sw = (wd.detach().to_sparse_coo() if layout == "coo" else wd.detach().to_sparse_csr()).requires_grad_(True)

        def sp_fwd(sw: torch.Tensor = sw) -> None:
            with torch.no_grad():
                torch.sparse.mm(sw, xt.t())

        def sp_fb(sw: torch.Tensor = sw) -> None:
            sw.grad = None
            xt.grad = None
            f.cross_entropy(torch.sparse.mm(sw, xt.t()).t(), yt).backward()

        out = []
        for fn in (sp_fwd, sp_fb):
            try:
                out.append(time_ms(fn, repeat))
            except (RuntimeError, NotImplementedError) as exc:
                log.info("torch %s cannot run fc1 %s: %s", layout, fn.__name__, str(exc).splitlines()[0])
                out.append(None)
        res[layout] = tuple(out)
    return (ours_fwd, ours_fb), res


def try_time(make: Callable[[], Callable[[], None]], repeat: int, what: str) -> float | None:
    try:
        fn = make()
        return time_ms(fn, repeat)
    except (RuntimeError, NotImplementedError) as exc:
        log.info("%s cannot run: %s", what, str(exc).splitlines()[0])
        return None


# ------------------------------------------------------------------------------------------------ RSS
def _vm_hwm_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024.0


def _reset_vm_hwm() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rss_child(kind: str, threads: int, steps: int) -> None:
    """Train Conv-2 at density 0.13 for a few steps and print two peak RSS in MiB: of the whole process (setup
    included: model build, weight init, masks) and of the training loop alone (the peak reset after setup, so it
    counts what is resident during the steps, the setup's freed temporaries not).

    VmHWM of /proc/self/status, not getrusage: Linux carries ru_maxrss over fork and exec, so a child would
    report its (larger) parent's peak."""
    if kind == "ours":
        ours = OursConv2(threads)
        ours.set_density(0.13, np.random.default_rng(0))
        step = ours.step
    else:
        import torch

        step = torch_dense_step(torch, threads, 0.13)
    step()  # the first step allocates the batch buffers: part of the loop
    setup = _vm_hwm_mib()
    loop = None
    if _reset_vm_hwm():
        for _ in range(steps):
            step()
        loop = _vm_hwm_mib()
    else:
        for _ in range(steps):
            step()
    whole = max(setup, _vm_hwm_mib())
    print(f"{whole} {loop if loop is not None else float('nan')}")


def measure_rss(kind: str, threads: int, steps: int) -> tuple[float, float]:
    """(whole-process peak, training-loop peak) in MiB; the second is NaN where the peak cannot be reset."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--rss-child", kind, "--threads", str(threads),
         "--steps", str(steps)],
        check=True, capture_output=True, text=True,
    )
    whole, loop = out.stdout.strip().splitlines()[-1].split()
    return float(whole), float(loop)


# ----------------------------------------------------------------------------------------------- main
def fmt(v: float | None) -> str:
    return "    -   " if v is None else f"{v:8.2f}"


def ratio(ref: float | None, ours: float) -> str:
    return "   -  " if ref is None else f"{ref / ours:6.2f}x"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads on both sides (default: all)")
    ap.add_argument("--repeat", type=int, default=10, help="timed repetitions per case (median reported)")
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and densities (a smoke run)")
    ap.add_argument("--no-calibrate", action="store_true", help="skip the per-layer switch-over measurement")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS comparison")
    ap.add_argument("--rss-child", choices=("ours", "torch"), help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.rss_child:
        rss_child(args.rss_child, args.threads, args.steps)
        return 0
    try:
        import torch
    except ImportError:
        print("bench_core needs PyTorch as its reference: pip install torch==2.13.0", file=sys.stderr)
        return 2
    from prunefl_edge.blas_check import blas_note
    from prunefl_edge.engine import build_info

    repeat = 3 if args.quick else args.repeat
    densities = (1.0, 0.1) if args.quick else DENSITIES
    rng = np.random.default_rng(0)
    print(f"# prunefl core: {build_info()}; torch {torch.__version__}; threads {args.threads}; batch {BATCH}")
    gemm, warning = blas_note(build_info())
    print(f"# dense GEMM: {gemm}" + (f"\n# WARNING: {warning}" if warning else ""))

    ours = OursConv2(args.threads)
    thresholds = {layer: 0.3 for layer in ours.prunable_layers}
    if not args.no_calibrate:
        print("# calibrating the per-layer dense/sparse switch-over density ...", file=sys.stderr)
        thresholds = calibrate(ours, max(2, repeat // 2), rng)
    print("# switch-over density per prunable layer (sparse at or below): "
          + ", ".join(f"layer {k}: {v:.2f}" for k, v in thresholds.items()))

    rows: list[Row] = []
    header = f"{'case':<12}{'density':>8}{'ours ms':>10}{'dense ms':>10}{'coo ms':>10}{'csr ms':>10}" \
             f"{'vs dense':>9}{'vs coo':>9}{'vs csr':>9}"
    print(header)
    for density in densities:
        ours.set_density(density, rng)
        ours.force(thresholds)
        t_ours = time_ms(ours.step, repeat)
        t_dense = try_time(lambda d=density: torch_dense_step(torch, args.threads, d), repeat, "torch dense")
        t_coo = try_time(lambda d=density: TorchSparseConv2(torch, args.threads, d, "coo").step, repeat, "torch coo")
        t_csr = try_time(lambda d=density: TorchSparseConv2(torch, args.threads, d, "csr").step, repeat, "torch csr")
        row = Row("conv2_step", density, t_ours, t_dense, t_coo, t_csr, args.threads)
        rows.append(row)
        print(f"{row.case:<12}{density:>8.3f}{fmt(t_ours)}  {fmt(t_dense)}  {fmt(t_coo)}  {fmt(t_csr)}"
              f"{ratio(t_dense, t_ours):>9}{ratio(t_coo, t_ours):>9}{ratio(t_csr, t_ours):>9}", flush=True)
    ours.net.close()

    fc1_layer = 7
    for density in densities:
        (o_fwd, o_fb), ref = fc1_cases(torch, args.threads, density, repeat, thresholds.get(fc1_layer, 0.3))
        for case, idx, t_ours in (("fc1_fwd", 0, o_fwd), ("fc1_fwdbwd", 1, o_fb)):
            row = Row(case, density, t_ours, ref["dense"][idx], ref["coo"][idx], ref["csr"][idx], args.threads)
            rows.append(row)
            print(f"{row.case:<12}{density:>8.3f}{fmt(t_ours)}  {fmt(row.torch_dense_ms)}  {fmt(row.torch_coo_ms)}"
                  f"  {fmt(row.torch_csr_ms)}{ratio(row.torch_dense_ms, t_ours):>9}"
                  f"{ratio(row.torch_coo_ms, t_ours):>9}{ratio(row.torch_csr_ms, t_ours):>9}", flush=True)

    if not args.no_rss:
        ours_whole, ours_loop = measure_rss("ours", args.threads, 3 if args.quick else 10)
        torch_whole, torch_loop = measure_rss("torch", args.threads, 3 if args.quick else 10)
        print(f"# peak RSS training Conv-2 at density 0.13, whole process (setup included): ours {ours_whole:.0f} MiB, "
              f"PyTorch dense {torch_whole:.0f} MiB ({torch_whole / ours_whole:.2f}x)")
        print(f"# peak RSS of the training loop alone (peak reset after setup): ours {ours_loop:.0f} MiB, "
              f"PyTorch dense {torch_loop:.0f} MiB ({torch_loop / ours_loop:.2f}x)")

    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump([r.as_dict() for r in rows], fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
