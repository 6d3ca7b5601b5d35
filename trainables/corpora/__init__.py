"""Corpus importers, one module each, registered in :data:`CORPORA` by name.

``prepare_corpus("iemocap", root, out)`` reads a corpus in its distributor's layout, writes a
manifest (:mod:`trainables.data.manifest`) and returns the summary text that
``emotune prepare`` prints. Each importer declares its own options (:class:`CorpusOption`), from
which ``emotune prepare`` makes its flags, so a new corpus is one module here (imported below).
See docs/CORPORA.md for each corpus's layout and protocol.
"""

from trainables.corpora import crema_d, iemocap, msp_improv, msp_podcast, ravdess  # noqa: F401
from trainables.corpora.base import (
    CORPORA,
    FOUR_CLASSES,
    ClassSet,
    Corpus,
    CorpusOption,
    Importer,
    PreparedCorpus,
    Skip,
    actor_folds,
    register_corpus,
    select_classes,
)
from trainables.corpora.output import (
    ROOT_COLUMN,
    prepare_corpus,
    rebase_manifest,
    side_manifest,
    summary,
    write,
)

__all__ = [
    "CORPORA",
    "FOUR_CLASSES",
    "ROOT_COLUMN",
    "ClassSet",
    "Corpus",
    "CorpusOption",
    "Importer",
    "PreparedCorpus",
    "Skip",
    "actor_folds",
    "prepare_corpus",
    "rebase_manifest",
    "register_corpus",
    "select_classes",
    "side_manifest",
    "summary",
    "write",
]
