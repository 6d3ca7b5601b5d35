"""PEFT methods on every backbone family: identity at init, gradients, exact parameter counts."""

from __future__ import annotations

import pytest
import torch

from trainables.backbones import PRESETS, load_backbone
from trainables.methods import METHODS, attach, build_method
from trainables.model import HeadConfig, SERModel

BACKBONES = list(PRESETS)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    waves = torch.randn(2, 10000, generator=g) * 0.1
    waves[1, 7000:] = 0
    return waves, torch.tensor([10000, 7000])


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize(
    "method,options",
    [
        ("lora", {"targets": "both"}),
        ("adapter", {}),
        ("lora", {"targets": "ffn", "use_dora": True}),
        ("ia3", {"targets": "both"}),
    ],
)
def test_identity_at_init(backbone: str, method: str, options: dict) -> None:
    """LoRA (B = 0), adapters (zero up-projection) and (IA)3 (vectors of ones) leave the
    pre-trained model unchanged."""
    bb = load_backbone(backbone)
    waves, lengths = _batch()
    with torch.no_grad():
        before = bb(waves, lengths).hidden_states
        attach(bb, build_method(method, options))
        after = bb(waves, lengths).hidden_states
    for a, b in zip(before, after):
        assert torch.allclose(a, b, atol=1e-6)


def _expected_backbone_params(backbone: str, method: str, options: dict) -> int:
    bb = load_backbone(backbone)
    d, layers = bb.hidden_size, bb.num_layers
    if method == "frozen":
        return 0
    if method == "full":
        return sum(p.numel() for n, p in bb.named_parameters() if "embed_positions" not in n)
    if method == "adapter":
        w = options.get("width", 64)
        return layers * (d * w + w + w * d + d)
    if method == "prompt":
        n = options.get("length", 8)
        return n * d * (layers if options.get("deep") else 1)
    if method == "lora":
        r = options.get("rank", 16)
        ff = 128  # the presets' intermediate size
        attention = 4 * r * (d + d)
        ffn = r * (d + ff) + r * (ff + d)
        per_layer = {"attention": attention, "ffn": ffn, "both": attention + ffn}
        return layers * per_layer[options.get("targets", "ffn")]
    if method == "ia3":  # attention: one vector per output; feed-forward: one per input
        ff = 128
        per_layer = {"attention": 4 * d, "ffn": d + ff, "both": 4 * d + d + ff}
        return layers * per_layer[options.get("targets", "both")]
    raise AssertionError(method)


CASES = [
    ("frozen", {}),
    ("full", {}),
    ("lora", {"rank": 4, "targets": "attention"}),
    ("lora", {"rank": 2, "targets": "both"}),
    ("adapter", {"width": 8}),
    ("prompt", {"length": 3}),
    ("prompt", {"length": 2, "deep": True}),
    ("ia3", {"targets": "attention"}),
    ("ia3", {}),
]


def test_cases_cover_every_registered_method() -> None:
    assert {m for m, _ in CASES} == set(METHODS.names())


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("method,options", CASES)
def test_exact_counts_and_only_intended_gradients(backbone: str, method: str, options: dict):
    torch.manual_seed(0)
    bb = load_backbone(backbone)
    trained = attach(bb, build_method(method, options))
    model = SERModel(bb, num_classes=4, head_config=HeadConfig(proj_dim=16, pooling="mean"))
    backbone_count, head_count = model.trainable_params()
    assert backbone_count == _expected_backbone_params(backbone, method, options)
    assert backbone_count == sum(p.numel() for p in trained)
    p = 16
    assert head_count == (bb.num_layers + 1) + (bb.hidden_size * p + p) + 2 * (p * p + p) + (
        p * 4 + 4
    )

    model.train()
    waves, lengths = _batch()
    model(waves, lengths).logsumexp(-1).sum().backward()
    trained_ids = {id(t) for t in trained} | {id(t) for t in model.head.parameters()}
    for name, param in model.named_parameters():
        if id(param) in trained_ids:
            assert param.requires_grad, name
        else:
            assert not param.requires_grad and param.grad is None, f"{name} should be frozen"
    # The branch that starts at zero must receive gradient on the first step.
    zero_started = {"lora": "lora_B", "adapter": ".up.", "prompt": "prompts"}.get(method)
    if zero_started:
        grads = [p.grad for n, p in bb.named_parameters() if zero_started in n]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("deep", [False, True])
def test_prompt_tokens_are_seen_by_layers_but_never_pooled(backbone: str, deep: bool) -> None:
    bb = load_backbone(backbone)
    waves, lengths = _batch()
    with torch.no_grad():
        plain = bb(waves, lengths)
    attach(bb, build_method("prompt", {"length": 5, "deep": deep}))
    seen: list[int] = []
    hooks = [
        layer.register_forward_hook(
            lambda _m, _a, out: seen.append((out[0] if isinstance(out, tuple) else out).shape[1])
        )
        for layer in bb.layers
    ]
    with torch.no_grad():
        prompted = bb(waves, lengths)
    for h in hooks:
        h.remove()
    frames = plain.hidden_states[0].shape[1]
    assert seen == [frames + 5] * bb.num_layers  # every layer attends over the prompts
    assert all(s.shape[1] == frames for s in prompted.hidden_states)  # stripped before pooling
    assert torch.equal(prompted.frame_mask, plain.frame_mask)
    assert not torch.allclose(prompted.hidden_states[-1], plain.hidden_states[-1])


def test_deep_prompts_replace_each_layers_leading_positions() -> None:
    bb = load_backbone("tiny-wavlm")
    attach(bb, build_method("prompt", {"length": 2, "deep": True}))
    inputs: list[torch.Tensor] = []
    bb.layers[1].register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
    waves, lengths = _batch()
    with torch.no_grad():
        bb(waves, lengths)
    prompts = bb.input_injector.prompts[1]
    assert torch.equal(inputs[0][0, :2], prompts) and torch.equal(inputs[0][1, :2], prompts)


@pytest.mark.parametrize("method", METHODS.names())
def test_unknown_option_is_rejected_with_the_allowed_list(method: str) -> None:
    with pytest.raises(ValueError, match=f"method '{method}' has no option"):
        build_method(method, {"no_such_option": 1})


@pytest.mark.parametrize(
    "options,message",
    [({"rank": 0}, "rank must be >= 1"), ({"targets": "conv"}, "targets must be")],
)
def test_bad_lora_values(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_method("lora", options)


@pytest.mark.parametrize("pooling", ["mean", "meanstd", "attentive"])
def test_pooling_ignores_padded_frames(pooling: str) -> None:
    """Garbage in padded frames must not move the pooled vector."""
    from trainables.model import Head

    torch.manual_seed(0)
    head = Head(3, 8, 4, HeadConfig(proj_dim=6, pooling=pooling)).eval()
    states = [torch.randn(1, 5, 8) for _ in range(3)]
    mask = torch.tensor([[True, True, True, False, False]])
    garbage = [s.clone() for s in states]
    for g in garbage:
        g[:, 3:] = 1e3
    a, b = head.pooled(states, mask), head.pooled(garbage, mask)
    alone = head.pooled([s[:, :3] for s in states], mask[:, :3])
    assert torch.allclose(a, b) and torch.allclose(a, alone, atol=1e-6)
    assert a.shape[-1] == (12 if pooling == "meanstd" else 6)
