"""TorchScript export with embedded deployment metadata and parity verification.

Names load on first use: the batch job needs only :func:`load_torchscript` and must not pay for importing MONAI,
which the export side (:mod:`pipeline.export.metadata`, :mod:`pipeline.export.bundle`) needs.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["METADATA_VERSION", "ExportError", "ExportResult", "bundle_metadata", "deployment_metadata", "export_bundle",
           "export_torchscript", "load_network_weights", "load_torchscript", "model_signature", "resolve_device",
           "save_mlflow_model"]

_WHERE = {
    "METADATA_VERSION": "metadata", "deployment_metadata": "metadata",
    "bundle_metadata": "bundle", "export_bundle": "bundle", "load_network_weights": "bundle",
    "ExportError": "torchscript", "ExportResult": "torchscript", "export_torchscript": "torchscript",
    "load_torchscript": "torchscript", "resolve_device": "torchscript",
    "model_signature": "mlflow_model", "save_mlflow_model": "mlflow_model",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"pipeline.export.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'pipeline.export' has no attribute '{name}'")
