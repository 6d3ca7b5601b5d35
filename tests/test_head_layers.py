"""The head's ``layers`` option: which hidden states the weighted sum covers, its parameter
count, its CLI-independent checks, and how ``emotune.json`` carries it (issue 12)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainables.backbones import load_backbone
from trainables.export import build_model, load_adapter, save_adapter
from trainables.model import Head, HeadConfig, SERModel


def _states(n: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 5, 8, generator=g) for _ in range(n)]


@pytest.mark.parametrize("pooling", ["mean", "meanstd", "attentive"])
def test_transformer_layers_ignore_the_transformer_input(pooling: str) -> None:
    """Perturbing hidden state 0 (the transformer's input) moves the logits of an ``all`` head
    and leaves a ``transformer`` head's exactly as they were."""
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    states = _states()
    moved = [states[0] + 3.0, *states[1:]]
    for layers, changes in (("all", True), ("transformer", False)):
        torch.manual_seed(0)
        head = Head(4, 8, 3, HeadConfig(proj_dim=6, pooling=pooling, layers=layers)).eval()
        with torch.no_grad():
            a, b = head(states, mask), head(moved, mask)
        assert (not torch.equal(a, b)) == changes, layers
    # ... while the transformer layers' outputs still count.
    with torch.no_grad():
        assert not torch.equal(head(states, mask), head([*states[:3], states[3] + 3.0], mask))


def test_transformer_head_is_the_weighted_sum_of_layers_1_to_L() -> None:
    """With ``layers="transformer"``, ``w`` has L entries and ``w_j`` weighs state ``j + 1``:
    all the weight on ``w_1`` makes the head see state 2 alone."""
    states = _states()
    mask = torch.ones(2, 5, dtype=torch.bool)
    head = Head(4, 8, 3, HeadConfig(proj_dim=6, layers="transformer")).eval()
    assert head.layer_weights.shape == (3,)
    with torch.no_grad():
        head.layer_weights.copy_(torch.tensor([-50.0, 50.0, -50.0]))  # softmax ~ (0, 1, 0)
        got = head.pooled(states, mask)
        want = head.pooled([torch.zeros_like(states[0]), *[states[2]] * 3], mask)
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("backbone", ["tiny-wavlm", "tiny-whisper"])
def test_transformer_head_has_one_weight_fewer_on_a_real_backbone(backbone: str) -> None:
    torch.manual_seed(0)
    bb = load_backbone(backbone)
    counts = {}
    for layers in ("all", "transformer"):
        model = SERModel(bb, 4, HeadConfig(proj_dim=16, layers=layers)).eval()
        counts[layers] = model.trainable_params()[1]
        waves = torch.randn(1, 8000, generator=torch.Generator().manual_seed(1)) * 0.1
        with torch.no_grad():
            out = bb(waves, torch.tensor([8000]))
            logits = model.head(out.hidden_states, out.frame_mask)
            noisy = model.head([out.hidden_states[0] * 2 + 1, *out.hidden_states[1:]],
                               out.frame_mask)  # fmt: skip
        assert torch.equal(logits, noisy) == (layers == "transformer")
        assert logits.shape == (1, 4)
    assert counts["all"] - counts["transformer"] == 1
    assert model.head.layer_weights.numel() == bb.num_layers


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layers": "last"}, "head layers must be all or transformer, got 'last'"),
        ({"dropout": 1.0}, r"head dropout must be in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, r"head dropout must be in \[0, 1\), got -0.1"),
    ],
)
def test_bad_head_options_are_clear_errors(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HeadConfig(**options)


def test_a_transformer_layers_head_cannot_be_built_without_layers() -> None:
    with pytest.raises(ValueError, match="needs a transformer layer"):
        Head(1, 8, 3, HeadConfig(layers="transformer"))


# --- emotune.json -----------------------------------------------------------------------------


def _save(folder: Path, head: HeadConfig) -> SERModel:
    model, method = build_model("tiny-wavlm", "frozen", {}, head, 4, seed=0)
    save_adapter(model, method, folder, labels=["ang", "hap", "neu", "sad"], head=head,
                 max_seconds=1.0, eval_crop="center")  # fmt: skip
    return model.eval()


def _logits(model: SERModel) -> torch.Tensor:
    waves = torch.randn(1, 8000, generator=torch.Generator().manual_seed(2)) * 0.1
    with torch.no_grad():
        return model(waves, torch.tensor([8000]))


def test_exported_adapter_carries_the_head_layers(tmp_path: Path) -> None:
    head = HeadConfig(proj_dim=8, pooling="mean", dropout=0.0, layers="transformer")
    model = _save(tmp_path / "a", head)
    meta = json.loads((tmp_path / "a" / "emotune.json").read_text())
    assert meta["head"] == {"proj_dim": 8, "pooling": "mean", "dropout": 0.0,
                            "layers": "transformer"}  # fmt: skip
    weights = load_file(str(tmp_path / "a" / "weights.safetensors"))
    assert weights["head.layer_weights"].shape == (model.backbone.num_layers,)
    loaded = load_adapter(tmp_path / "a")
    assert loaded.model.head.first == 1
    assert torch.equal(_logits(loaded.model), _logits(model))


def test_emotune_json_without_layers_loads_as_all(tmp_path: Path) -> None:
    """A file written before ``layers`` existed holds the other head options only."""
    model = _save(tmp_path / "old", HeadConfig(proj_dim=8))
    path = tmp_path / "old" / "emotune.json"
    meta = json.loads(path.read_text())
    del meta["head"]["layers"]
    path.write_text(json.dumps(meta))
    loaded = load_adapter(tmp_path / "old")
    assert loaded.model.head.first == 0
    assert loaded.model.head.layer_weights.numel() == model.backbone.num_layers + 1
    assert torch.equal(_logits(loaded.model), _logits(model))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("odd", r"emotune.json: head: head layers must be all or transformer, got 'odd'"),
        (3, r"emotune.json: head.layers = 3; expected str"),
    ],
)
def test_unknown_head_layers_in_emotune_json_is_a_clear_error(
    tmp_path: Path, value: object, message: str
) -> None:
    _save(tmp_path / "src", HeadConfig(proj_dim=8))
    folder = Path(shutil.copytree(tmp_path / "src", tmp_path / "bad"))
    path = folder / "emotune.json"
    meta = json.loads(path.read_text())
    meta["head"]["layers"] = value
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=message):
        load_adapter(folder)


def test_head_layers_that_disagree_with_the_weights_are_refused(tmp_path: Path) -> None:
    """An ``all`` head's weights under a file that says ``transformer``: one layer weight too
    many, caught from the header before any model is trusted with them."""
    _save(tmp_path / "a", HeadConfig(proj_dim=8))
    path = tmp_path / "a" / "emotune.json"
    meta = json.loads(path.read_text())
    meta["head"]["layers"] = "transformer"
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="head.layer_weights"):
        load_adapter(tmp_path / "a")
