"""Helpers shared by the sub-command modules."""

from __future__ import annotations

import argparse

from . import HelpFormatter


def add_command(subparsers, name: str, help: str, description: str, examples: str) -> argparse.ArgumentParser:
    """Add a sub-command whose ``--help`` shows ``description`` and an Examples section."""
    return subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog="examples:\n" + examples.rstrip(),
        formatter_class=HelpFormatter,
    )


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    """``--dataset NAME`` (and an optional saved ``--view``) for commands that act on FiftyOne."""
    parser.add_argument("--dataset", required=True, help="name of the FiftyOne dataset")
    parser.add_argument("--view", default=None, help="name of a saved view of the dataset to restrict to")


def add_workers_arg(parser: argparse.ArgumentParser, what: str = "processes") -> None:
    """``--workers N``: CPU processes for the step (default 0 = all cores, ``os.cpu_count()``)."""
    parser.add_argument("--workers", type=int, default=0,
                        help=f"{what} (default 0: all cores); results do not depend on it")
