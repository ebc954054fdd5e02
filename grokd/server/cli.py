"""The ``grokd`` command. Each subcommand lives next to the code it drives and registers itself
through an ``add_cli(subparsers)`` function, so this file only lists them."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> the module that provides it (``add_cli(subparsers)``). A command line naming one
# imports that module alone, so `grokd serve` does not pay for the converter's or the benchmarks'
# imports; `grokd --help` (or no subcommand) imports them all.
SUBCOMMAND_MODULES = {
    "serve": "grokd.server.serve_cli",
    "chat": "grokd.server.chat_cli",
    "generate": "grokd.engine.cli",
    "convert": "grokd.weights.convert",
    "batch": "grokd.server.batch_cli",
    "bench": "grokd.benchmarks.cli",
    "plan": "grokd.server.plan_cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``grokd`` parser with every subcommand, or with ``only`` that one."""
    parser = argparse.ArgumentParser(prog="grokd", description="Self-hosted inference server for Grok weights")
    sub = parser.add_subparsers(dest="command", required=True)
    names = [only] if only in SUBCOMMAND_MODULES else list(SUBCOMMAND_MODULES)
    for name in names:
        module_name = SUBCOMMAND_MODULES[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
