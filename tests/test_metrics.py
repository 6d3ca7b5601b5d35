"""Hand-computed checks of the emotion metrics and the gender-fairness definitions."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from trainables.metrics import (
    EvalMetrics,
    confusion,
    equal_opportunity,
    evaluate,
    macro_f1,
    per_class_recall,
    statistical_parity,
    uar,
    uar_gap,
    wa,
)

# ---------------------------------------------------------------------------- overall metrics


def test_uar_differs_from_wa_on_imbalanced_data() -> None:
    # Class 0: 4/4 recalled; class 1: 1/2 recalled.
    # WA = 5 correct / 6 = 0.8333; UAR = (1 + 0.5) / 2 = 0.75.
    y_true = [0, 0, 0, 0, 1, 1]
    y_pred = [0, 0, 0, 0, 0, 1]
    assert wa(y_true, y_pred) == pytest.approx(5 / 6)
    assert uar(y_true, y_pred, num_classes=2) == pytest.approx(0.75)


def test_class_absent_from_y_true_is_not_averaged() -> None:
    # C = 4, but only classes 0 and 1 occur in y_true.
    # recall_0 = 1/2 (idx 0 right, idx 1 -> 1); recall_1 = 1/2 (idx 2 right, idx 3 -> 3).
    # UAR over present classes = (0.5 + 0.5) / 2 = 0.5; averaging over all 4 would give 0.25.
    y_true = [0, 0, 1, 1]
    y_pred = [0, 1, 1, 3]
    assert uar(y_true, y_pred, num_classes=4) == pytest.approx(0.5)
    assert per_class_recall(y_true, y_pred, num_classes=4) == [0.5, 0.5, None, None]


def test_macro_f1_over_classes_in_true_or_pred() -> None:
    # Same data as above; labels used = {0, 1, 3} (class 2 is in neither).
    # class 0: TP 1, FP 0, FN 1 -> P 1, R 1/2, F1 = 2*(1*0.5)/1.5 = 2/3
    # class 1: TP 1, FP 1 (true 0), FN 1 (pred 3) -> P 1/2, R 1/2, F1 = 1/2
    # class 3: TP 0, FP 1 -> F1 0 (zero_division=0)
    # macro = (2/3 + 1/2 + 0) / 3 = 7/18; including class 2 would give 7/24.
    y_true = [0, 0, 1, 1]
    y_pred = [0, 1, 1, 3]
    assert macro_f1(y_true, y_pred, num_classes=4) == pytest.approx(7 / 18)


def test_confusion_rows_true_cols_pred() -> None:
    y_true = [0, 0, 1, 1]
    y_pred = [0, 1, 1, 3]
    # Row i = true class i; entry j counts predictions of j. Rows 2 and 3 are empty.
    assert confusion(y_true, y_pred, num_classes=4) == [
        [1, 1, 0, 0],
        [0, 1, 0, 1],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]


def test_perfect_predictions() -> None:
    y = [2, 0, 1, 2]
    assert uar(y, y, 3) == wa(y, y) == macro_f1(y, y, 3) == 1.0


@pytest.mark.parametrize("seed", range(10))
def test_uar_matches_balanced_accuracy_when_all_classes_present(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 7))
    n = int(rng.integers(num_classes, 60))
    # Every class appears in y_true at least once; the rest is random.
    y_true = np.concatenate([np.arange(num_classes), rng.integers(0, num_classes, n)])
    y_pred = rng.integers(0, num_classes, y_true.size)
    expected = balanced_accuracy_score(y_true, y_pred)
    assert uar(y_true, y_pred, num_classes) == pytest.approx(expected)
    recalls = per_class_recall(y_true, y_pred, num_classes)
    assert np.mean(recalls) == pytest.approx(expected)


def test_lists_and_arrays_agree() -> None:
    y_true = [0, 1, 2, 2, 1]
    y_pred = [0, 2, 2, 1, 1]
    assert uar(y_true, y_pred, 3) == uar(np.array(y_true), np.array(y_pred, dtype=np.int32), 3)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "error"),
    [
        ([0, 1], [0], ValueError),  # length mismatch
        ([0, 3], [0, 1], ValueError),  # label outside 0..C-1
        ([0, -1], [0, 1], ValueError),  # negative label
        ([], [], ValueError),  # empty
        ([0.0, 1.0], [0, 1], TypeError),  # not class indices
    ],
)
def test_invalid_inputs_raise(y_true: list, y_pred: list, error: type[Exception]) -> None:
    with pytest.raises(error):
        uar(y_true, y_pred, num_classes=3)


# ---------------------------------------------------------------------------- fairness


def test_statistical_parity_hand_case_ignores_unknown() -> None:
    # F predictions [0, 0, 1, 1] -> P_F = (0.5, 0.5)
    # M predictions [0, 0, 0, 1] -> P_M = (0.75, 0.25)
    # SP = 1/2 * (|0.5 - 0.75| + |0.5 - 0.25|) = 1/2 * 0.5 = 0.25.
    # The two "unknown" samples predict class 1; counting them in M would give P_M = (.5, .5).
    y_pred = [0, 0, 0, 0, 1, 1, 0, 1, 1, 1]
    genders = ["F", "M", "F", "M", "F", "F", "M", "M", "unknown", "unknown"]
    assert statistical_parity(y_pred, genders, num_classes=2) == pytest.approx(0.25)


def test_statistical_parity_symmetric_identical_and_opposite() -> None:
    y_pred = [0, 0, 1, 1, 0, 0, 0, 1]
    genders = ["F"] * 4 + ["M"] * 4
    swapped = ["M"] * 4 + ["F"] * 4
    assert statistical_parity(y_pred, genders, 2) == statistical_parity(y_pred, swapped, 2)
    # Same distribution (1/3 per class) in both groups -> 0.
    assert statistical_parity([0, 1, 2, 2, 1, 0], ["F"] * 3 + ["M"] * 3, 3) == pytest.approx(0.0)
    # Disjoint supports: F always predicts 0, M always 2 -> 1/2 * (1 + 1) = 1.
    assert statistical_parity([0, 0, 2, 2], ["F", "F", "M", "M"], 3) == pytest.approx(1.0)


def test_equal_opportunity_two_class_hand_case() -> None:
    # F: y_true [0,0,1,1], y_pred [0,1,1,1]
    #    P(yhat | y=0, F) = (1/2, 1/2);  P(yhat | y=1, F) = (0, 1)
    # M: y_true [0,0,1,1], y_pred [0,0,0,1]
    #    P(yhat | y=0, M) = (1, 0);      P(yhat | y=1, M) = (1/2, 1/2)
    # j=0: |.5-1| + |.5-0| = 1;  j=1: |0-.5| + |1-.5| = 1;  total 2.
    # EO = 2 / (2C) = 2 / 4 = 0.5  (no factor would give 2, a 1/C factor 1).
    y_true = [0, 0, 1, 1] + [0, 0, 1, 1]
    y_pred = [0, 1, 1, 1] + [0, 0, 0, 1]
    genders = ["F"] * 4 + ["M"] * 4
    assert equal_opportunity(y_true, y_pred, genders, 2) == pytest.approx(0.5)
    swapped = ["M"] * 4 + ["F"] * 4
    assert equal_opportunity(y_true, y_pred, swapped, 2) == pytest.approx(0.5)


def test_equal_opportunity_normalises_by_shared_classes_only() -> None:
    # C = 3 classes, but class 2 only occurs in F's y_true, so S = {0, 1}, |S| = 2.
    # F: y_true [0,0,1,2], y_pred [0,1,1,2] -> rows y=0: (.5,.5,0), y=1: (0,1,0)
    # M: y_true [0,0,1],   y_pred [0,0,0]   -> rows y=0: (1,0,0),   y=1: (1,0,0)
    # j=0: .5 + .5 + 0 = 1;  j=1: 1 + 1 + 0 = 2;  total 3.
    # EO = 3 / (2 * 2) = 0.75  (dividing by 2 * num_classes would give 0.5).
    # The unknown sample (true 1 -> pred 1) would change M's y=1 row if counted.
    y_true = [0, 0, 1, 2, 0, 0, 1, 1]
    y_pred = [0, 1, 1, 2, 0, 0, 0, 1]
    genders = ["F", "F", "F", "F", "M", "M", "M", "unknown"]
    assert equal_opportunity(y_true, y_pred, genders, 3) == pytest.approx(0.75)


def test_equal_opportunity_identical_groups_is_zero_and_disjoint_is_none() -> None:
    y_true = [0, 1, 1, 0, 1, 1]
    y_pred = [1, 1, 0, 1, 1, 0]
    genders = ["F", "F", "F", "M", "M", "M"]
    assert equal_opportunity(y_true, y_pred, genders, 2) == pytest.approx(0.0)
    # F only has class 0, M only class 1: no shared class -> None.
    assert equal_opportunity([0, 0, 1, 1], [0, 1, 0, 1], ["F", "F", "M", "M"], 2) is None


def test_uar_gap_hand_case_ignores_unknown() -> None:
    # F: y_true [0,0,1,1], y_pred [0,0,1,0] -> recalls (1, 1/2)  -> UAR_F = 0.75
    # M: y_true [0,0,1,1], y_pred [0,1,0,0] -> recalls (1/2, 0)  -> UAR_M = 0.25
    # gap = |0.75 - 0.25| = 0.5. Unknown samples (all wrong) would lower both if counted.
    y_true = [0, 0, 1, 1] + [0, 0, 1, 1] + [0, 1]
    y_pred = [0, 0, 1, 0] + [0, 1, 0, 0] + [1, 0]
    genders = ["F"] * 4 + ["M"] * 4 + ["unknown"] * 2
    assert uar_gap(y_true, y_pred, genders, 2) == pytest.approx(0.5)


def test_fairness_is_none_when_a_group_is_missing() -> None:
    y_true = [0, 1, 0, 1]
    y_pred = [0, 1, 1, 1]
    genders = ["F", "F", "unknown", "F"]
    assert uar_gap(y_true, y_pred, genders, 2) is None
    assert statistical_parity(y_pred, genders, 2) is None
    assert equal_opportunity(y_true, y_pred, genders, 2) is None


def test_bad_gender_spelling_raises() -> None:
    with pytest.raises(ValueError, match="genders"):
        statistical_parity([0, 1], ["F", "female"], 2)
    with pytest.raises(ValueError, match="genders"):
        uar_gap([0, 1], [0, 1], ["F"], 2)  # wrong length


@pytest.mark.parametrize("seed", range(5))
def test_fairness_measures_lie_in_unit_interval(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, num_classes = 40, 4
    y_true = rng.integers(0, num_classes, n)
    y_pred = rng.integers(0, num_classes, n)
    genders = rng.choice(["F", "M", "unknown"], n)
    for value in (
        uar_gap(y_true, y_pred, genders, num_classes),
        statistical_parity(y_pred, genders, num_classes),
        equal_opportunity(y_true, y_pred, genders, num_classes),
    ):
        assert value is not None and 0.0 <= value <= 1.0


# ---------------------------------------------------------------------------- evaluate


EXPECTED_KEYS = {
    "uar",
    "wa",
    "macro_f1",
    "uar_gap_gender",
    "statistical_parity_gender",
    "equal_opportunity_gender",
    "per_class_recall",
    "confusion",
    "uar_by_gender",
    "n",
}


def test_evaluate_hand_case_and_to_dict_is_json() -> None:
    # Data from the UAR-gap case with C = 3 (class 2 never occurs anywhere).
    # Overall (unknown included): class 0 true at 5 samples, 3 right -> 3/5;
    # class 1 true at 5 samples, 1 right -> 1/5. UAR = (0.6 + 0.2) / 2 = 0.4; WA = 4/10.
    y_true = np.array([0, 0, 1, 1, 0, 0, 1, 1, 0, 1], dtype=np.int64)
    y_pred = np.array([0, 0, 1, 0, 0, 1, 0, 0, 1, 0], dtype=np.int64)
    genders = ["F"] * 4 + ["M"] * 4 + ["unknown"] * 2
    m = evaluate(y_true, y_pred, genders, num_classes=3)
    assert isinstance(m, EvalMetrics)
    assert m.n == 10
    assert m.uar == pytest.approx(0.4)
    assert m.wa == pytest.approx(0.4)
    assert m.per_class_recall == pytest.approx([0.6, 0.2, None])
    assert m.confusion == [[3, 2, 0], [4, 1, 0], [0, 0, 0]]
    assert m.uar_by_gender == pytest.approx({"F": 0.75, "M": 0.25})
    assert m.uar_gap_gender == pytest.approx(0.5)
    # F preds (3/4, 1/4, 0), M preds (3/4, 1/4, 0) -> SP = 0.
    assert m.statistical_parity_gender == pytest.approx(0.0)
    # F rows: y=0 (1, 0, 0), y=1 (1/2, 1/2, 0); M rows: y=0 (1/2, 1/2, 0), y=1 (1, 0, 0).
    # S = {0, 1}: j=0 -> 1, j=1 -> 1; EO = 2 / (2 * 2) = 0.5.
    assert m.equal_opportunity_gender == pytest.approx(0.5)
    assert m.macro_f1 == macro_f1(y_true, y_pred, 3)

    d = m.to_dict()
    assert set(d) == EXPECTED_KEYS == {f.name for f in dataclasses.fields(EvalMetrics)}
    assert json.loads(json.dumps(d)) == d
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.uar = 1.0  # type: ignore[misc]


def test_evaluate_with_one_group_serialises_nones() -> None:
    m = evaluate([0, 1, 1], [0, 1, 0], ["M", "M", "unknown"], num_classes=2)
    d = m.to_dict()
    assert d["uar_gap_gender"] is None
    assert d["statistical_parity_gender"] is None
    assert d["equal_opportunity_gender"] is None
    assert d["uar_by_gender"] == {"M": 1.0}
    assert json.loads(json.dumps(d)) == d
