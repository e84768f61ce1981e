"""Key mapping between MONAI ``BasicUNetPlusPlus`` state dicts and :class:`~pipeline.networks.UNetPlusPlus`.

MONAI names every node by its grid position; ours keeps the nodes in lists so that TorchScript can loop over
them (that loop is what lets inference stop at a pruned level). The modules themselves are the same, so the
mapping is a renaming of key prefixes:

==========================  ==================================
MONAI ``BasicUNetPlusPlus``  ``UNetPlusPlus``
==========================  ==================================
``conv_0_0.*``              ``stem.*``
``conv_{i}_0.*`` (i >= 1)   ``downs.{i-1}.*``
``upcat_{i}_{j}.*``         ``decoder.{i+j-1}.{j-1}.*``
``final_conv_0_{j}.*``      ``heads.{j-1}.*``
==========================  ==================================

``UNetPlusPlus.load_state_dict`` recognises MONAI keys and renames them itself, so a MONAI checkpoint loads
directly; :func:`to_monai_state_dict` goes the other way.

Example:
    >>> monai_to_ours("upcat_1_2.convs.conv_0.conv.weight")
    'decoder.2.1.convs.conv_0.conv.weight'
    >>> ours_to_monai("decoder.2.1.convs.conv_0.conv.weight")
    'upcat_1_2.convs.conv_0.conv.weight'
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

import torch

__all__ = ["from_monai_state_dict", "is_monai_state_dict", "monai_to_ours", "ours_to_monai", "to_monai_state_dict"]

_MONAI = re.compile(r"^(?P<kind>conv|upcat|final_conv)_(?P<i>\d+)_(?P<j>\d+)\.(?P<rest>.+)$")
_OURS = re.compile(r"^(?:(?P<stem>stem)|downs\.(?P<down>\d+)|decoder\.(?P<diag>\d+)\.(?P<node>\d+)|"
                   r"heads\.(?P<head>\d+))\.(?P<rest>.+)$")


def monai_to_ours(key: str) -> str:
    """Rename one MONAI ``BasicUNetPlusPlus`` key; keys that are not node keys come back unchanged."""
    match = _MONAI.match(key)
    if not match:
        return key
    kind, i, j, rest = match["kind"], int(match["i"]), int(match["j"]), match["rest"]
    if kind == "conv" and j == 0:
        return f"stem.{rest}" if i == 0 else f"downs.{i - 1}.{rest}"
    if kind == "upcat":
        return f"decoder.{i + j - 1}.{j - 1}.{rest}"
    if kind == "final_conv" and i == 0:
        return f"heads.{j - 1}.{rest}"
    return key


def ours_to_monai(key: str) -> str:
    """Rename one of our keys to MONAI's naming (inverse of :func:`monai_to_ours`)."""
    match = _OURS.match(key)
    if not match:
        return key
    rest = match["rest"]
    if match["stem"]:
        return f"conv_0_0.{rest}"
    if match["down"] is not None:
        return f"conv_{int(match['down']) + 1}_0.{rest}"
    if match["diag"] is not None:
        diag, node = int(match["diag"]), int(match["node"])
        col = node + 1
        return f"upcat_{diag + 1 - col}_{col}.{rest}"
    return f"final_conv_0_{int(match['head']) + 1}.{rest}"


def is_monai_state_dict(state_dict: Mapping[str, object], prefix: str = "") -> bool:
    """True when the keys under ``prefix`` use MONAI's ``conv_0_0`` naming."""
    return any(k.startswith(f"{prefix}conv_0_0.") for k in state_dict)


def from_monai_state_dict(state_dict: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """A MONAI ``BasicUNetPlusPlus`` state dict with our key names."""
    return OrderedDict((monai_to_ours(k), v) for k, v in state_dict.items())


def to_monai_state_dict(state_dict: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Our state dict with MONAI ``BasicUNetPlusPlus`` key names (depth 4 models load into MONAI's class)."""
    return OrderedDict((ours_to_monai(k), v) for k, v in state_dict.items())
