"""Bottleneck adapters, sequential and parallel: identity at init, exact parameter counts, the
parallel branch against hand-written layers (post-LN and pre-LN), dropout, export and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from search.cli import main
from spaces import SpaceConfig, define_by_run, to_train_config
from trainables.backbones import PRESETS, load_backbone
from trainables.export import build_model, load_adapter, save_adapter
from trainables.methods import attach, build_method
from trainables.methods.adapter import PARALLEL_ATTR, BottleneckAdapter, ParallelAdapter
from trainables.model import HeadConfig, SERModel

BACKBONES = list(PRESETS)
PLACEMENTS = ["sequential", "parallel"]
LABELS = ["ang", "hap", "neu", "sad"]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    waves = torch.randn(2, 10000, generator=g) * 0.1
    waves[1, 7000:] = 0
    return waves, torch.tensor([10000, 7000])


def _adapters(model: torch.nn.Module) -> list[BottleneckAdapter | ParallelAdapter]:
    return [m for m in model.modules() if isinstance(m, BottleneckAdapter | ParallelAdapter)]


def _randomise_up(model: torch.nn.Module, seed: int = 1) -> None:
    """Gives every up-projection non-zero weights, so the branches change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adapter in _adapters(model):
            adapter.up.weight.copy_(torch.randn(adapter.up.weight.shape, generator=g) * 0.5)
            adapter.up.bias.copy_(torch.randn(adapter.up.bias.shape, generator=g) * 0.5)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_identity_at_init_gives_the_frozen_models_logits(backbone: str, placement: str) -> None:
    """The up-projection starts at zero, so the classifier's logits are exactly those of the
    frozen model with the same head, in both placements."""
    options = {"width": 8, "placement": placement, "dropout": 0.1}
    adapted, _ = build_model(backbone, "adapter", options, HeadConfig(), 4, seed=0)
    frozen, _ = build_model(backbone, "frozen", {}, HeadConfig(), 4, seed=0)
    frozen.head.load_state_dict(adapted.head.state_dict())
    waves, lengths = _batch()
    with torch.no_grad():
        got = adapted.eval()(waves, lengths)
        expected = frozen.eval()(waves, lengths)
    assert len(_adapters(adapted)) == adapted.backbone.num_layers
    assert torch.equal(got, expected)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_parameter_count_is_exact_and_only_adapters_train(backbone: str, placement: str) -> None:
    """``2*d*m + m + d`` per layer in both placements; nothing else of the backbone trains, and
    the parallel adapter's parameters belong to its layer (so they are saved with it)."""
    bb = load_backbone(backbone)
    d, m = bb.hidden_size, 8
    params = attach(bb, build_method("adapter", {"width": m, "placement": placement}))
    expected = bb.num_layers * (2 * d * m + m + d)
    assert sum(p.numel() for p in params) == expected
    trained = {n: p for n, p in bb.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in trained.values()) == expected
    part = "feed_forward" if placement == "sequential" and backbone != "tiny-whisper" else None
    part = "fc2" if placement == "sequential" and backbone == "tiny-whisper" else part
    part = part or PARALLEL_ATTR
    for i in range(bb.num_layers):
        for name in ("down.weight", "down.bias", "up.weight", "up.bias"):
            assert any(n.endswith(f"layers.{i}.{part}.{name}") for n in trained), (i, name)
    # Gradients reach the branch: up (zero at init) gets one at once.
    model = SERModel(bb, 4, HeadConfig())
    model(*_batch()).sum().backward()
    assert all(a.up.weight.grad is not None and a.up.weight.grad.abs().sum() > 0
               for a in _adapters(bb))  # fmt: skip


def _branch(adapter: ParallelAdapter, x: torch.Tensor) -> torch.Tensor:
    """The adapter branch written out: ``s * up(relu(down(x)))`` (eval mode: no dropout)."""
    hidden = F.relu(F.linear(x, adapter.down.weight, adapter.down.bias))
    return adapter.scale * F.linear(hidden, adapter.up.weight, adapter.up.bias)


def _adapted_layer0(backbone: str) -> tuple[torch.nn.Module, torch.nn.Module, ParallelAdapter]:
    """``(adapted layer 0, the same layer without adapter, its adapter)`` in eval mode."""
    bb = load_backbone(backbone)
    options = {"width": 8, "scale": 0.7, "placement": "parallel", "dropout": 0.5}
    attach(bb, build_method("adapter", options))
    _randomise_up(bb)
    plain = load_backbone(backbone)  # presets are seeded: the same pre-trained weights
    layer = bb.layers[0].eval()
    return layer, plain.layers[0].eval(), getattr(layer, PARALLEL_ATTR)


def test_parallel_branch_on_a_post_ln_layer_matches_a_hand_written_forward() -> None:
    """WavLM (post-LN): the branch reads the post-attention stream ``s`` before ``layer_norm``
    and is added before ``final_layer_norm``: ``LN2(LN1(s) + FFN(LN1(s)) + branch(s))``."""
    layer, plain, adapter = _adapted_layer0("tiny-wavlm")
    x = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = layer(x)[0]
        attended = plain.attention(x, attention_mask=None, position_bias=None, index=0)[0]
        s = x + attended
        h = plain.layer_norm(s)
        h = h + plain.feed_forward(h)
        expected = plain.final_layer_norm(h + _branch(adapter, s))
        unadapted = plain(x)[0]
    assert not torch.allclose(got, unadapted, atol=1e-3)  # the branch does something
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_parallel_branch_on_a_pre_ln_layer_matches_a_hand_written_forward() -> None:
    """Whisper (pre-LN): ``out = s + FFN(LN(s)) + branch(s)``, with ``s`` the post-attention
    stream entering the feed-forward block."""
    layer, plain, adapter = _adapted_layer0("tiny-whisper")
    x = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = layer(x, None)
        attended = plain.self_attn(hidden_states=plain.self_attn_layer_norm(x))[0]
        s = x + attended
        ffn = plain.fc2(plain.activation_fn(plain.fc1(plain.final_layer_norm(s))))
        expected = s + ffn + _branch(adapter, s)
        unadapted = plain(x, None)
    assert not torch.allclose(got, unadapted, atol=1e-3)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_parallel_branch_reaches_every_layers_hidden_state(backbone: str) -> None:
    """With non-zero up-projections each layer's output moves, so no family's encode path
    bypasses the hooks (the transformer input, hidden state 0, does not)."""
    bb = load_backbone(backbone).eval()
    waves, lengths = _batch()
    with torch.no_grad():
        before = bb(waves, lengths).hidden_states
        attach(bb, build_method("adapter", {"width": 8, "placement": "parallel"}))
        _randomise_up(bb)
        after = bb(waves, lengths).hidden_states
    assert torch.equal(before[0], after[0])
    for i in range(1, len(before)):
        assert not torch.allclose(before[i], after[i], atol=1e-4), i


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_dropout_acts_in_training_only(placement: str) -> None:
    """In eval mode the output equals that of the same weights without dropout; in train mode
    (adapters only, so the backbone's own dropout stays off) the bottleneck is dropped."""
    waves, lengths = _batch()
    outputs = {}
    for p in (0.0, 0.5):
        bb = load_backbone("tiny-wavlm")
        torch.manual_seed(0)  # the down-projections' init
        attach(bb, build_method("adapter", {"width": 16, "placement": placement, "dropout": p}))
        _randomise_up(bb)
        bb.eval()
        with torch.no_grad():
            outputs[p] = bb(waves, lengths).hidden_states[-1]
            if p:
                for adapter in _adapters(bb):
                    adapter.train()
                dropped = bb(waves, lengths).hidden_states[-1]
    assert torch.equal(outputs[0.0], outputs[0.5])
    assert not torch.allclose(dropped, outputs[0.5], atol=1e-4)


def _save(model: SERModel, method: object, out: Path) -> None:
    save_adapter(model, method, out, labels=LABELS, head=HeadConfig(), max_seconds=1.0,  # type: ignore[arg-type]
                 eval_crop="center")  # fmt: skip


def test_parallel_export_then_load_gives_the_same_logits(tmp_path: Path) -> None:
    options = {"width": 8, "scale": 0.1, "placement": "parallel", "dropout": 0.1}
    model, method = build_model("tiny-wavlm", "adapter", options, HeadConfig(), 4, seed=0)
    _randomise_up(model)
    _save(model, method, tmp_path / "adapter")
    saved = load_file(str(tmp_path / "adapter" / "weights.safetensors"))
    assert any(f".layers.1.{PARALLEL_ATTR}.up.weight" in n for n in saved)
    loaded = load_adapter(tmp_path / "adapter")
    assert loaded.meta["method_options"]["placement"] == "parallel"
    waves, lengths = _batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(waves, lengths), model.eval()(waves, lengths),
                                   rtol=0, atol=0)  # fmt: skip


def test_sequential_export_from_before_placement_still_loads(tmp_path: Path) -> None:
    """An adapter exported before ``placement``/``dropout`` existed (its emotune.json lists only
    width and scale; tensors named ``...feed_forward.down.weight``) loads as sequential."""
    model, method = build_model("tiny-hubert", "adapter", {"width": 8}, HeadConfig(), 4, seed=0)
    _randomise_up(model)
    out = tmp_path / "adapter"
    _save(model, method, out)
    meta = json.loads((out / "emotune.json").read_text())
    meta["method_options"] = {"width": 8, "scale": 1.0}
    (out / "emotune.json").write_text(json.dumps(meta))
    names = set(load_file(str(out / "weights.safetensors")))
    assert "backbone.model.encoder.layers.0.feed_forward.down.weight" in names
    assert "backbone.model.encoder.layers.1.feed_forward.up.bias" in names
    loaded = load_adapter(out)
    waves, lengths = _batch()
    with torch.no_grad():
        assert torch.equal(loaded.model(waves, lengths), model.eval()(waves, lengths))


def test_bad_options_are_refused_with_the_field() -> None:
    with pytest.raises(ValueError, match="adapter placement must be one of 'sequential'"):
        build_method("adapter", {"placement": "beside"})
    with pytest.raises(ValueError, match="adapter dropout must be < 1"):
        build_method("adapter", {"dropout": 1.0})


def test_default_space_fixes_sequential_and_a_space_may_search_placement(tmp_path: Path) -> None:
    assert SpaceConfig().adapter.domains()["adapter_placement"].allowed == (
        "sequential", "parallel"
    )  # fmt: skip
    default = define_by_run(SpaceConfig(methods=("adapter",)))
    path = tmp_path / "space.yaml"
    path.write_text("methods: [adapter]\nadapter:\n  placement: {choices: [sequential, parallel]}\n"
                    "  dropout: {low: 0.0, high: 0.3}\n", encoding="utf-8")  # fmt: skip
    searched = define_by_run(SpaceConfig.from_yaml(path))
    seen: dict[str, set] = {"default": set(), "searched": set()}
    for name, fn in (("default", default), ("searched", searched)):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(12):
            trial = study.ask()
            fn(trial)
            study.tell(trial, 0.0)
            options = to_train_config(trial.params, {"manifest": "m.parquet"}).method_options
            build_method("adapter", options)
            seen[name].add(options["placement"])
    assert seen == {"default": {"sequential"}, "searched": {"sequential", "parallel"}}


def test_cli_trains_a_parallel_adapter_with_dropout(synth_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = main(["train", "--manifest", str(synth_corpus), "--method", "adapter",
                 "--adapter-placement", "parallel", "--adapter-dropout", "0.1",
                 "--adapter-width", "4", "--epochs", "1", "--max-seconds", "1.0",
                 "--batch-size", "8", "--feature-cache-dir", str(tmp_path / "fc"),
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["method_options"] == {
        "width": 4, "scale": 1.0, "placement": "parallel", "dropout": 0.1
    }  # fmt: skip
    bb = load_backbone("tiny-wavlm")
    d = bb.hidden_size
    assert result["trainable_params_method"] == bb.num_layers * (2 * d * 4 + 4 + d)
    assert load_adapter(out / "adapter").meta["method_options"]["placement"] == "parallel"
