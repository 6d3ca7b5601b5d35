"""Emotion prediction for audio files with an exported adapter folder.

The audio policy comes from the adapter's own ``emotune.json``: files are decoded to the
backbone's sample rate and centre-cropped to ``max_seconds`` (or kept whole when the adapter
was evaluated with ``eval_crop == "full"``), like dev/test clips during training.
:class:`EmotunePyfunc` wraps a :class:`Predictor` as the MLflow pyfunc model that
``emotune export`` registers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from trainables.data.audio import AudioError, crop, load_audio
from trainables.export import load_adapter

log = logging.getLogger(__name__)


class Predictor:
    """A classifier loaded once from an adapter folder, applied file by file.

    Args:
        adapter_dir: a folder written by ``trainables.export.save_adapter`` (or an export of
            ``emotune export``, which holds the same files).
        device: torch device string.
        backbone: override of the base backbone recorded in the adapter (e.g. a local copy of
            the hub model when offline).

    Attributes:
        labels: class names, in the order of the model's outputs.
        meta: the adapter's ``emotune.json``.
        sample_rate: rate the audio is decoded to, in Hz.
        max_samples: crop window in samples.
        crop_mode: ``center`` or ``full``.
    """

    def __init__(
        self, adapter_dir: Path | str, device: str = "cpu", backbone: str | None = None
    ) -> None:
        self.adapter_dir = Path(adapter_dir)
        self.device = device
        loaded = load_adapter(self.adapter_dir, backbone=backbone, device=device)
        self.model = loaded.model.eval()
        self.labels: list[str] = loaded.labels
        self.meta: dict[str, Any] = loaded.meta
        self.sample_rate = int(self.meta["sample_rate"])
        self.max_samples = max(1, round(float(self.meta["max_seconds"]) * self.sample_rate))
        self.crop_mode = "full" if self.meta.get("eval_crop") == "full" else "center"
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
        if not Path(path).is_file():
            raise AudioError(path, "no such file")
        wave = load_audio(Path(path), self.sample_rate)
        return np.ascontiguousarray(crop(wave, self.max_samples, self.crop_mode))

    @torch.no_grad()
    def probabilities(self, wave: np.ndarray) -> np.ndarray:
        """Class probabilities ``(num_labels,)`` of one prepared waveform ``(samples,)``."""
        waves = torch.from_numpy(np.asarray(wave, dtype=np.float32))[None].to(self.device)
        lengths = torch.tensor([waves.shape[1]], dtype=torch.int64, device=self.device)
        logits = self.model(waves, lengths)  # (1, num_labels)
        return logits.float().softmax(dim=-1)[0].cpu().numpy()

    def predict_file(self, path: Path | str) -> dict[str, Any]:
        """Predicts the emotion of one file.

        Returns:
            ``{"file": str, "label": str, "probabilities": {label: float}}``.

        Raises:
            AudioError: the file is missing or cannot be used as audio.
        """
        probs = self.probabilities(self.prepare(path))
        return {
            "file": str(path),
            "label": self.labels[int(probs.argmax())],
            "probabilities": {label: float(p) for label, p in zip(self.labels, probs)},
        }

    def predict_files(self, paths: Iterable[Path | str]) -> Iterator[dict[str, Any]]:
        """Predicts file after file; a file that cannot be used does not stop the others.

        Yields:
            The :meth:`predict_file` dict of each file, or ``{"file": str, "error": str}`` for
            a missing or undecodable file.
        """
        for path in paths:
            try:
                yield self.predict_file(path)
            except AudioError as exc:
                log.warning("%s", exc)
                yield {"file": str(path), "error": exc.reason}


class EmotunePyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper (what ``emotune export`` registers) around :class:`Predictor`.

    The model's ``adapter`` artifact is the export folder. Input: a DataFrame with a ``path``
    column. Output: one row per path with ``file``, ``label``, ``probabilities`` (dict) and
    ``error`` (None when the file was usable).
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.predictor = Predictor(context.artifacts["adapter"])

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        paths = [str(p) for p in pd.DataFrame(model_input)["path"]]
        columns = ["file", "label", "probabilities", "error"]
        rows = [[r.get(c) for c in columns] for r in self.predictor.predict_files(paths)]
        return pd.DataFrame(rows, columns=columns)
