"""The ``relaxed-e3nn`` command.

Each subcommand lives in its own private module exposing ``add_parser(subparsers)``, which
registers the subcommand and sets ``func`` (a callable taking the parsed namespace and
returning an exit code) as its default. Every subcommand module is imported to build the parser,
so they import torch, e3nn, ase and the rest of the package inside their functions: CLI startup
time (``relaxed-e3nn --version`` and ``--help`` stay well under a second of CPU).

Bad input (``ValueError``) and operating-system errors (``OSError``: a missing file, a full disk,
no permission, an output directory another run holds) end the command with one line
``relaxed-e3nn COMMAND: error: WHAT (PATH)`` on stderr and exit status 1, no traceback.
"""
import argparse
import importlib
import sys
from typing import List, Optional

from relaxed_e3nn import __version__

__all__ = ["main"]

# module name -> one subcommand each; order is the order of ``--help``.
_SUBCOMMAND_MODULES = ["_demo", "_train", "_evaluate", "_predict", "_analyze", "_generate"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relaxed-e3nn",
        description="Relaxed E(3)-equivariant networks: train, analyse learned symmetry breaking, demo.",
    )
    parser.add_argument("--version", action="version", version=f"relaxed-e3nn {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(f"relaxed_e3nn.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:  # bad input, a missing file, a full disk, no permission, a busy output_dir
        print(f"relaxed-e3nn {args.command}: error: {_describe(err)}", file=sys.stderr)
        return 1


def _describe(err: Exception) -> str:
    """The message of an error: an ``OSError`` as ``<what> (<path>)``, anything else as its text."""
    if isinstance(err, OSError) and err.strerror:
        paths = [str(p) for p in (err.filename, err.filename2) if p is not None]
        return f"{err.strerror} ({', '.join(paths)})" if paths else err.strerror
    return str(err)
