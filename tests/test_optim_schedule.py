"""Optimizer (Adam vs AdamW, betas), the plateau schedule on dev UAR or dev loss, the dev loss
itself, resume of a plateau-on-loss run, and the flags of ``emotune train`` for them (issue 12).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from search.cli import build_parser, main
from trainables import train as train_module
from trainables.config import TrainConfig
from trainables.data.dataset import Batch
from trainables.fingerprint import differences, run_fingerprint
from trainables.loop import StepContext, evaluate_split
from trainables.run_setup import make_optimizer, make_scheduler, plateau_value
from trainables.train import train

NEW_FIELDS = {
    "optimizer": "adam",
    "adam_beta1": 0.8,
    "adam_beta2": 0.98,
    "plateau_metric": "loss",
    "plateau_patience": 5,
    "plateau_factor": 0.25,
    "min_lr": 5e-5,
}


def _cfg(tmp_path: Path, **kw) -> TrainConfig:
    return TrainConfig(manifest=tmp_path / "manifest.parquet", **kw)


# --- optimizer --------------------------------------------------------------------------------


def _one_step(cfg: TrainConfig, p0: list[float], grad: list[float]) -> list[float]:
    param = torch.nn.Parameter(torch.tensor(p0))
    opt = make_optimizer(cfg, [param])
    param.grad = torch.tensor(grad)
    opt.step()
    return param.detach().tolist()


@pytest.mark.parametrize("fast_kernels", [True, False])
def test_adam_adds_weight_decay_to_the_gradient_and_adamw_shrinks_the_weight(
    tmp_path: Path, fast_kernels: bool
) -> None:
    """One step from p = (1, 2), g = (-0.5, 0.25), lr 0.1, wd 1 (by hand, eps 1e-8 ~ 0).

    The first bias-corrected Adam step is ``lr * g / |g|``:
    * adam: ``g' = g + wd p = (0.5, 2.25)`` -> ``p - lr sign(g') = (0.9, 1.9)``;
    * adamw: ``p (1 - lr wd) - lr sign(g) = (0.9 + 0.1, 1.8 - 0.1) = (1.0, 1.7)``.
    """
    common = dict(lr=0.1, weight_decay=1.0, fast_kernels=fast_kernels)
    adam = _one_step(_cfg(tmp_path, optimizer="adam", **common), [1.0, 2.0], [-0.5, 0.25])
    adamw = _one_step(_cfg(tmp_path, optimizer="adamw", **common), [1.0, 2.0], [-0.5, 0.25])
    assert adam == pytest.approx([0.9, 1.9], abs=1e-6)
    assert adamw == pytest.approx([1.0, 1.7], abs=1e-6)


def _reference(
    decoupled: bool, betas: tuple[float, float], grads: list[float], lr: float, wd: float
) -> float:
    """Textbook Adam / AdamW on one scalar weight starting at 1 (eps 1e-8)."""
    b1, b2 = betas
    p, m, v = 1.0, 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p *= 1 - lr * wd
        else:
            g += wd * p
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        p -= lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + 1e-8)
    return p


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_betas_reach_the_optimizer(tmp_path: Path, optimizer: str) -> None:
    cfg = _cfg(tmp_path, optimizer=optimizer, adam_beta1=0.9, adam_beta2=0.98, lr=0.1,
               weight_decay=1e-4)  # fmt: skip
    param = torch.nn.Parameter(torch.tensor([1.0]))
    opt = make_optimizer(cfg, [param])
    kind = torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW
    assert type(opt) is kind
    group = opt.param_groups[0]
    assert tuple(group["betas"]) == (0.9, 0.98) and group["weight_decay"] == 1e-4
    assert group["fused"]  # fast_kernels: fused kernels, as AdamW had before
    grads = [0.3, -1.0, 0.2, 0.5]
    for g in grads:
        param.grad = torch.tensor([g])
        opt.step()
    want = _reference(optimizer == "adamw", (0.9, 0.98), grads, 0.1, 1e-4)
    other = _reference(optimizer == "adamw", (0.9, 0.999), grads, 0.1, 1e-4)
    assert param.item() == pytest.approx(want, abs=1e-6)
    assert abs(want - other) > 1e-4  # the steps are long enough for beta2 to matter


def test_default_optimizer_and_schedule_are_the_ones_of_before(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, schedule="plateau")
    opt = make_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])
    assert type(opt) is torch.optim.AdamW and tuple(opt.param_groups[0]["betas"]) == (0.9, 0.999)
    sched = make_scheduler(cfg, opt, 10)
    assert isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (sched.mode, sched.factor, sched.patience, sched.min_lrs) == ("max", 0.5, 1, [0.0])


# --- plateau schedule -------------------------------------------------------------------------


def _lrs(cfg: TrainConfig, values: list[float], dev_uar: float | None = None) -> list[float]:
    """The LR after stepping the schedule with each epoch's dev loss (or dev UAR)."""
    opt = make_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])
    sched = make_scheduler(cfg, opt, 100)
    out = []
    for value in values:
        uar, loss = (value, 0.0) if dev_uar is None else (dev_uar, value)
        sched.step(plateau_value(cfg, uar, loss))
        out.append(round(opt.param_groups[0]["lr"], 12))
    return out


def test_plateau_on_loss_cuts_the_lr_when_the_dev_loss_stops_falling(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, lr=0.1, schedule="plateau", plateau_metric="loss", plateau_patience=1,
               plateau_factor=0.5, min_lr=0.03)  # fmt: skip
    losses = [1.0, 0.9, 0.95, 0.92, 0.8, 0.85, 0.86, 0.87, 0.88, 0.89]
    # 0.95 and 0.92 are 2 epochs without a lower loss (> patience 1): 0.1 -> 0.05; 0.8 is a
    # new best; 0.85, 0.86: 0.05 -> max(0.025, min_lr) = 0.03; later cuts stay at min_lr.
    want = [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.03, 0.03, 0.03, 0.03]
    assert _lrs(cfg, losses, dev_uar=0.5) == want
    # On dev UAR (mode max) a rising sequence is progress and a falling one is not; a loss
    # run looks at the loss alone.
    uar_cfg = dataclasses.replace(cfg, plateau_metric="uar")
    assert _lrs(uar_cfg, [0.1, 0.2, 0.3, 0.4]) == [0.1] * 4
    assert _lrs(uar_cfg, [0.4, 0.3, 0.2]) == [0.1, 0.1, 0.05]
    assert _lrs(cfg, [0.4, 0.3, 0.2], dev_uar=0.0) == [0.1] * 3  # falling loss: no cut


def _window_batch(rows: list[list[float]], labels: list[int], owners: list[int]) -> Batch:
    waves = torch.tensor(rows)
    return Batch(
        waves=waves,
        lengths=torch.full((len(rows),), waves.shape[1]),
        labels=torch.tensor(labels),
        genders=["F" if o % 2 == 0 else "M" for o in owners],
        indices=torch.tensor(owners),
    )


class _FirstSamples(torch.nn.Module):
    """Logits = the first 3 samples of each row, so the expected loss is known by hand."""

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return waves[:, :3]


def test_dev_loss_is_the_weighted_cross_entropy_of_mean_window_logits() -> None:
    """Utterance 0 (class 0) is two windows with logits (ln 2, 0, 0) and (-ln 2, 0, 0): mean 0,
    CE ln 3; utterance 1 (class 1) has logits (ln 2, 0, 0): softmax (1/2, 1/4, 1/4), CE ln 4.
    With weights (1, 3, 0.5): loss = (1 ln 3 + 3 ln 4) / (1 + 3)."""
    ln2 = math.log(2)
    loader = [
        _window_batch([[ln2, 0, 0, 9], [-ln2, 0, 0, 9]], [0, 0], [0, 0]),
        _window_batch([[ln2, 0, 0, 9]], [1], [1]),
    ]
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0, 0.5]))
    metrics, loss = evaluate_split(_FirstSamples(), loader, StepContext("cpu", False), 3, loss_fn)
    assert loss == pytest.approx((math.log(3) + 3 * math.log(4)) / 4, rel=1e-6)
    assert metrics.n == 2 and metrics.confusion[1] == [1, 0, 0]  # argmax of (ln 2, 0, 0) is 0


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("optimizer", "sgd", "optimizer must be adamw or adam, got 'sgd'"),
        ("adam_beta1", 1.0, "adam_beta1 and adam_beta2 must be in [0, 1), got 1.0 and 0.999"),
        ("adam_beta2", -0.1, "adam_beta1 and adam_beta2 must be in [0, 1), got 0.9 and -0.1"),
        ("adam_beta2", float("nan"), "adam_beta2=nan: must be a finite number"),
        ("plateau_metric", "acc", "plateau_metric must be uar or loss, got 'acc'"),
        ("plateau_patience", -1, "plateau_patience must be an integer >= 0, got -1"),
        ("plateau_patience", 1.5, "plateau_patience must be an integer >= 0, got 1.5"),
        ("plateau_factor", 1.0, "plateau_factor must be in (0, 1), got 1.0"),
        ("plateau_factor", 0.0, "plateau_factor must be in (0, 1), got 0.0"),
        ("min_lr", -1e-6, "min_lr must be >= 0, got -1e-06"),
    ],
)
def test_bad_optimiser_fields_are_clear_errors(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match="train config: " + re.escape(message)):
        _cfg(tmp_path, **{field: value})


def test_new_fields_round_trip_and_defaults_only_add_keys(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, **NEW_FIELDS)
    d = cfg.to_dict()
    assert {k: d[k] for k in NEW_FIELDS} == NEW_FIELDS
    assert TrainConfig.from_dict(json.loads(json.dumps(d))) == cfg
    default = _cfg(tmp_path).to_dict()
    assert {k: default[k] for k in NEW_FIELDS} == {
        "optimizer": "adamw", "adam_beta1": 0.9, "adam_beta2": 0.999, "plateau_metric": "uar",
        "plateau_patience": 1, "plateau_factor": 0.5, "min_lr": 0.0,
    }  # fmt: skip


def test_fingerprint_tells_the_new_fields_apart_and_accepts_older_runs(
    synth_corpus: Path,
) -> None:
    base = TrainConfig(manifest=synth_corpus)
    labels = ["ang", "hap", "neu", "sad"]
    now = run_fingerprint(base, labels, "0" * 64)
    for field, value in NEW_FIELDS.items():
        other = run_fingerprint(dataclasses.replace(base, **{field: value}), labels, "0" * 64)
        reasons = differences(other, now)
        assert len(reasons) == 1 and f"{field}: {value!r} then" in reasons[0], field
    # A run checkpointed before these fields existed recorded none of them: same run.
    older = json.loads(json.dumps(now))
    for field in NEW_FIELDS:
        del older["config"][field]
    del older["config"]["head"]["layers"]
    assert differences(older, now) == []


# --- training ---------------------------------------------------------------------------------

FAST = dict(backbone="tiny-wavlm", method="frozen", epochs=3, batch_size=16, max_seconds=1.0,
            lr=2e-3, schedule="plateau", plateau_metric="loss", plateau_patience=0)  # fmt: skip


def _scripted_dev_loss(monkeypatch: pytest.MonkeyPatch, losses: list[float]) -> None:
    """Each epoch's dev loss is the next of ``losses`` (metrics stay real); the test split's
    loss, asked for right after dev, is not used by the loop."""
    real = evaluate_split  # trainables.loop's, never an earlier script
    script: Iterator[float] = iter([v for loss in losses for v in (loss, math.nan)])

    def fake(*args, **kwargs):
        metrics, _ = real(*args, **kwargs)
        return metrics, next(script)

    monkeypatch.setattr(train_module, "evaluate_split", fake)


def test_a_resumed_plateau_on_loss_run_continues_identically(
    synth_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dev losses 1, 2, 0.5 with patience 0: the LR is halved after epoch 2. A run cut after
    epoch 1 only halves it on resume if the schedule's best loss (1) came back from the
    checkpoint: a fresh schedule would take 2 as an improvement."""
    cfg = TrainConfig(manifest=synth_corpus, **FAST)
    _scripted_dev_loss(monkeypatch, [1.0, 2.0, 0.5])
    full = train(cfg, tmp_path / "full")
    assert [h["lr"] for h in full.history] == [2e-3, 2e-3, 1e-3]

    def crash(report) -> None:
        if report.epoch == 1:
            raise KeyboardInterrupt

    _scripted_dev_loss(monkeypatch, [1.0, 2.0, 0.5])
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", on_epoch=crash)
    resumed = train(cfg, tmp_path / "cut")
    assert [h["lr"] for h in resumed.history] == [2e-3, 2e-3, 1e-3]
    assert [h["dev_loss"] for h in resumed.history] == [1.0, 2.0, 0.5]
    for a, b in zip(resumed.history, full.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"])
    assert resumed.test == full.test


# --- CLI --------------------------------------------------------------------------------------


def test_cli_defaults_are_the_config_defaults(synth_corpus: Path, tmp_path: Path) -> None:
    from search.cli.run import train_config_from_args

    args = build_parser().parse_args(
        ["train", "--manifest", str(synth_corpus), "--out", str(tmp_path)]
    )
    got, want = train_config_from_args(args).to_dict(), TrainConfig(manifest=synth_corpus).to_dict()
    assert {k: got[k] for k in NEW_FIELDS} == {k: want[k] for k in NEW_FIELDS}
    assert got["head"] == want["head"]


def test_train_with_peft_ser_optimiser_schedule_and_head(
    synth_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code = main([
        "train", "--manifest", str(synth_corpus), "--method", "frozen", "--max-seconds", "1",
        "--optimizer", "adam", "--betas", "0.9", "0.98", "--weight-decay", "1e-4",
        "--schedule", "plateau", "--plateau-metric", "loss", "--plateau-patience", "5",
        "--min-lr", "5e-5", "--head-layers", "transformer", "--head-width", "32",
        "--head-dropout", "0.2", "--epochs", "1", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    config = result["config"]
    assert (config["optimizer"], config["adam_beta1"], config["adam_beta2"]) == ("adam", 0.9, 0.98)
    assert (config["schedule"], config["plateau_metric"]) == ("plateau", "loss")
    assert (config["plateau_patience"], config["min_lr"]) == (5, 5e-5)
    assert config["head"] == {"proj_dim": 32, "pooling": "meanstd", "dropout": 0.2,
                              "layers": "transformer"}  # fmt: skip
    dev_loss = result["history"][0]["dev_loss"]
    assert math.isfinite(dev_loss) and dev_loss > 0
    saved = json.loads((out / "adapter" / "emotune.json").read_text())
    assert saved["head"] == config["head"]


def test_bad_optimiser_flags_are_one_line_errors(synth_corpus: Path, tmp_path: Path, capsys):
    code = main(["train", "--manifest", str(synth_corpus), "--betas", "0.9", "1.0",
                 "--out", str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "adam_beta1 and adam_beta2 must be in [0, 1)" in err
    assert "Traceback" not in err
