"""The ``emotune`` command line: synth, train, prepare, search, export, predict, demo.

This module builds the parser from the command groups (each module's ``register``) and runs a
command: logging, ``-v``, ``EMOTUNE_SMOKE`` caps, and one line per error.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from rich.logging import RichHandler
from rich.markup import escape

from search.cli import adapters, data, demo, run, searching
from search.cli.recipe import with_recipe
from search.cli.shared import console, one_line
from search.errors import SearchInterrupted

GROUPS = (run, data, searching, adapters, demo)  # sub-commands in this order in --help
SMOKE_ENV = "EMOTUNE_SMOKE"


def build_parser() -> argparse.ArgumentParser:
    """The ``emotune`` parser with every command group's sub-commands."""
    parser = argparse.ArgumentParser(prog="emotune", description=__doc__.split("\n", 1)[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and the traceback of an error (default: off)")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
    )
    for noisy in ("transformers", "urllib3", "filelock", "peft", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one ``emotune`` command; returns its exit code (2: error, 130: interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        args = with_recipe(parser, args, argv)
        apply_smoke(args)
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130
    except Exception as err:  # every failure a user sees is one line; -v adds the traceback
        if isinstance(err, SearchInterrupted):
            console.print(escape(one_line(err)), style="yellow", soft_wrap=True)
            return 130
        if args.verbose:
            console.print_exception()
        console.print(f"[red]error:[/red] {escape(one_line(err))}", soft_wrap=True)
        return 2


def apply_smoke(args: argparse.Namespace) -> None:
    """Under ``EMOTUNE_SMOKE=1`` cuts a command's sizes to its ``smoke`` caps and says so.

    This is how the tests run every command of README.md exactly as written (epochs, trials,
    corpus size and crops are capped; nothing else changes). Each sub-command declares its caps
    with ``set_defaults(smoke={option: cap})``.
    """
    caps: dict[str, int | float] = getattr(args, "smoke", None) or {}
    if os.environ.get(SMOKE_ENV, "") in ("", "0") or not caps:
        return
    cut = []
    for name, cap in caps.items():
        value = getattr(args, name, None)
        if value is None or value > cap:  # None: the default is unbounded (e.g. the space's)
            setattr(args, name, cap)
            cut.append(f"{name} {value} -> {cap}")
    console.print(
        f"[yellow]{SMOKE_ENV} is set: smoke run, sizes cut ({', '.join(cut) or 'none needed'})"
        "[/yellow]"
    )
