"""Shared pieces of the corpus importers: the registry, result types and small helpers.

An importer is a function ``prepare(root, classes="4", **options) -> PreparedCorpus`` registered
with :func:`register_corpus` under the corpus name, together with a :class:`CorpusOption` for
each of its ``options`` (``emotune prepare`` makes its flags from them). It reads the
distributor's own files under ``root``, returns one row per usable utterance (``path`` as an
absolute :class:`~pathlib.Path` under ``root``) and one :class:`Skip` per entry it could not use,
so nothing is dropped silently. Writing and summarising are generic
(:mod:`trainables.corpora.output`).
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from trainables.registry import Registry

logger = logging.getLogger(__name__)

FOUR_CLASSES: tuple[str, ...] = ("neutral", "happy", "angry", "sad")
CLASS_CHOICES: tuple[str, ...] = ("4", "all")
# A WAV file this small holds at most ~0.1 s of 16 kHz audio; only such files are opened to
# catch header-only recordings (CREMA-D's 1076_MTI_SAD_XX.wav) without reading every file.
_PROBE_BYTES = 4096

Row = dict[str, object]


@dataclass(frozen=True)
class Skip:
    """One corpus entry that did not make it into the manifest.

    Attributes:
        item: What was skipped: a path relative to the root, or ``file:line`` for a label line.
        reason: Why, phrased so that equal reasons group together in the summary.
    """

    item: str
    reason: str


@dataclass
class PreparedCorpus:
    """The result of one importer run, before it is written.

    Attributes:
        name: Registry name of the corpus.
        root: The corpus root every row path lies under.
        classes: The class set used (``"4"`` or ``"all"``).
        rows: Manifest rows of the main manifest; ``path`` is an absolute path under ``root``.
        skipped: Entries left out, each with a reason.
        notes: Free-text remarks for the summary (protocol, fallbacks, assumptions).
        extra: Rows for side manifests, by suffix (``{"test2": rows}`` is written to
            ``<out stem>.test2.parquet``).
        group_by: Column the summary table is broken down by (``fold``, ``split``, ...).
    """

    name: str
    root: Path
    classes: str
    rows: list[Row]
    skipped: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, list[Row]] = field(default_factory=dict)
    group_by: str = "fold"


Importer = Callable[..., PreparedCorpus]


@dataclass(frozen=True)
class CorpusOption:
    """One option an importer takes besides ``root`` and ``classes``, as plain data.

    ``emotune prepare`` turns it into the flag ``--<name>`` (``_`` written ``-``); the
    declaration carries no CLI code.

    Attributes:
        name: The importer's keyword argument.
        default: Its default, the same as in the importer's signature; its type is the option's
            type (a ``bool`` option is a switch).
        help: What the option does, for the CLI help (which adds the default).
        choices: The only values allowed, if the option has a fixed set.
    """

    name: str
    default: str | int | bool
    help: str
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Corpus:
    """A registered corpus: its importer and the options the importer takes.

    Attributes:
        name: Registry name (``crema-d``).
        title: How help texts name the corpus (``CREMA-D``).
        prepare: The importer.
        options: The importer's keyword arguments besides ``root`` and ``classes``.

    Raises:
        ValueError: If ``options`` are not exactly the importer's other arguments, with the
            same defaults (checked when the corpus is registered).
    """

    name: str
    title: str
    prepare: Importer
    options: tuple[CorpusOption, ...] = ()

    def __post_init__(self) -> None:
        parameters = inspect.signature(self.prepare).parameters
        taken = {n: p.default for n, p in parameters.items() if n not in ("root", "classes")}
        declared = {o.name: o.default for o in self.options}
        if declared != taken:
            raise ValueError(
                f"{self.name}: declared options {declared} differ from the importer's "
                f"arguments {taken}"
            )

    def check_options(self, options: Mapping[str, object]) -> None:
        """Raises a ValueError naming the accepted options when ``options`` has another."""
        accepted = [o.name for o in self.options]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(
                f"{self.name} does not take option(s) {', '.join(unknown)}; "
                f"it takes: {', '.join(accepted) or 'none'}"
            )


CORPORA: Registry[Corpus] = Registry("corpus")


def register_corpus(
    name: str, title: str, *options: CorpusOption
) -> Callable[[Importer], Importer]:
    """Decorator that registers an importer in :data:`CORPORA` with the options it takes.

    Args:
        name: Registry name, what users type (``emotune prepare crema-d``).
        title: How help texts name the corpus.
        *options: One declaration per keyword argument besides ``root`` and ``classes``.

    Returns:
        The decorator; it returns the importer unchanged.
    """

    def add(prepare: Importer) -> Importer:
        CORPORA.register(name)(Corpus(name, title, prepare, options))
        return prepare

    return add


@dataclass(frozen=True)
class ClassSet:
    """Maps a corpus's emotion codes to manifest labels for one ``--classes`` choice.

    Attributes:
        choice: ``"4"`` or ``"all"``.
        mapping: Code -> label for the codes kept.
        known: Code -> description for every code the corpus uses (kept or not).
    """

    choice: str
    mapping: Mapping[str, str]
    known: Mapping[str, str]

    def label(self, code: str) -> str | None:
        """The manifest label of ``code``, or None when the code is not kept."""
        return self.mapping.get(code)

    def reason(self, code: str) -> str:
        """The skip reason for a code that :meth:`label` rejected."""
        if code in self.known:
            return f"class {code!r} ({self.known[code]}) not in --classes {self.choice}"
        return f"unknown emotion code {code!r}"


def select_classes(
    choice: str,
    labels: Mapping[str, str],
    known: Mapping[str, str],
    four_extra: Mapping[str, str] | None = None,
) -> ClassSet:
    """Builds the class set of one corpus.

    Args:
        choice: ``"4"`` (neutral, happy, angry, sad) or ``"all"`` (every code in ``labels``).
        labels: Code -> label for every code usable as a class.
        known: Code -> description for every code the corpus uses, dropped ones included.
        four_extra: Codes merged into the 4-class set (IEMOCAP's ``exc`` -> ``happy``).

    Returns:
        The class set.

    Raises:
        ValueError: If ``choice`` is not ``"4"`` or ``"all"``.
    """
    choice = str(choice)
    if choice not in CLASS_CHOICES:
        raise ValueError(f"classes must be one of {', '.join(CLASS_CHOICES)}, not {choice!r}")
    if choice == "all":
        return ClassSet(choice, dict(labels), known)
    mapping = {code: label for code, label in labels.items() if label in FOUR_CLASSES}
    mapping.update(four_extra or {})
    return ClassSet(choice, mapping, known)


class AudioFiles:
    """Checks audio files using one directory listing per folder.

    Listing each folder once is much cheaper than a ``stat`` per file on network file systems
    (MSP-Podcast has >100k files in one folder), and it also tells which files exist that no
    label names.
    """

    def __init__(self) -> None:
        self._listings: dict[Path, frozenset[str]] = {}

    def names(self, folder: Path) -> frozenset[str]:
        """Names of the regular, non-hidden files in ``folder`` (empty if it does not exist)."""
        if folder not in self._listings:
            try:
                with os.scandir(folder) as entries:
                    found = frozenset(
                        e.name for e in entries if e.is_file() and not e.name.startswith(".")
                    )
            except (FileNotFoundError, NotADirectoryError):
                found = frozenset()
            self._listings[folder] = found
        return self._listings[folder]

    def problem(self, path: Path) -> str | None:
        """Returns None if ``path`` is a usable audio file, else a skip reason."""
        if path.name not in self.names(path.parent):
            return "audio file missing"
        if path.stat().st_size >= _PROBE_BYTES:
            return None
        try:
            frames = sf.info(str(path)).frames
        except (sf.LibsndfileError, RuntimeError) as exc:
            logger.debug("cannot read %s: %s", path, exc)
            return "unreadable audio file"
        return "empty audio file (0 samples)" if frames == 0 else None


def actor_folds(genders: Mapping[str, str], folds: int) -> dict[str, int]:
    """Deterministic, speaker-independent, gender-balanced folds of actors.

    Actors are ordered by gender (F, M, unknown) and then by id (numeric ids numerically), and
    dealt round-robin to folds ``1..folds``. One counter runs across genders, so every fold
    gets an equal share of each gender (+-1) and the fold sizes differ by at most one.

    Args:
        genders: Actor id -> ``F``, ``M`` or ``unknown``.
        folds: Number of folds (at least 3: partition needs distinct test and dev folds).

    Returns:
        Actor id -> fold number.

    Raises:
        ValueError: If ``folds`` is below 3 or above the number of actors.
    """
    if folds < 3 or folds > len(genders):
        raise ValueError(f"folds must be between 3 and the number of actors ({len(genders)})")
    rank = {"F": 0, "M": 1}
    order = sorted(genders, key=lambda a: (rank.get(genders[a], 2), _natural_key(a)))
    return {actor: index % folds + 1 for index, actor in enumerate(order)}


def _natural_key(text: str) -> tuple[object, ...]:
    """Sort key that orders digit runs numerically (``Actor_2`` before ``Actor_10``)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def first_existing(root: Path, candidates: Iterable[str]) -> Path | None:
    """The first of ``candidates`` (paths relative to ``root``) that exists, or None."""
    for candidate in candidates:
        path = root / candidate
        if path.exists():
            return path
    return None


def missing_layout(corpus: str, root: Path, expected: str, marker: str) -> FileNotFoundError:
    """A FileNotFoundError for a root that lacks the corpus layout, with a hint if possible.

    Args:
        corpus: Corpus name for the message.
        root: The root the user gave.
        expected: What should be under the root, in words.
        marker: A glob (relative to a candidate root) whose match identifies the real root; one
            level below ``root`` is searched so that ``--root`` pointing at the archive's
            parent folder gets a "did you mean" hint.

    Returns:
        The error, to be raised by the caller.
    """
    message = f"{corpus}: {root} does not look like the corpus root; expected {expected}"
    if root.is_dir():
        hits = sorted({root / p.relative_to(root).parts[0] for p in root.glob(f"*/{marker}")})
        if hits:
            message += f" (did you mean --root {hits[0]}?)"
    else:
        message += " (the folder does not exist)"
    return FileNotFoundError(message)


def relative_item(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as a POSIX string (for skip items)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def parse_gender(value: object) -> str:
    """Maps ``Male``/``Female``/``M``/``F`` (any case) to ``M``/``F``; anything else is unknown."""
    text = str(value or "").strip().lower()
    if text in ("m", "male"):
        return "M"
    if text in ("f", "female"):
        return "F"
    return "unknown"
