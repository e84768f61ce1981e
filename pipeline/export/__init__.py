"""TorchScript export with embedded deployment metadata and parity verification."""

from __future__ import annotations

from pipeline.export.bundle import bundle_metadata, export_bundle, load_network_weights
from pipeline.export.metadata import METADATA_VERSION, deployment_metadata
from pipeline.export.torchscript import ExportError, ExportResult, export_torchscript, load_torchscript, resolve_device

__all__ = ["METADATA_VERSION", "ExportError", "ExportResult", "bundle_metadata", "deployment_metadata", "export_bundle",
           "export_torchscript", "load_network_weights",
           "load_torchscript", "resolve_device"]
