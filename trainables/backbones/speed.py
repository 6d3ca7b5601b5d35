"""Cheaper kernels for training steps on CPU (profiled on a 2-core AVX512/AMX machine).

* Dropout masks: ``torch.bernoulli_`` draws one random number per element with the slow generic
  path (about 5 ns / element here); dropout was ~30 % of a bf16 WavLM-Base LoRA step. We draw
  16-bit uniforms in bulk from 64-bit random words (four per word) and keep an element when its
  draw is above ``round(p * 2^16)``: the keep probability is ``1 - p`` up to 2^-17, the scale is
  exact for that probability, and torch's seeded generator drives it (same seed, same masks).
* bf16: under ``torch.autocast`` every frozen weight is cast again at every call (autocast caches
  only leaf tensors that require grad). :func:`cast_frozen_to_bf16` stores the frozen transformer
  in bf16 once; trainable tensors (LoRA, adapters, prompts, head) stay float32 masters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from trainables.backbones.base import Backbone

_RANGE = 1 << 16


_ONE_BF16_BITS = 0x3F80  # the int16 bit pattern of bfloat16 1.0


class _MaskedScale(torch.autograd.Function):
    """``y = scale * x * m`` for a 0/1 mask ``m``; the backward reuses ``m``.

    ``addcmul`` does the two products in one pass, in float32 arithmetic, so the scale is not
    rounded to bf16 (which would bias every kept activation by up to 0.4 %).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, m: torch.Tensor, scale: float
    ) -> torch.Tensor:
        ctx.save_for_backward(m)
        ctx.scale = scale  # type: ignore[attr-defined]
        return torch.addcmul(x.new_zeros(()), x, m, value=scale)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        (m,) = ctx.saved_tensors  # type: ignore[attr-defined]
        out = torch.addcmul(grad.new_zeros(()), grad, m, value=ctx.scale)  # type: ignore[attr-defined]
        return out, None, None


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A bf16 0/1 mask of ``shape`` with ones at probability ``1 - round(p * 2^16) / 2^16``.

    16-bit uniforms come four to a 64-bit random word; the comparison and the conversion to
    bf16 are done on the int16 bits (clamp to {t-1, t}, shift to {0, 1}, times the bit pattern
    of 1.0), three cheap integer passes instead of a slow bool -> float conversion.
    """
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    draws = words.view(torch.int16)[:n].view(shape)  # uniform on [-2^15, 2^15)
    t = round(p * _RANGE) - _RANGE // 2  # keep where draw >= t
    return torch.clamp(draws, t - 1, t).sub_(t - 1).mul_(_ONE_BF16_BITS).view(torch.bfloat16)


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout with bulk 16-bit random draws (see the module docstring).

    Falls back to :func:`torch.nn.functional.dropout` off the CPU, where it is already fast.

    Shapes: any ``x`` -> same shape and dtype.
    """
    if not training or p <= 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or not x.is_floating_point():
        return F.dropout(x, p, training)
    drop = round(p * _RANGE)
    if drop == 0:
        return x
    return _MaskedScale.apply(x, keep_mask(x.shape, p), _RANGE / (_RANGE - drop))


class FastDropout(nn.Module):
    """Drop-in for :class:`torch.nn.Dropout` using :func:`fast_dropout`."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(module: nn.Module) -> int:
    """Replaces every ``nn.Dropout`` with ``p > 0`` inside ``module``; returns how many."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                setattr(parent, name, FastDropout(child.p))
                count += 1
    return count


def cast_frozen_to_bf16(backbone: Backbone) -> int:
    """Stores the frozen weights of the transformer side of ``backbone`` in bfloat16.

    The front end is left alone (it runs in float32; see :mod:`trainables.data.frames`).
    Weight-normalised frozen convolutions (the positional conv) get their weight computed once.
    Inputs of :meth:`Backbone.encode` must then be bf16 and the call must run under autocast.

    Returns:
        The number of tensors converted.
    """
    frontend = {id(t) for m in backbone.frontend_modules() for t in (*m.parameters(), *m.buffers())}
    count = 0
    for module in backbone.modules():
        if parametrize.is_parametrized(module, "weight") and not any(
            p.requires_grad for p in module.parametrizations.weight.parameters()
        ):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    for p in backbone.parameters():
        if id(p) in frontend or p.requires_grad or not p.is_floating_point():
            continue
        p.data = p.data.to(torch.bfloat16)
        count += 1
    for module in backbone.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            # peft casts a LoRA layer's input to its (float32) weight dtype; autocast already
            # runs the low-rank matmuls in bf16, so that cast is two wasted copies per layer.
            module.cast_input_dtype_enabled = False
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf.is_floating_point() and id(buf) not in frontend:
                module._buffers[name] = buf.to(torch.bfloat16)  # noqa: SLF001
    return count
