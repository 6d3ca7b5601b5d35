"""The model card (README.md) written beside an exported adapter."""

from __future__ import annotations

from typing import Any

from trainables.methods import METHODS
from trainables.result import SUMMARY_KEYS

_CARD = """\
# {model_name}: speech emotion recognition adapter

- Dataset: `{dataset}`; labels: {labels}
- Backbone: `{backbone}`, {init}
- Method: `{method}` ({options})
- Trainable parameters: {params:,} (method + head); adapter file: {bytes:,} bytes
- Audio: {sample_rate} Hz mono, evaluation crop `{eval_crop}` ({max_seconds} s)

## Metrics (best dev epoch: {best_epoch})

Fairness compares genders: per-gender UAR gap, statistical parity, equality of opportunity
(lower is fairer).

| metric | dev | test |
|---|---|---|
{rows}

## How it was selected

Best dev `{metric}` ({direction} is better) among the {candidates} COMPLETE trial(s) of
{trials}; parameter budget: {budget}; ties go to fewer trainable parameters. Test metrics were
not used. Trial `{trial_id}` (number {number}) of the search `{search_file}`, MLflow run
`{run_id}`.
{nested_section}
## Usage (`DIR` is this folder)

```bash
emotune predict --adapter DIR a.wav
```

```python
from trainables.export import load_adapter
loaded = load_adapter("DIR")  # .model, .labels, .meta
```
"""
_CARD_NESTED = """
## Cross-validated test estimate (`--folds all`)

The honest estimate for this search is the nested one: test UAR **{nested}** (std {std} over
{n_folds} folds). For each test fold K it takes the trial whose run on fold K has the best dev
UAR (dev = the next fold; fold K neither trained nor chose it) and counts that run's fold-K test
UAR. The test UAR in the table above, {own}, is this trial's own mean over folds: the trial was
chosen on dev scores of every fold, each fold's test data being another fold's dev data, so
that figure is optimistic, like the mean test UAR of the best mean-dev trial (leaky: {leaky}).
"""
_CARD_MLFLOW = """
MLflow: `mlflow.pyfunc.load_model("models:/{name}@{alias}")` predicts a DataFrame with a
`path` column.
"""


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _nested_section(nested: dict[str, Any] | None, test: dict[str, Any]) -> str:
    """The card's ``--folds all`` section: the nested estimate beside the trial's own mean."""
    if not nested:
        return ""
    return _CARD_NESTED.format(
        nested=_fmt(nested.get("nested_test_uar")),
        std=_fmt(nested.get("nested_test_uar_std")),
        n_folds=nested.get("n_folds"),
        own=_fmt(test.get("uar")),
        leaky=_fmt(nested.get("leaky_best_mean_test_uar")),
    )


def model_card(facts: dict[str, Any], alias: str) -> str:
    """The Markdown model card of an export, from its :data:`EXPORT_FILE` facts."""
    meta, trial = facts["adapter_meta"], facts["trial"]
    dev, test = trial.get("dev") or {}, trial.get("test") or {}
    card = _CARD.format(
        model_name=facts["model_name"],
        dataset=facts["dataset"],
        labels=", ".join(meta["labels"]),
        backbone=meta["backbone"],
        init="**randomly initialised** (a test preset, not pre-trained: its scores say nothing "
        "about real emotion recognition)"
        if meta.get("random_init")
        else "pre-trained",
        method=meta["method"],
        options=", ".join(f"{k}={v}" for k, v in sorted(meta["method_options"].items())),
        params=int(trial["trainable_params"]),
        bytes=int(trial["adapter_bytes"]),
        sample_rate=meta["sample_rate"],
        eval_crop=meta["eval_crop"],
        max_seconds=meta["max_seconds"],
        best_epoch=trial.get("best_epoch"),
        rows="\n".join(f"| {k} | {_fmt(dev.get(k))} | {_fmt(test.get(k))} |" for k in SUMMARY_KEYS),
        metric=facts["objective_metric"],
        direction="higher" if facts["larger_is_better"] else "lower",
        candidates=facts["candidates"],
        trials=facts["trials"],
        budget="none"
        if facts["max_params"] is None
        else f"<= {facts['max_params']:,} trainable params",
        trial_id=trial["trial_id"],
        number=trial.get("number"),
        search_file=facts["search_file"],
        run_id=trial.get("mlflow_run_id"),
        nested_section=_nested_section(facts.get("nested_cv"), test),
    )
    card += METHODS.get(meta["method"]).card_usage  # the method's own files, if any
    if facts.get("registered_model"):
        card += _CARD_MLFLOW.format(name=facts["registered_model"], alias=alias)
    return card
