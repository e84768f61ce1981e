"""Model Zoo conventions: a stand-alone ``inference.json`` that shares ``train.json``'s definitions."""

from __future__ import annotations

from pipeline.zoo.layout import SHARED_KEYS, sync_inference_config

__all__ = ["SHARED_KEYS", "sync_inference_config"]
