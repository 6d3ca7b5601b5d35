"""``emotune prepare``: a corpus on disk to a manifest.

Its corpus-specific flags are not written here: each importer in ``trainables/corpora/``
declares its options (:class:`~trainables.corpora.CorpusOption`), and ``prepare`` offers the
union of them, passing a corpus only the options it declares.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.cli.shared import console

if TYPE_CHECKING:
    from trainables.corpora import Corpus, CorpusOption

_DEST = "corpus_option__"  # namespace of the corpus flags' values, apart from prepare's own


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value: object) -> str:
    """A default as help texts write it (switches: on/off)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _add_corpus_flag(
    parser: argparse.ArgumentParser, declared: list[tuple[Corpus, CorpusOption]]
) -> None:
    """Adds the flag of one option name, with the help text of every corpus declaring it.

    Raises:
        ValueError: If two corpora declare the option with another help, type or choices (one
            flag cannot serve both).
    """
    first = declared[0][1]
    shape = (first.help, first.choices, type(first.default))
    if any((o.help, o.choices, type(o.default)) != shape for _, o in declared):
        owners = ", ".join(c.name for c, _ in declared)
        raise ValueError(f"corpora {owners} declare option {first.name!r} differently")
    defaults = {_shown(o.default) for _, o in declared}
    default = (
        defaults.pop() if len(defaults) == 1
        else ", ".join(f"{c.title} {_shown(o.default)}" for c, o in declared)
    )
    titles = " / ".join(c.title for c, _ in declared)
    spec: dict[str, Any] = dict(
        dest=_DEST + first.name, default=None, help=f"{titles}: {first.help} (default: {default})"
    )
    if isinstance(first.default, bool):  # a switch; None (not given) keeps the corpus default
        on = any(o.default for _, o in declared)
        spec["action"] = argparse.BooleanOptionalAction if on else "store_true"
    elif first.choices:
        spec["choices"] = first.choices
    else:
        spec.update(type=type(first.default), metavar=first.name.upper())
    parser.add_argument(_flag(first.name), **spec)


def add_corpus_flags(parser: argparse.ArgumentParser) -> None:
    """Adds a flag for each option any registered corpus declares (same name: one flag)."""
    from trainables.corpora import CORPORA

    by_name: dict[str, list[tuple[Corpus, CorpusOption]]] = {}
    for name in CORPORA:
        corpus = CORPORA.get(name)
        for option in corpus.options:
            by_name.setdefault(option.name, []).append((corpus, option))
    for declared in by_name.values():
        _add_corpus_flag(parser, declared)


def corpus_options(args: argparse.Namespace, corpus: Corpus) -> dict[str, Any]:
    """The corpus flags given, by option name.

    Raises:
        ValueError: For a flag of another corpus, naming the flags this one takes.
    """
    taken = [o.name for o in corpus.options]
    options: dict[str, Any] = {}
    for key, value in vars(args).items():
        if not key.startswith(_DEST) or value is None:
            continue
        name = key.removeprefix(_DEST)
        if name not in taken:
            flags = ", ".join(_flag(n) for n in taken) or "none"
            raise ValueError(
                f"{_flag(name)} is not an option of {corpus.name}; its options: {flags}"
            )
        options[name] = value
    return options


def cmd_prepare(args: argparse.Namespace) -> int:
    """Imports the corpus, writes its manifest and prints the summary."""
    from trainables.corpora import CORPORA, prepare_corpus

    options = corpus_options(args, CORPORA.get(args.corpus))
    with console.status(f"reading {args.corpus} under {args.root}"):
        manifest, text = prepare_corpus(args.corpus, args.root, args.out, args.classes, **options)
    console.print(text)
    console.print(f"manifest: {manifest}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``prepare`` to the ``emotune`` sub-commands."""
    from trainables.corpora import CORPORA

    p = sub.add_parser("prepare", help="turn a corpus on disk into a manifest")
    p.add_argument("corpus", choices=CORPORA.names(), help="which corpus the folder holds")
    p.add_argument("--root", type=Path, required=True,
                   help="the corpus folder as distributed (required)")
    p.add_argument("--out", type=Path, required=True,
                   help="manifest to write (.parquet) (required)")
    p.add_argument("--classes", default="4", choices=["4", "all"],
                   help="4: neutral/happy/angry/sad; all: every labelled emotion "
                   "(default: %(default)s)")
    add_corpus_flags(p)
    p.set_defaults(handler=cmd_prepare)
