"""The ``evtwin`` command line: a thin shell that parses arguments and calls into the packages.

    evtwin generate --config configs/config.json --out runs/default
    evtwin demo

Each area registers its own subcommands (``register(subparsers)`` in the modules listed in
``COMMAND_MODULES``); this file only assembles them, so areas never edit each other's code.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from rich.console import Console

from configs.settings import Config, ConfigError, load_config

# Modules exposing ``register(subparsers) -> None``; each subcommand sets ``func(args) -> int``.
COMMAND_MODULES: tuple[str, ...] = (
    "simulation.commands",
    "simulation.import_command",
    "simulation.whatif.commands",
    "training.commands",
    "twins.commands",
    "serving.commands",
)

console = Console(stderr=True)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` and repeatable ``--set KEY.PATH=VALUE`` for every subcommand that reads config."""
    parser.add_argument("--config", default=None, help="config JSON (default: the shipped configs/config.json)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override one config value, e.g. --set simulation.num_vehicles=200")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


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
