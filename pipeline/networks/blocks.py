"""Building blocks of the UNet++ decoder nodes, from MONAI's layers.

``UpCatNode`` is MONAI's ``basic_unet.UpCat`` generalised to per-axis scale factors, so that thick-slice CT can
pool and upsample anisotropically (e.g. ``(2, 2, 1)``). Its children keep UpCat's names (``upsample``,
``convs``), so MONAI ``BasicUNetPlusPlus`` weights load into it unchanged.

Example:
    >>> import torch
    >>> node = UpCatNode(3, in_chns=32, cat_chns=16, out_chns=16, scale=(2, 2, 1))
    >>> node(torch.zeros(1, 32, 4, 4, 3), torch.zeros(1, 16, 8, 8, 3)).shape
    torch.Size([1, 16, 8, 8, 3])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import UpSample
from monai.networks.nets.basic_unet import TwoConv
from torch import nn

__all__ = ["UpCatNode"]


class UpCatNode(nn.Module):
    """Upsample ``x`` by ``scale``, pad it to the skip's size, concatenate ``[skip, up(x)]``, two convolutions.

    Args:
        spatial_dims: 2 or 3.
        in_chns: channels of the map to upsample.
        cat_chns: channels of the (already concatenated) skip features.
        out_chns: output channels.
        act: activation type and arguments. Defaults to LeakyReLU(0.1), as MONAI's BasicUNet.
        norm: normalisation type and arguments. Defaults to instance norm with affine parameters.
        bias: convolution bias. Defaults to True.
        dropout: dropout ratio. Defaults to 0.
        upsample: ``"deconv"``, ``"nontrainable"`` or ``"pixelshuffle"`` (isotropic scales only).
            Defaults to ``"deconv"``.
        halves: upsample to ``in_chns // 2`` channels (MONAI's default for all nodes but the top row).
            Defaults to True.
        scale: per-axis scale factor, equal to the pooling stride of the level below. Defaults to 2.
    """

    def __init__(self, spatial_dims: int, in_chns: int, cat_chns: int, out_chns: int,
                 act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
                 norm: str | tuple = ("instance", {"affine": True}), bias: bool = True,
                 dropout: float | tuple = 0.0, upsample: str = "deconv", halves: bool = True,
                 scale: int | Sequence[int] = 2) -> None:
        super().__init__()
        scales = tuple(scale) if isinstance(scale, Sequence) else (int(scale),) * spatial_dims
        if upsample == "pixelshuffle" and len(set(scales)) != 1:
            raise ValueError(f"upsample 'pixelshuffle' needs isotropic strides, got {scales}")
        up_chns = in_chns // 2 if halves else in_chns
        self.upsample = UpSample(spatial_dims, in_chns, up_chns, scales, mode=upsample,
                                 interp_mode="linear", align_corners=True)
        self.convs = TwoConv(spatial_dims, cat_chns + up_chns, out_chns, act, norm, bias, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Args:
            x: features of the node below, ``(B, in_chns, *spatial/scale)``.
            skip: concatenated features of the same row, ``(B, cat_chns, *spatial)``.
        """
        up = self.upsample(x)
        dims = len(x.shape) - 2
        pad = [0] * (2 * dims)
        needs_pad = False
        for i in range(dims):  # odd sizes: pooling floored, so pad the far side (as MONAI's UpCat does)
            diff = skip.shape[-i - 1] - up.shape[-i - 1]
            if diff != 0:
                pad[2 * i + 1] = diff
                needs_pad = True
        if needs_pad:
            up = F.pad(up, pad, "replicate")
        return self.convs(torch.cat([skip, up], dim=1))
