"""Class labels as a reader sees them, and the short example lists of data messages.

Labels that differ only by case, whitespace or invisible characters (``'sad'`` and ``'SAD '``)
would split one class in two; :func:`label_problem` finds them (``partition`` refuses such a
manifest). This module imports nothing of the project, so the manifest reader and the data
checks can both build on it.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence

EXAMPLES = 3  # values a message shows before "and N more"


def examples(values: Sequence[object], limit: int = EXAMPLES) -> str:
    """``'a', 'b', 'c' and 4 more``: the first ``limit`` values (repr) and a count of the rest."""
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def label_key(label: str) -> str:
    """What a label means to a reader: NFKC-normalised, casefolded, without whitespace or
    invisible format characters (Unicode category Cf: zero-width space, BOM, ...)."""
    text = unicodedata.normalize("NFKC", label)
    kept = (ch for ch in text if not ch.isspace() and unicodedata.category(ch) != "Cf")
    return "".join(kept).casefold()


def label_problem(labels: Iterable[str]) -> str | None:
    """Why a manifest's labels cannot be used as classes, or None when they can.

    Args:
        labels: The label of every row (repeats are fine).

    Returns:
        A message when two distinct labels have the same :func:`label_key` (e.g. ``'sad'`` and
        ``'SAD '``, or ``'sad'`` and ``'sad\\u200b'``), or a label is empty or only whitespace /
        invisible characters; else None.
    """
    groups: dict[str, set[str]] = defaultdict(set)
    for label in set(labels):
        groups[label_key(label)].add(label)
    if "" in groups:
        return f"label(s) {examples(sorted(groups['']))} are empty or invisible"
    clashes = [sorted(group) for group in groups.values() if len(group) > 1]
    if not clashes:
        return None
    text = "; ".join(examples(group, limit=8) for group in sorted(clashes))
    return (
        f"labels that differ only by case, whitespace or invisible characters would be "
        f"separate classes: {text}; write each class one way"
    )
