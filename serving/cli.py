"""The ``evtwin`` command line: a thin shell that parses arguments and calls into the packages.

    evtwin generate --config configs/config.json --out runs/default
    evtwin demo

Each area registers its own subcommands (``register(subparsers)`` in the modules listed in
``COMMAND_MODULES``); this file only assembles them, so areas never edit each other's code. The shared
``--config``/``--set`` options come from ``configs.cli``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rich.console import Console

from configs.settings import ConfigError

# Modules exposing ``register(subparsers) -> None``; each subcommand sets ``func(args) -> int``.
COMMAND_MODULES: tuple[str, ...] = (
    "simulation.commands",
    "simulation.import_command",
    "simulation.whatif.commands",
    "training.commands",
    "serving.commands",
    "serving.run",
)

console = Console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evtwin", description="Digital twins for electric-vehicle fleets")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/red] {exc}")
        return 2
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
