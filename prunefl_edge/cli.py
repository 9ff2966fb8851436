"""``prunefl-edge``: the device-side command. Subcommands live in small modules and register here.

Exit codes: 0 success, 2 usage or configuration error, 3 bad input (data, model or profile file), 4 broker
unreachable, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from prunefl_common.errors import ExitCode
from prunefl_common.version import version

Handler = Callable[[argparse.Namespace], int]


def _data(sub: argparse._SubParsersAction) -> None:
    from prunefl_edge import cli_describe

    data = sub.add_parser("data", help="inspect a data set").add_subparsers(dest="action", required=True)
    p = data.add_parser("describe", help="sizes, shapes and class balance of a data set")
    cli_describe.add_data_arguments(p)
    p.set_defaults(handler=cli_describe.describe_data)


def _model(sub: argparse._SubParsersAction) -> None:
    from prunefl_edge import cli_describe

    model = sub.add_parser("model", help="inspect a model").add_subparsers(dest="action", required=True)
    p = model.add_parser("describe", help="layers, shapes, parameter counts and density of a model")
    cli_describe.add_model_arguments(p)
    p.set_defaults(handler=cli_describe.describe_model)


def _profile(sub: argparse._SubParsersAction) -> None:
    from prunefl_edge import cli_profile

    p = sub.add_parser("profile", help="measure this device's time-model coefficients into a profile file")
    cli_profile.add_arguments(p)
    p.set_defaults(handler=cli_profile.run)


def _agent(sub: argparse._SubParsersAction) -> None:
    from prunefl_edge import cli_edge

    p = sub.add_parser("start", help="run the edge agent: connect to the broker and execute the coordinator's tasks")
    cli_edge.add_arguments(p)
    p.set_defaults(handler=cli_edge.start)
    p = sub.add_parser("check", help="validate the configuration, the local data, the C core and the broker")
    cli_edge.add_arguments(p)
    p.set_defaults(handler=cli_edge.check)


# one line per subcommand
SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_data, _model, _profile, _agent)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunefl-edge", description="PruneFL-Edge on a device: inspect data and "
                                     "models, profile the device, run the edge agent.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"prunefl-edge {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in SUBCOMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
