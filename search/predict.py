"""Emotion prediction for audio files with an exported adapter folder.

The audio policy comes from the adapter's own ``emotune.json``: files are decoded to the
backbone's sample rate and cropped as the adapter's dev/test clips were (``eval_crop``: the
centre or the first ``max_seconds``, or the whole clip).
The MLflow pyfunc model that ``emotune export`` registers (:mod:`search.mlflow_model`) wraps a
:class:`Predictor`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.data.audio import AudioError, load_audio, window_starts
from trainables.export import load_adapter

log = logging.getLogger(__name__)


class PredictionError(ValueError):
    """The model's output for a file cannot be used (e.g. NaN); the message names the file."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"prediction for {path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        # Picklable with its fields (Ray and MLflow serving may pickle a raised exception).
        return type(self), (self.path, self.reason)


NOT_FINITE = "model output is not finite (NaN or Inf): the adapter's weights may be corrupt"


class Predictor:
    """A classifier loaded once from an adapter folder, applied file by file.

    A prepared clip longer than the adapter's ``eval_max_seconds`` (default 60 s; at most what
    the backbone encodes at once) is classified like a long dev / test clip in training: the
    model runs on each evaluation window (:func:`window_starts`) and the clip's logits are the
    mean of the windows' logits.

    Args:
        adapter_dir: a folder written by ``trainables.export.save_adapter`` (or an export of
            ``emotune export``, which holds the same files).
        device: torch device string.
        backbone: override of the base backbone recorded in the adapter (e.g. a local copy of
            the hub model when offline).
        allow_pickle_weights: let the base backbone load pickle weights when it has no
            safetensors (unpickling runs code: only for files you trust).

    Attributes:
        labels: class names, in the order of the model's outputs.
        meta: the adapter's ``emotune.json``.
        sample_rate: rate the audio is decoded to, in Hz.
        max_samples: crop window in samples.
        crop_mode: ``center`` or ``full``.
        eval_window: longest stretch the model sees at once, in samples.
    """

    def __init__(
        self,
        adapter_dir: Path | str,
        device: str = "cpu",
        backbone: str | None = None,
        allow_pickle_weights: bool = False,
    ) -> None:
        self.adapter_dir = Path(adapter_dir)
        self.device = device
        loaded = load_adapter(
            self.adapter_dir,
            backbone=backbone,
            device=device,
            allow_pickle_weights=allow_pickle_weights,
        )
        self.model = loaded.model.eval()
        self.labels: list[str] = loaded.labels
        self.meta: dict[str, Any] = loaded.meta
        self.sample_rate = int(self.meta["sample_rate"])
        self.max_samples = max(1, round(float(self.meta["max_seconds"]) * self.sample_rate))
        self.crop_mode = str(self.meta.get("eval_crop", "center"))  # checked on load
        seconds = float(self.meta.get("eval_max_seconds", 60.0))
        self.eval_window = max(1, round(seconds * self.sample_rate))
        cap = getattr(self.model.backbone, "max_samples", None)  # Whisper encodes at most 30 s
        if cap is not None:
            self.eval_window = min(self.eval_window, int(cap))
        log.debug(
            "loaded %s (%s on %s, %d labels)",
            self.adapter_dir,
            self.meta["method"],
            self.meta["backbone"],
            len(self.labels),
        )

    def prepare(self, path: Path | str) -> np.ndarray:
        """Decodes and crops one file with the adapter's evaluation policy.

        Returns:
            float32 waveform, shape ``(samples,)``.

        Raises:
            AudioError: the file is missing or cannot be used as audio.
        """
        window = None if self.crop_mode == "full" else self.max_samples
        first = self.crop_mode == "first"
        return load_audio(path, self.sample_rate, window, first)  # reads no more than it keeps

    @torch.no_grad()
    def logits(self, wave: np.ndarray) -> np.ndarray:
        """Mean logits ``(num_labels,)`` over the evaluation windows of a prepared waveform."""
        wave = np.asarray(wave, dtype=np.float32)  # (samples,)
        size = min(wave.shape[0], self.eval_window)
        total = torch.zeros(len(self.labels), dtype=torch.float64)
        starts = window_starts(wave.shape[0], size)
        for start in starts:  # one window at a time: memory stays that of one window
            piece = torch.from_numpy(wave[start : start + size])[None].to(self.device)
            lengths = torch.tensor([size], dtype=torch.int64, device=self.device)
            total += self.model(piece, lengths)[0].float().cpu().double()  # (num_labels,)
        return (total / len(starts)).float().numpy()  # as training's predict() averages

    def probabilities(self, wave: np.ndarray, source: Path | str = "<waveform>") -> np.ndarray:
        """Class probabilities ``(num_labels,)`` of one prepared waveform ``(samples,)``.

        Raises:
            PredictionError: the model's output is not finite (named after ``source``).
        """
        logits = torch.from_numpy(self.logits(wave))
        probs = logits.softmax(dim=-1).numpy()
        if not (np.isfinite(logits.numpy()).all() and np.isfinite(probs).all()):
            raise PredictionError(source, NOT_FINITE)
        return probs

    def predict_file(self, path: Path | str) -> dict[str, Any]:
        """Predicts the emotion of one file.

        Returns:
            ``{"file": str, "label": str, "probabilities": {label: float}}``.

        Raises:
            AudioError: the file is missing or cannot be used as audio.
            PredictionError: the model's output is not finite (corrupt weights).
        """
        probs = self.probabilities(self.prepare(path), path)
        return {
            "file": str(path),
            "label": self.labels[int(probs.argmax())],
            "probabilities": {label: float(p) for label, p in zip(self.labels, probs)},
        }

    def predict_files(self, paths: Iterable[Path | str]) -> Iterator[dict[str, Any]]:
        """Predicts file after file; a file that cannot be used does not stop the others.

        Yields:
            The :meth:`predict_file` dict of each file, or ``{"file": str, "error": str}`` for
            a missing or undecodable file, or one the model gives no finite output for.
        """
        for path in paths:
            try:
                yield self.predict_file(path)
            except (AudioError, PredictionError) as exc:
                log.warning("%s", exc)
                yield {"file": str(path), "error": exc.reason}
