"""Per-item frame features of a split: the front-end call and where its output comes from.

:class:`FrontendExtractor` runs a backbone's front end on one clip; a :class:`FeatureSource`
serves the features of each item, either memory-mapped from a cache entry
(:class:`TableSource`) or computed on every access (:class:`LiveSource`). Both go through the
same per-clip extractor call, so a float32 cache gives identical tensors. The crop policy that
decides which items exist is :mod:`trainables.data.frames`'s.
"""

from __future__ import annotations

from typing import Protocol

import torch

from trainables.backbones import Backbone
from trainables.data.cache import FeatureTable
from trainables.data.dataset import ClipSet


class FrontendExtractor:
    """Runs a backbone's front end on one clip, always in float32 and without autograd.

    Args:
        backbone: whose :meth:`Backbone.frontend` to run.
        device: where to run it; results come back on the CPU.
    """

    def __init__(self, backbone: Backbone, device: str | torch.device = "cpu") -> None:
        self.backbone = backbone
        self.device = torch.device(device)

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        """``(samples,)`` waveform -> ``(frames, dim)`` float32 CPU features."""
        x = wave.reshape(1, -1).to(self.device, torch.float32)
        lengths = torch.tensor([x.shape[1]], device=self.device)
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            feats, frames = self.backbone.frontend(x, lengths)  # (1, frames, dim)
        return feats[0, : int(frames[0])].float().cpu()

    def frames(self, samples: int) -> int:
        """Frames the front end yields for ``samples`` input samples."""
        return self.backbone.frontend_frames(samples)


class FeatureSource(Protocol):
    """Per-item frame features, cached or computed."""

    def __len__(self) -> int: ...

    def num_frames(self, index: int) -> int: ...

    def features(self, index: int, start: int = 0, stop: int | None = None) -> torch.Tensor: ...


class TableSource:
    """Features read from a memory-mapped cache entry."""

    def __init__(self, table: FeatureTable) -> None:
        self.table = table
        self._frames = table.frames

    def __len__(self) -> int:
        return len(self._frames)

    def num_frames(self, index: int) -> int:
        return self._frames[index]

    def features(self, index: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return self.table.features(index, start, stop)


class LiveSource:
    """Features computed by the front end on every access (no cache)."""

    def __init__(self, clips: ClipSet, extract: FrontendExtractor) -> None:
        self.clips = clips
        self.extract = extract

    def __len__(self) -> int:
        return len(self.clips)

    def num_frames(self, index: int) -> int:
        return self.extract.frames(self.clips.num_samples(index))

    def features(self, index: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return self.extract(self.clips[index].wave)[start:stop]
