"""``prunefl-edge profile``: measure this device's time-model coefficients and write a profile JSON.

    prunefl-edge profile --model conv2 --classes 10 --threads 4 --out ~/.config/prunefl/profile.json

The coordinator's time model and ``prunefl-sim --profile FILE`` read the file. Exit codes: 0 ok, 2 usage
error, 3 model error or the C core is missing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from prunefl_common.errors import ExitCode


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="conv2", help="conv2, mlp or a .onnx file (default conv2)")
    p.add_argument("--classes", type=int, default=10, help="output classes of a built-in model (default 10)")
    p.add_argument("--input-shape", default="1,28,28", help="C,H,W of a built-in model's input (default 1,28,28)")
    p.add_argument("--threads", type=int, default=1, help="C core threads (default 1)")
    p.add_argument("--densities", default="1,0.5,0.2,0.1,0.05,0.01", help="comma-separated densities to time")
    p.add_argument("--repeat", type=int, default=3, help="timed steps per point (median; default 3)")
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--comm-s-per-weight", type=float, default=None,
                   help="communication seconds per weight per round (default: the reference's 5.56e-6)")
    p.add_argument("--name", default="measured", help="profile name")
    p.add_argument("--out", required=True, help="profile JSON to write")


def run(args: argparse.Namespace) -> int:
    from prunefl_common.errors import InputError
    from prunefl_edge.inputs import load_model
    from prunefl_edge.profiler import REFERENCE_COMM_S_PER_WEIGHT, profile_network

    try:
        densities = [float(d) for d in args.densities.split(",") if d.strip()]
        shape = tuple(int(v) for v in args.input_shape.split(","))
        if len(shape) != 3 or args.threads < 1 or args.repeat < 1 or args.batch_size < 1:
            raise ValueError("--input-shape needs three ints; --threads, --repeat, --batch-size must be positive")
        if not densities or any(not 0 < d <= 1 for d in densities):
            raise ValueError("--densities must be in (0, 1]")
    except ValueError as e:
        print(f"prunefl-edge profile: error: {e}", file=sys.stderr)
        return ExitCode.USAGE
    try:
        spec, _ = load_model(args.model, args.classes, shape, 0)  # type: ignore[arg-type]
        from prunefl_edge.engine import Network, SGDConfig, build_info
    except InputError as e:
        print(f"prunefl-edge profile: model error: {e}", file=sys.stderr)
        return ExitCode.DATA
    except (ImportError, OSError) as e:
        print(f"prunefl-edge profile: the C core is not available ({e}); build it and set PRUNEFL_EDGE_LIB",
              file=sys.stderr)
        return ExitCode.DATA
    comm = args.comm_s_per_weight if args.comm_s_per_weight is not None else REFERENCE_COMM_S_PER_WEIGHT
    prof, sweeps = profile_network(spec, lambda s: Network(s, threads=args.threads), SGDConfig, densities,
                                   args.repeat, args.batch_size, comm_s_per_weight=comm, name=args.name,
                                   build=build_info(), threads=args.threads)
    prof.save(args.out)
    dev = prof.extra["device"]
    print(f"measured on {dev['cpu_model']} ({dev['machine']}, {dev['cpus']} CPUs), {dev['threads']} threads; "
          f"C core: {dev['build']}")
    print(f"intercept {prof.intercept_s:.4f} s per iteration; comm {prof.comm_s_per_weight:.3e} s per weight")
    for s in sweeps:
        print(f"  {s.name:>10} ({s.kind}, {s.size} weights): {s.slope:.3e} s per kept weight sparse, dense "
              f"{s.dense_layer_s:.4f} s, sparse below density {s.switch_density:.3f}")
    print(f"profile written to {args.out}")
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="prunefl-edge profile", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
