"""Building blocks of the UNet++ decoder nodes, from MONAI's layers.

``UpCatNode`` is MONAI's ``basic_unet.UpCat`` generalised to per-axis scale factors, so that thick-slice CT can
pool and upsample anisotropically (e.g. ``(2, 2, 1)``). Its children keep UpCat's names (``upsample``,
``convs``), so MONAI ``BasicUNetPlusPlus`` weights load into it unchanged.

It takes the skip features as a list and never concatenates them: a convolution over concatenated channels is
the sum of convolutions of each part with its slice of the weights, which is the same arithmetic without the
copy. In UNet++ the top-row nodes concatenate up to five full-resolution maps; in channels-last training on the
CPU, the concatenation, the non-contiguous gradient slices it hands back and their accumulation are a noticeable
share of a training step (docs/performance.md).

Example:
    >>> import torch
    >>> node = UpCatNode(3, in_chns=32, cat_chns=16, out_chns=16, scale=(2, 2, 1))
    >>> node(torch.zeros(1, 32, 4, 4, 3), [torch.zeros(1, 8, 8, 8, 3), torch.zeros(1, 8, 8, 8, 3)]).shape
    torch.Size([1, 16, 8, 8, 3])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import UpSample
from monai.networks.nets.basic_unet import TwoConv
from torch import nn

from pipeline.networks.conv import needs_fp32

__all__ = ["UpCatNode"]


class UpCatNode(nn.Module):
    """Upsample ``x`` by ``scale``, pad it to the skips' size, two convolutions over ``[*skips, up(x)]``.

    Args:
        spatial_dims: 2 or 3.
        in_chns: channels of the map to upsample.
        cat_chns: channels of the skip features, all parts together.
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
        first = self.convs.conv_0.conv
        self.spatial_dims = int(spatial_dims)
        self._padding = [int(p) for p in first.padding]

    def _first_conv(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """``conv_0``'s convolution of the channel concatenation of ``parts``, as a sum over the parts."""
        conv = self.convs.conv_0.conv
        weight = conv.weight
        out = torch.empty(0)
        start = 0
        for index, part in enumerate(parts):
            stop = start + part.shape[1]
            bias = conv.bias if index == 0 else None
            if self.spatial_dims == 3:
                term = F.conv3d(part, weight[:, start:stop], bias, 1, self._padding)
            else:
                term = F.conv2d(part, weight[:, start:stop], bias, 1, self._padding)
            out = term if index == 0 else out + term
            start = stop
        return out

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Args:
            x: features of the node below, ``(B, in_chns, *spatial/scale)``.
            skips: features of the same row, each ``(B, c_k, *spatial)`` with ``sum(c_k) == cat_chns``.
        """
        up = self.upsample(x)
        skip = skips[0]
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
        parts = list(skips)
        parts.append(up)
        if not torch.jit.is_scripting() and self.training and self.spatial_dims == 3 and \
                needs_fp32(up, int(self.convs.conv_0.conv.kernel_size[0])):
            first = self._fp32_first_conv(parts)  # see pipeline.networks.conv: oneDNN's bf16 weight gradient
        else:
            first = self._first_conv(parts)
        return self.convs.conv_1(self.convs.conv_0.adn(first))

    @torch.jit.unused
    def _fp32_first_conv(self, parts: list[torch.Tensor]) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return self._first_conv([part.float() for part in parts])
