"""The MLflow pyfunc model that ``emotune export`` registers, logged as code (no pickle).

MLflow's "models from code": :func:`search.registration.register_export` logs this file's path
as ``python_model``; MLflow copies the file into the logged model and, at
``mlflow.pyfunc.load_model``, runs it and takes the instance passed to
:func:`mlflow.models.set_model` below. Nothing is unpickled, so a model in the registry is this
readable file plus the adapter folder (safetensors + JSON), and the adapter is loaded through
the same checks as ``emotune predict``.
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc
import pandas as pd

COLUMNS = ["file", "label", "probabilities", "error"]


class EmotunePyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper around :class:`search.predict.Predictor`.

    The model's ``adapter`` artifact is the export folder. Input: a DataFrame with a ``path``
    column. Output: one row per path with ``file``, ``label``, ``probabilities`` (dict) and
    ``error`` (None when the file was usable).
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Loads the adapter folder (the ``adapter`` artifact) once."""
        # Imported here: MLflow runs this file when logging too, where no model is needed.
        from search.predict import Predictor

        self.predictor = Predictor(context.artifacts["adapter"])

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Predicts every path of ``model_input["path"]``; unusable files get an ``error``."""
        paths = [str(p) for p in pd.DataFrame(model_input)["path"]]
        rows = [[r.get(c) for c in COLUMNS] for r in self.predictor.predict_files(paths)]
        return pd.DataFrame(rows, columns=COLUMNS)


mlflow.models.set_model(EmotunePyfunc())
