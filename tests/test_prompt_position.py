"""Where prompts enter the transformer: after the positional embedding and the input norm.

PEFT-SER prepends its prompts at the input of the first transformer layer. For the wav2vec
2.0-style families that input is ``dropout(norm(x + pos_conv(x)))``; a prompt prepended before the
positional convolution leaks into the first ~kernel/2 real frames (and, at rounding level, into
frames near the end, because the convolution then runs over a longer input). The invariant checked
here for every family: attaching a prompt leaves every real frame's layer-0 input bit-identical.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import pytest
import torch
from torch import nn

from trainables.backbones import FAMILIES, PRESETS, Backbone, BackboneOutput, load_backbone
from trainables.backbones.base import frame_mask
from trainables.backbones.w2v import W2VBackbone
from trainables.methods import attach, build_method

W2V_PRESETS = ["tiny-wavlm", "tiny-hubert", "tiny-wav2vec2"]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three clips of unequal length (49, 34 and 18 frames), zero-padded."""
    g = torch.Generator().manual_seed(0)
    waves = torch.randn(3, 16000, generator=g) * 0.1
    lengths = torch.tensor([16000, 11000, 6000])
    for i, n in enumerate(lengths.tolist()):
        waves[i, n:] = 0
    return waves, lengths


def _prompted(name: str, deep: bool, length: int = 5) -> Backbone:
    """The preset with a prompt attached, its vectors drawn large so any leak is visible."""
    bb = load_backbone(name)
    attach(bb, build_method("prompt", {"length": length, "deep": deep}))
    assert bb.input_injector is not None
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in bb.input_injector.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return bb.eval()


def assert_prompt_keeps_layer0_input(
    plain: Backbone, prompted: Backbone, waves: torch.Tensor, lengths: torch.Tensor
) -> None:
    """Fails unless the prompt leaves every real frame's layer-0 input exactly unchanged.

    ``hidden_states[0]`` (prompt positions stripped) is the input of the first transformer layer;
    a prompt injected there, after positions and norm, cannot change it. Eval mode, no dropout.
    """
    assert prompted.input_injector is not None, "the prompted backbone has no prompt"
    with torch.no_grad():
        ref = plain.eval()(waves, lengths)
        out = prompted.eval()(waves, lengths)
    assert out.hidden_states[0].shape == ref.hidden_states[0].shape
    moved = (out.hidden_states[0] != ref.hidden_states[0]).any(dim=-1) & ref.frame_mask
    assert not moved.any(), (
        f"{plain.family}: the prompt changed the layer-0 input of {moved.sum(1).tolist()} real "
        f"frames (of {ref.frame_mask.sum(1).tolist()}); frames {moved[0].nonzero().flatten().tolist()}"
        " of the first clip. Prompts must enter after the positional embedding and the norm."
    )


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("deep", [False, True])
def test_prompt_leaves_the_real_frames_layer0_input_unchanged(name: str, deep: bool) -> None:
    waves, lengths = _batch()
    assert_prompt_keeps_layer0_input(load_backbone(name), _prompted(name, deep), waves, lengths)


def _hf_encoder_states(
    self: W2VBackbone, features: torch.Tensor, frame_lengths: torch.Tensor
) -> BackboneOutput:
    """The encode of emotune <= issue 11: prompt prepended, THEN Hugging Face's whole encoder.

    Without a prompt this is the reference (HF's own encoder); with one, it is the old bug: the
    prompt goes through ``pos_conv_embed`` (and the post-LN encoder norm) with the frames.
    """
    hidden = self._project(features)
    mask = frame_mask(frame_lengths.to(hidden.device), hidden.shape[1])
    hidden, full_mask, n_injected = self._inject(hidden, mask)
    states: list[torch.Tensor] = []

    def grab_input(_module: nn.Module, args: tuple) -> None:
        states.append(args[0])

    def grab_output(_module: nn.Module, _args: tuple, output: object) -> None:
        states.append(output[0] if isinstance(output, tuple) else output)  # type: ignore[index]

    handles = [self.layers[0].register_forward_pre_hook(grab_input)]
    handles += [layer.register_forward_hook(grab_output) for layer in self.layers]
    try:
        last = self.model.encoder(hidden, attention_mask=full_mask).last_hidden_state
    finally:
        for handle in handles:
            handle.remove()
    states[-1] = last  # the stable-layer-norm encoders normalise after the last layer
    return BackboneOutput([s[:, n_injected:] for s in states], mask)


@pytest.mark.parametrize("name", W2V_PRESETS)
def test_the_check_catches_a_prompt_prepended_before_the_positional_conv(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The invariant is not vacuous: the old injection point (before ``pos_conv_embed``) fails."""
    waves, lengths = _batch()
    wrong = _prompted(name, deep=False)
    monkeypatch.setattr(wrong, "encode", types.MethodType(_hf_encoder_states, wrong))
    with pytest.raises(AssertionError, match="changed the layer-0 input"):
        assert_prompt_keeps_layer0_input(load_backbone(name), wrong, waves, lengths)


def _tiny_variant(family: str, stable: bool) -> W2VBackbone:
    """A random-init tiny model of ``family`` with pre-LN (stable) or post-LN layers."""
    preset = {"wavlm": "tiny-wavlm", "hubert": "tiny-hubert", "wav2vec2": "tiny-wav2vec2"}[family]
    config = PRESETS[preset]()
    config.do_stable_layer_norm = stable
    cls = FAMILIES.get(family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = cls.model_cls(config)
    bb = cls(model, preset, True, 16000, True)
    assert isinstance(bb, W2VBackbone)
    assert ("StableLayerNorm" in type(model.encoder).__name__) == stable
    return bb


VARIANTS = [(f, s) for f in ("wavlm", "hubert", "wav2vec2") for s in (False, True)]


def _run_both(
    bb: W2VBackbone, train: bool
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    waves, lengths = _batch()
    bb.train(train)
    with torch.no_grad():
        features, frame_lengths = bb.frontend(waves, lengths)
        torch.manual_seed(3)  # the same dropout draws in both runs
        ours = bb.encode(features.clone(), frame_lengths)
        torch.manual_seed(3)
        ref = _hf_encoder_states(bb, features.clone(), frame_lengths)
    assert torch.equal(ours.frame_mask, ref.frame_mask)
    return ours.hidden_states, ref.hidden_states, ours.frame_mask


@pytest.mark.parametrize("family,stable", VARIANTS)
@pytest.mark.parametrize("train", [False, True])
def test_without_a_prompt_the_states_equal_hugging_faces_encoder(
    family: str, stable: bool, train: bool
) -> None:
    """Running the encoder's pieces ourselves changes no number of a prompt-free run."""
    ours, ref, _ = _run_both(_tiny_variant(family, stable), train)
    assert len(ours) == len(ref) == 3
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert torch.equal(a, b), f"{family} stable={stable} train={train}: state {i} differs"


@pytest.mark.parametrize("family,stable", VARIANTS)
def test_every_variant_keeps_the_layer0_input_with_a_prompt(family: str, stable: bool) -> None:
    waves, lengths = _batch()
    plain, prompted = _tiny_variant(family, stable), _tiny_variant(family, stable)
    attach(prompted, build_method("prompt", {"length": 4, "deep": True}))
    assert_prompt_keeps_layer0_input(plain, prompted, waves, lengths)


def _layer_inputs(bb: Backbone) -> tuple[list[torch.Tensor], Callable[[], None]]:
    inputs: list[torch.Tensor] = []
    handles = [
        layer.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
        for layer in bb.layers
    ]
    return inputs, lambda: [h.remove() for h in handles]  # type: ignore[func-returns-value]


@pytest.mark.parametrize("name", list(PRESETS))
def test_deep_prompts_reach_every_layer_in_the_layer_loop(name: str) -> None:
    """Layer i > 0 sees its own N prompts in the leading positions; layer 0 the first set."""
    bb = _prompted(name, deep=True, length=3)
    inputs, remove = _layer_inputs(bb)
    waves, lengths = _batch()
    with torch.no_grad():
        out = bb(waves, lengths)
    remove()
    prompts = bb.input_injector.prompts  # type: ignore[union-attr]
    assert len(inputs) == bb.num_layers == prompts.shape[0]
    for i, x in enumerate(inputs):
        assert x.shape[1] == out.hidden_states[0].shape[1] + 3
        assert all(torch.equal(x[b, :3], prompts[i]) for b in range(x.shape[0])), f"layer {i}"
