"""Sub-command groups that several areas add to (``train``, ``bench``, ``distill``)."""

from __future__ import annotations

import argparse


def group(subparsers, name: str, help: str, dest: str, metavar: str = "WHAT") -> argparse._SubParsersAction:
    """The sub-command group ``name``, created unless another module made it already (then its metavar stays)."""
    parser = subparsers.choices.get(name) or subparsers.add_parser(name, help=help)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest=dest, metavar=metavar, required=True)
