"""Speech emotion recognition metrics and gender-fairness measures.

Every function takes integer class indices in ``0 .. num_classes - 1`` (numpy arrays or plain
sequences). Fairness functions also take one gender per sample, one of ``"F"``, ``"M"`` or
``"unknown"``; ``"unknown"`` samples count towards the overall metrics but belong to neither
fairness group. Classes absent from ``y_true`` never crash a metric: each function says how it
treats them.

Notation used in the docstrings: ``y`` is the true class, ``yhat`` the predicted class, ``g`` the
gender group, ``1[.]`` the indicator function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, recall_score

__all__ = [
    "GENDERS",
    "EvalMetrics",
    "confusion",
    "equal_opportunity",
    "evaluate",
    "macro_f1",
    "per_class_recall",
    "statistical_parity",
    "uar",
    "uar_gap",
    "wa",
]

# The two fairness groups; every other accepted value is ignored by the fairness measures.
GENDERS: tuple[str, str] = ("F", "M")
_ALLOWED_GENDERS = frozenset({"F", "M", "unknown"})

LabelsLike = Sequence[int] | np.ndarray
GendersLike = Sequence[str] | np.ndarray


def _labels(values: LabelsLike, name: str, num_classes: int | None = None) -> np.ndarray:
    """Converts labels to a 1-D int64 array, checking dtype and (optionally) the class range."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if num_classes is not None and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"{name} has labels outside 0..{num_classes - 1}")
    return arr


def _pair(
    y_true: LabelsLike, y_pred: LabelsLike, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validates a (y_true, y_pred) pair: same length, non-empty, labels in range."""
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    t = _labels(y_true, "y_true", num_classes)
    p = _labels(y_pred, "y_pred", num_classes)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} != {p.size}")
    if t.size == 0:
        raise ValueError("metrics need at least one sample")
    return t, p


def _genders(genders: GendersLike, n: int) -> np.ndarray:
    """Converts genders to a 1-D array of str, rejecting unknown spellings such as 'female'."""
    arr = np.asarray(genders, dtype=object)
    if arr.ndim != 1 or arr.size != n:
        raise ValueError(f"genders must be 1-D with {n} entries, got shape {arr.shape}")
    bad = {str(g) for g in arr if g not in _ALLOWED_GENDERS}
    if bad:
        # Silently dropping a misspelt group would quietly empty a fairness group.
        raise ValueError(f"genders must be 'F', 'M' or 'unknown'; got {sorted(bad)}")
    return arr


def uar(y_true: LabelsLike, y_pred: LabelsLike, num_classes: int) -> float:
    """Unweighted average recall (macro recall, balanced accuracy).

    ``UAR = (1/|K|) * sum_{c in K} recall_c`` with ``recall_c = #{y=c, yhat=c} / #{y=c}`` and
    ``K`` the set of classes present in ``y_true``. A class that never occurs in ``y_true`` has
    an undefined recall, so it is left out of the average rather than counted as 0.

    Computed with ``sklearn.metrics.recall_score(average="macro", labels=K)``. We pass ``labels``
    explicitly instead of calling ``balanced_accuracy_score`` because the latter builds ``K`` from
    the union of ``y_true`` and ``y_pred`` and then drops the undefined rows with a warning; the
    explicit label set gives the same value silently and documents the choice in the call.

    Args:
        y_true: True class indices, shape ``(n,)``.
        y_pred: Predicted class indices, shape ``(n,)``.
        num_classes: Number of classes ``C``; labels must lie in ``0 .. C-1``.

    Returns:
        UAR in ``[0, 1]``.
    """
    t, p = _pair(y_true, y_pred, num_classes)
    present = np.unique(t)
    return float(recall_score(t, p, labels=present, average="macro", zero_division=0))


def wa(y_true: LabelsLike, y_pred: LabelsLike) -> float:
    """Weighted accuracy, i.e. plain accuracy.

    ``WA = (1/n) * sum_k 1[yhat_k = y_k]``, which equals the class recalls weighted by class
    frequency (hence the name in the emotion recognition literature).

    Args:
        y_true: True class indices, shape ``(n,)``.
        y_pred: Predicted class indices, shape ``(n,)``.

    Returns:
        Accuracy in ``[0, 1]``.
    """
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def macro_f1(y_true: LabelsLike, y_pred: LabelsLike, num_classes: int) -> float:
    """Macro-averaged F1 score.

    ``F1_c = 2 * P_c * R_c / (P_c + R_c)`` averaged uniformly over ``K``, the classes present in
    ``y_true`` or ``y_pred``. A class in neither has no support and no predictions, so counting
    it as 0 would penalise the model for a class the data never exercised; it is left out. A class
    that is only predicted (a pure false positive) stays in and scores 0, as does any class whose
    precision or recall divides by zero (``sklearn.metrics.f1_score(..., zero_division=0)``).

    Args:
        y_true: True class indices, shape ``(n,)``.
        y_pred: Predicted class indices, shape ``(n,)``.
        num_classes: Number of classes ``C``; labels must lie in ``0 .. C-1``.

    Returns:
        Macro F1 in ``[0, 1]``.
    """
    t, p = _pair(y_true, y_pred, num_classes)
    present = np.union1d(t, p)
    return float(f1_score(t, p, labels=present, average="macro", zero_division=0))


def per_class_recall(
    y_true: LabelsLike, y_pred: LabelsLike, num_classes: int
) -> list[float | None]:
    """Recall of every class, ``recall_c = #{y=c, yhat=c} / #{y=c}``.

    Args:
        y_true: True class indices, shape ``(n,)``.
        y_pred: Predicted class indices, shape ``(n,)``.
        num_classes: Number of classes ``C``.

    Returns:
        A list of length ``C``; entry ``c`` is ``None`` when class ``c`` is absent from ``y_true``.
    """
    t, p = _pair(y_true, y_pred, num_classes)
    support = np.bincount(t, minlength=num_classes)
    hits = np.bincount(t[t == p], minlength=num_classes)
    return [float(hits[c] / support[c]) if support[c] else None for c in range(num_classes)]


def confusion(y_true: LabelsLike, y_pred: LabelsLike, num_classes: int) -> list[list[int]]:
    """Confusion matrix ``M[i][j] = #{y=i, yhat=j}`` over all ``C`` classes.

    Args:
        y_true: True class indices, shape ``(n,)``.
        y_pred: Predicted class indices, shape ``(n,)``.
        num_classes: Number of classes ``C``.

    Returns:
        ``C x C`` nested list of ints; rows are true classes, columns predicted classes.
    """
    t, p = _pair(y_true, y_pred, num_classes)
    mat = confusion_matrix(t, p, labels=np.arange(num_classes))  # (C, C)
    return [[int(v) for v in row] for row in mat]


def _group_masks(genders: GendersLike, n: int) -> dict[str, np.ndarray]:
    """Boolean masks for the fairness groups F and M (``"unknown"`` is in neither)."""
    g = _genders(genders, n)
    return {name: g == name for name in GENDERS}


def _uar_by_gender(
    t: np.ndarray, p: np.ndarray, masks: dict[str, np.ndarray], num_classes: int
) -> dict[str, float]:
    """UAR within each non-empty fairness group."""
    return {g: uar(t[m], p[m], num_classes) for g, m in masks.items() if m.any()}


def uar_gap(
    y_true: LabelsLike, y_pred: LabelsLike, genders: GendersLike, num_classes: int
) -> float | None:
    """Gender gap in UAR, ``|UAR(F) - UAR(M)|``.

    Each group's UAR averages over the classes present in that group's own ``y_true`` (see
    :func:`uar`). ``"unknown"`` samples are ignored.

    Args:
        y_true: True class indices, shape ``(n,)``.
        y_pred: Predicted class indices, shape ``(n,)``.
        genders: ``"F"``, ``"M"`` or ``"unknown"`` per sample, shape ``(n,)``.
        num_classes: Number of classes ``C``.

    Returns:
        The gap in ``[0, 1]``, or ``None`` if either group has no samples.
    """
    t, p = _pair(y_true, y_pred, num_classes)
    by_gender = _uar_by_gender(t, p, _group_masks(genders, t.size), num_classes)
    if len(by_gender) < len(GENDERS):
        return None
    return abs(by_gender["F"] - by_gender["M"])


def statistical_parity(y_pred: LabelsLike, genders: GendersLike, num_classes: int) -> float | None:
    """Statistical parity difference between the F and M prediction distributions.

    ``SP = 1/2 * sum_{c=0}^{C-1} |P(yhat=c | g=F) - P(yhat=c | g=M)|``, where
    ``P(yhat=c | g) = #{yhat=c, g} / #{g}``. This is the total-variation distance between the
    two groups' predicted-class distributions: 0 when they match, 1 when no class is ever
    predicted for both groups. ``"unknown"`` samples are ignored.

    Args:
        y_pred: Predicted class indices, shape ``(n,)``.
        genders: ``"F"``, ``"M"`` or ``"unknown"`` per sample, shape ``(n,)``.
        num_classes: Number of classes ``C``.

    Returns:
        SP in ``[0, 1]``, or ``None`` if either group has no samples.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    p = _labels(y_pred, "y_pred", num_classes)
    masks = _group_masks(genders, p.size)
    if not all(m.any() for m in masks.values()):
        return None
    dists = [np.bincount(p[m], minlength=num_classes) / m.sum() for m in masks.values()]
    return float(0.5 * np.abs(dists[0] - dists[1]).sum())


def _conditional_rates(t: np.ndarray, p: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-normalised confusion ``R[j, i] = P(yhat=i | y=j)``; rows of absent classes are 0."""
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)  # (true, pred)
    np.add.at(counts, (t, p), 1.0)
    support = counts.sum(axis=1, keepdims=True)  # (C, 1)
    return np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)


def equal_opportunity(
    y_true: LabelsLike, y_pred: LabelsLike, genders: GendersLike, num_classes: int
) -> float | None:
    """Equality-of-opportunity gap between F and M.

    ``EO = 1/(2|S|) * sum_{j in S} sum_{i=0}^{C-1} |P(yhat=i | y=j, F) - P(yhat=i | y=j, M)|``

    where ``S`` is the set of classes present in the ``y_true`` of BOTH groups. Each inner sum is
    the L1 distance between two probability rows, so it lies in ``[0, 2]``, and ``EO`` in
    ``[0, 1]`` (the mean total-variation distance between the groups' per-class prediction
    rows). The normaliser is ``2|S|`` rather than ``2C`` on purpose: a class missing from one
    group has an undefined conditional distribution there, and counting it as zero difference
    would dilute the gap whenever a test split lacks a class for one gender. With every class
    shared by both groups, ``|S| = C`` and this is exactly the PEFT-SER definition.
    ``"unknown"`` samples are ignored.

    Args:
        y_true: True class indices, shape ``(n,)``.
        y_pred: Predicted class indices, shape ``(n,)``.
        genders: ``"F"``, ``"M"`` or ``"unknown"`` per sample, shape ``(n,)``.
        num_classes: Number of classes ``C``.

    Returns:
        EO in ``[0, 1]``, or ``None`` if no class occurs in both groups (including when a group
        is empty).
    """
    t, p = _pair(y_true, y_pred, num_classes)
    masks = _group_masks(genders, t.size)
    shared = np.intersect1d(t[masks["F"]], t[masks["M"]])
    if shared.size == 0:
        return None
    rates = [_conditional_rates(t[m], p[m], num_classes)[shared] for m in masks.values()]
    return float(np.abs(rates[0] - rates[1]).sum() / (2 * shared.size))


@dataclass(frozen=True)
class EvalMetrics:
    """All evaluation metrics for one prediction set.

    Attributes:
        uar: Unweighted average recall over classes present in ``y_true``.
        wa: Weighted accuracy (plain accuracy).
        macro_f1: Macro F1 over classes present in ``y_true`` or ``y_pred``.
        uar_gap_gender: ``|UAR(F) - UAR(M)|`` or ``None``.
        statistical_parity_gender: TV distance of the groups' predictions, or ``None``.
        equal_opportunity_gender: Equality-of-opportunity gap, or ``None``.
        per_class_recall: Length-``C`` recalls, ``None`` for classes absent from ``y_true``.
        confusion: ``C x C`` counts, rows true, columns predicted.
        uar_by_gender: UAR per non-empty fairness group (keys among ``"F"``, ``"M"``).
        n: Number of samples (all genders, ``"unknown"`` included).
    """

    uar: float
    wa: float
    macro_f1: float
    uar_gap_gender: float | None
    statistical_parity_gender: float | None
    equal_opportunity_gender: float | None
    per_class_recall: list[float | None]
    confusion: list[list[int]]
    uar_by_gender: dict[str, float]
    n: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-typed deep copy (floats, ints, None, lists, dicts) that ``json.dumps`` accepts.

        Keys are exactly the field names. :func:`evaluate` already stores Python scalars, so
        ``asdict`` (which deep-copies the lists and the dict) is all that is needed.
        """
        return asdict(self)


def evaluate(
    y_true: LabelsLike, y_pred: LabelsLike, genders: GendersLike, num_classes: int
) -> EvalMetrics:
    """Computes every metric in :class:`EvalMetrics` for one prediction set.

    Args:
        y_true: True class indices, shape ``(n,)``.
        y_pred: Predicted class indices, shape ``(n,)``.
        genders: ``"F"``, ``"M"`` or ``"unknown"`` per sample, shape ``(n,)``.
        num_classes: Number of classes ``C``.

    Returns:
        The filled :class:`EvalMetrics`.
    """
    t, p = _pair(y_true, y_pred, num_classes)
    g = _genders(genders, t.size)
    by_gender = _uar_by_gender(t, p, _group_masks(g, t.size), num_classes)
    return EvalMetrics(
        uar=uar(t, p, num_classes),
        wa=wa(t, p),
        macro_f1=macro_f1(t, p, num_classes),
        uar_gap_gender=uar_gap(t, p, g, num_classes),
        statistical_parity_gender=statistical_parity(p, g, num_classes),
        equal_opportunity_gender=equal_opportunity(t, p, g, num_classes),
        per_class_recall=per_class_recall(t, p, num_classes),
        confusion=confusion(t, p, num_classes),
        uar_by_gender=by_gender,
        n=int(t.size),
    )
