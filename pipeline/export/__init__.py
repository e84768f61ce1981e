"""TorchScript and ONNX export of a trained model with its model card embedded, parity-checked.

:func:`export_checkpoint` exports a checkpoint with the card beside it (``pipeline export --checkpoint`` and the
end-of-training export); :func:`export_bundle` does so with a bundle's configs, for checkpoints without a card or to
override the card's settings. The suffix of the file written chooses the format: ``.ts`` TorchScript
(:func:`export_torchscript`), ``.onnx`` ONNX (:func:`export_onnx`). The MLflow pyfunc around an exported TorchScript
file is :mod:`pipeline.export.mlflow_model` (imported on its own: it costs MLflow's import time). Deployment itself
(loading the file, preprocessing, the predictor) needs none of this: see :mod:`pipeline.deploy` and
:mod:`pipeline.inference`.
"""

from __future__ import annotations

from pipeline.export.bundle import bundle_card, export_bundle, override_card
from pipeline.export.checkpoint import card_for_checkpoint, export_checkpoint, export_model
from pipeline.export.common import FORMATS, ExportError, ExportResult, export_format
from pipeline.export.network import build_network, network_for_checkpoint
from pipeline.export.onnx import export_onnx
from pipeline.export.torchscript import export_torchscript

__all__ = ["FORMATS", "ExportError", "ExportResult", "build_network", "bundle_card", "card_for_checkpoint",
           "export_bundle", "export_checkpoint", "export_format", "export_model", "export_onnx", "export_torchscript",
           "network_for_checkpoint", "override_card"]
