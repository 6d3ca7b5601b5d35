"""Fast kernels: dropout masks, bf16 frozen weights, and the frozen front end's missing graph."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.backbones import load_backbone
from trainables.backbones.speed import (
    FastDropout,
    cast_frozen_to_bf16,
    fast_dropout,
    use_fast_dropout,
)
from trainables.methods import attach, build_method
from trainables.model import HeadConfig, SERModel


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_dropout_rate_scale_and_gradient(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = torch.randn(400, 500).to(dtype).requires_grad_(True)
    torch.manual_seed(1)
    y = fast_dropout(x, 0.2)
    kept = y != 0
    assert y.dtype == dtype
    assert kept.float().mean().item() == pytest.approx(0.8, abs=0.01)
    # scale 1 / keep-probability, the probability quantised to 2^-16 (relative error < 1e-5)
    expected = (x[kept].float() / 0.8).to(dtype).float()
    rtol = 1e-5 if dtype == torch.float32 else 2**-7  # one bf16 ulp
    torch.testing.assert_close(y[kept].float(), expected, rtol=rtol, atol=0)
    y.float().sum().backward()
    torch.testing.assert_close(x.grad.float(), kept.float() / 0.8, rtol=1e-2, atol=0)
    torch.manual_seed(1)
    assert torch.equal(fast_dropout(x.detach(), 0.2) != 0, kept)  # seeded
    assert fast_dropout(x, 0.2, training=False) is x and fast_dropout(x, 0.0) is x


def test_use_fast_dropout_replaces_modules() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.Sequential(nn.Dropout(0.0)))
    assert use_fast_dropout(model) == 1
    assert isinstance(model[1], FastDropout) and type(model[2][0]) is nn.Dropout


def _model(backbone: str, method: str) -> SERModel:
    torch.manual_seed(0)
    bb = load_backbone(backbone)
    attach(bb, build_method(method, {"rank": 2} if method == "lora" else {}))
    return SERModel(bb, 4, HeadConfig()).eval()


@pytest.mark.parametrize("backbone", ["tiny-wavlm", "tiny-whisper"])
def test_bf16_frozen_copy_keeps_trainables_and_frontend_float32(backbone: str) -> None:
    model = _model(backbone, "lora")
    waves, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000])
    with torch.no_grad():
        feats, frames = model.backbone.frontend(waves, lengths)
        ref = model.head(*_encode(model, feats, frames))
    assert cast_frozen_to_bf16(model.backbone) > 0
    for module in model.backbone.frontend_modules():
        assert all(p.dtype == torch.float32 for p in module.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.head(*_encode(model, feats.to(torch.bfloat16), frames))
    torch.testing.assert_close(out.float(), ref, rtol=0.1, atol=0.1)


def _encode(model: SERModel, feats: torch.Tensor, frames: torch.Tensor):
    out = model.backbone.encode(feats, frames)
    return out.hidden_states, out.frame_mask


def test_frozen_frontend_builds_no_graph() -> None:
    model = _model("tiny-wavlm", "lora").train()
    seen = []
    model.backbone.model.feature_extractor.register_forward_hook(
        lambda _m, _a, out: seen.append(out.requires_grad)
    )
    logits = model(torch.randn(2, 8000), torch.tensor([8000, 8000]))
    assert logits.requires_grad and seen == [False]  # no backward through the frozen CNN
    full = _model("tiny-wavlm", "full").train()
    full.backbone.model.feature_extractor.register_forward_hook(
        lambda _m, _a, out: seen.append(out.requires_grad)
    )
    full(torch.randn(2, 8000), torch.tensor([8000, 8000]))
    assert seen[-1] is True
