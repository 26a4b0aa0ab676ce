"""The one entry point: ``hyperbagel <command>``.

Each area of the package registers its own commands through an ``add_commands(subparsers)`` function listed in
``COMMAND_MODULES``; this file only wires them up and configures logging, which library code never does.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from hyperbagel import __version__
from hyperbagel.errors import HyperBagelError, Interrupted
from hyperbagel.files import DISK_FULL

# errors of the file system about a path (exists, is not a folder, is one, no permission, too long, read-only)
PATH_ERRORS = {errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.EROFS,
               errno.ENOENT}

# Modules exposing ``add_commands(subparsers)``. Order is the order of ``hyperbagel --help``.
COMMAND_MODULES = [
    "hyperbagel.commands.world",
    "hyperbagel.commands.models",
    "hyperbagel.commands.distill",
    "hyperbagel.commands.decode",
    "hyperbagel.commands.serve",
    "hyperbagel.quickstart",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyperbagel", description="Hyper-Bagel acceleration for unified multimodal models."
    )
    parser.add_argument("--version", action="version", version=f"hyperbagel {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        result = args.func(args)
    except HyperBagelError as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"interrupted: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno in PATH_ERRORS and err.filename:  # a path the user gave that cannot be used as asked
            print(f"error: {one_line(str(err.filename))}: {err.strerror}", file=sys.stderr)
            return 2
        if err.errno not in DISK_FULL:
            raise
        where = f" writing {err.filename}" if err.filename else ""
        print(f"error: no space left on the device{where}; free some space and run the same command again "
              "(checkpoints written before are intact)", file=sys.stderr)
        return 2
    return int(result or 0)


def one_line(text: str) -> str:
    """``text`` with every character a terminal would not print as itself (line breaks, control characters, as
    they may come from a user's path or prompt) escaped, so an error stays one readable line."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


if __name__ == "__main__":
    sys.exit(main())
