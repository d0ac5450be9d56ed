"""Pieces the command-line tools share."""

from __future__ import annotations

import argparse

PLUGINS_HELP = (
    "import paths of the task plugin modules the checkpoint needs (a checkpoint names them but never has "
    "them imported on its own say-so)"
)


def add_plugins_argument(parser: argparse.ArgumentParser, prefix: str = "", suffix: str = "") -> None:
    """``--plugins MODULE [MODULE ...]``, the trusted plugin modules to import before loading a checkpoint.

    Args:
        parser: The tool's parser.
        prefix: Text before the help (e.g. the mode the option applies to).
        suffix: Text after the help.
    """
    parser.add_argument(
        "--plugins", nargs="+", default=[], metavar="MODULE", help=f"{prefix}{PLUGINS_HELP}{suffix}"
    )
