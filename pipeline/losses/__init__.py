"""Losses: deep-supervised DiceCE with explicit head order and weights."""

from __future__ import annotations

from pipeline.losses.deep_supervision import DeepSupervisedDiceCELoss

__all__ = ["DeepSupervisedDiceCELoss"]
