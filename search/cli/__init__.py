"""The ``emotune`` command line, its own layer: nothing outside ``search.cli`` imports it.

``app`` builds the parser and runs a command; each command group is one module with a
``register(subparsers)``: ``run`` (synth, train), ``data`` (prepare), ``searching`` (search),
``adapters`` (export, predict), ``demo``; ``shared`` holds what several of them use. Heavy
imports (torch, Ray, MLflow) happen inside the handlers, so ``emotune --help`` stays fast.
"""

from search.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
