"""The command-line side of the config contract: every subcommand that reads config takes the same
``--config`` and ``--set KEY.PATH=VALUE`` options (``serving.cli`` assembles the subcommands).

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_config_arguments(parser)
>>> config_from_args(parser.parse_args(["--set", "seed=11"])).seed
11
"""
from __future__ import annotations

import argparse

from configs.settings import Config, load_config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` and repeatable ``--set KEY.PATH=VALUE`` for every subcommand that reads config."""
    parser.add_argument("--config", default=None, help="config JSON (default: the shipped configs/config.json)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override one config value, e.g. --set simulation.num_vehicles=200")


def config_from_args(args: argparse.Namespace) -> Config:
    """The config named by ``--config`` (or the shipped one) with the ``--set`` overrides applied."""
    return load_config(args.config, args.overrides)
