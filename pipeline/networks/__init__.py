"""Networks: :class:`UNetPlusPlus` (2D/3D, deep supervision, pruned inference, TorchScript-safe)."""

from __future__ import annotations

from pipeline.networks.blocks import UpCatNode
from pipeline.networks.monai_compat import from_monai_state_dict, to_monai_state_dict
from pipeline.networks.unetplusplus import UNetPlusPlus

__all__ = ["UNetPlusPlus", "UpCatNode", "from_monai_state_dict", "to_monai_state_dict"]
