"""Model Zoo conventions: a stand-alone ``inference.json`` that shares ``train.json``'s definitions, and the shipped
bundles' configs generated from one definition (``configs/bundles``)."""

from __future__ import annotations

from pipeline.zoo.generate import DEFINITIONS, GENERATED, bundle_definition, generate_bundle_configs, sync_bundle
from pipeline.zoo.layout import SHARED_KEYS, dumps_config, inference_config, sync_inference_config

__all__ = ["DEFINITIONS", "GENERATED", "SHARED_KEYS", "bundle_definition", "dumps_config", "generate_bundle_configs",
           "inference_config", "sync_bundle", "sync_inference_config"]
