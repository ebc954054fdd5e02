"""The ``grokd`` command. Each subcommand lives next to the code it drives and registers itself
through an ``add_cli(subparsers)`` function, so this file only lists them."""

from __future__ import annotations

import argparse
import importlib
import sys

# module path -> provides add_cli(subparsers); imported lazily so `grokd --help` stays fast.
SUBCOMMAND_MODULES = (
    "grokd.server.serve_cli",  # serve
    "grokd.server.chat_cli",  # chat
    "grokd.engine.cli",  # generate
    "grokd.weights.convert",  # convert
    "grokd.server.batch_cli",  # batch
    "grokd.benchmarks.cli",  # bench
    "grokd.server.plan_cli",  # plan
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grokd", description="Self-hosted inference server for Grok weights")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
