"""``prunefl-edge data describe PATH`` and ``prunefl-edge model describe MODEL``: what a user has, before training.

Data: sizes, image shape, classes and class balance, natural users. Model: per layer its output shape,
parameters and density (a pruned ONNX file shows its density), and the total.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from prunefl_common.errors import ExitCode
from prunefl_common.model_spec import Conv2d, Linear
from prunefl_edge.datasets import FORMATS, DatasetError, load_dataset
from prunefl_edge.onnx_import import ImportedModel, OnnxImportError, import_model, load_onnx


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="mnist5k, digits, or a file/directory (IDX, LEAF JSON, CIFAR-10 binary, .npz)")
    p.add_argument("--format", choices=FORMATS, help="the format when it cannot be told from the path")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx file, or builtin:conv2 / builtin:mlp / builtin:vgg11")
    p.add_argument("--classes", type=int, default=None, help="output classes of a built-in model")


def _balance(y: np.ndarray, num_classes: int) -> str:
    counts = np.bincount(y, minlength=num_classes)
    shares = counts / max(1, counts.sum())
    body = " ".join(f"{c}:{n}" for c, n in enumerate(counts))
    return f"{body}\n  balance: min {shares.min():.1%}, max {shares.max():.1%} of the samples per class"


def describe_data(args: argparse.Namespace) -> int:
    try:
        d = load_dataset(args.path, args.format)
    except DatasetError as exc:
        print(f"prunefl-edge data describe: {exc}", file=sys.stderr)
        return ExitCode.DATA
    print(f"data set {d.name}: {len(d.y_train)} training samples of shape {d.input_shape}, {d.num_classes} classes")
    print(f"  pixel range [{d.x_train.min():.3f}, {d.x_train.max():.3f}]")
    print("  training labels: " + _balance(d.y_train, d.num_classes))
    if d.y_test is not None:
        print(f"  test split: {len(d.y_test)} samples; labels: " + _balance(d.y_test, d.num_classes))
    else:
        print("  no test split (the simulator holds out a fraction)")
    if d.groups is not None:
        sizes = np.array([len(g) for g in d.groups])
        print(f"  natural users: {len(sizes)}, samples per user min {sizes.min()}, median {int(np.median(sizes))}, "
              f"max {sizes.max()}")
    return ExitCode.OK


def _load_model(name: str, classes: int | None) -> ImportedModel:
    if name.startswith("builtin:"):
        from prunefl_edge.models import build_model

        try:
            return import_model(build_model(name.split(":", 1)[1], num_classes=classes), source=name)
        except ValueError as exc:
            raise OnnxImportError(str(exc)) from exc
    return load_onnx(name)


def describe_model(args: argparse.Namespace) -> int:
    try:
        m = _load_model(args.model, args.classes)
    except OnnxImportError as exc:
        print(f"prunefl-edge model describe: {exc}", file=sys.stderr)
        return ExitCode.DATA
    spec = m.spec
    shapes = spec.shapes()
    by_layer: dict[int, list[int]] = {}
    for i, p in enumerate(spec.param_shapes()):
        by_layer.setdefault(p.layer, []).append(i)
    print(f"model {spec.name}: input {spec.input_shape}, {spec.num_classes} outputs")
    print(f"  {'#':>3} {'layer':<12} {'kind':<10} {'output':<16} {'parameters':>12} {'density':>8}")
    kept_total = prunable_total = 0
    for li, layer in enumerate(spec.layers):
        params = by_layer.get(li, [])
        n = sum(m.weights[i].size for i in params)
        density = ""
        if isinstance(layer, (Linear, Conv2d)):
            w = m.weights[params[0]]
            kept = int(np.count_nonzero(w)) if m.masks else w.size
            kept_total += kept
            prunable_total += w.size
            density = f"{kept / w.size:.3f}"
        print(f"  {li:>3} {spec.layer_name(li):<12} {type(layer).__name__:<10} {str(shapes[li + 1]):<16} "
              f"{n:>12,} {density:>8}")
    print(f"  total parameters: {spec.num_parameters:,}; prunable weights kept: {kept_total:,} of "
          f"{prunable_total:,} ({kept_total / max(1, prunable_total):.1%})")
    return ExitCode.OK
