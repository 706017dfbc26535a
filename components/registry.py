"""Registering a trial's model folder in the MLflow Model Registry, whatever the framework.

The folder (:mod:`components.model_folder`) is logged as an MLflow ``pyfunc`` model whose artifact is the
folder itself; :class:`SavedModel` is its loader. ``mlflow.pyfunc.load_model(uri)`` then predicts
with a TorchScript ``model.pt`` (no trainer class needed), and ``.unwrap_python_model().folder`` (or
``mlflow.artifacts.download_artifacts(uri)``) gives any other framework's files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from mlflow.pyfunc import PythonModel

from components.model_folder import TORCHSCRIPT


class SavedModel(PythonModel):  # type: ignore[misc]
    """Loads a trial's model folder: TorchScript when there is one, else just the files."""

    folder: Path
    module: Any = None

    def load_context(self, context: Any) -> None:
        self.folder = Path(context.artifacts["model"])
        if (self.folder / TORCHSCRIPT).is_file():
            from components.model_folder import load_torchscript

            self.module = load_torchscript(self.folder)

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        """The TorchScript module's output for ``model_input`` (array-like), as NumPy."""
        if self.module is None:
            raise TypeError(
                f"this model is a folder of files ({', '.join(sorted(os.listdir(self.folder)))}):"
                " load them with their own framework from .unwrap_python_model().folder"
            )
        import numpy as np
        import torch

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.module(x).numpy()


def log_folder(folder: Path, requirements: list[str]) -> str:
    """Log ``folder`` as the active run's ``model`` (pyfunc); returns the model URI."""
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=SavedModel(),
        artifacts={"model": str(folder)},
        pip_requirements=requirements,
    )
    return str(info.model_uri)
