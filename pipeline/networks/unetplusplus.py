"""UNet++ with deep supervision and pruned inference, for 2D and 3D, TorchScript-safe.

Zhou, Rahman Siddiquee, Tajbakhsh, Liang. "UNet++: Redesigning Skip Connections to Exploit Multiscale Features
in Image Segmentation". IEEE TMI 39(6), 2020 (arXiv:1912.05074).

Node ``X(i, j)`` sits at resolution level ``i`` (0 = full resolution) and column ``j``; ``X(i, 0)`` is the
encoder and ``X(i, j) = H([X(i, 0), ..., X(i, j-1), Up(X(i+1, j-1))])``. The sub-network UNet++ ``L_k`` ends at
``X(0, k)`` and needs only the nodes with ``i + j <= k``: it is computed by walking the anti-diagonals
``i + j = 1, ..., k`` and stopping. That is what MONAI's ``BasicUNetPlusPlus`` does not do: it always computes
all nodes (see ``../shared/DESIGN.md``).

Outputs:
    - ``model.train()`` with ``deep_supervision=True``: a list of all heads, **deepest first**
      ``[head(X(0, depth)), ..., head(X(0, 1))]``, the order in which ``monai.losses.DeepSupervisionLoss``
      weights its inputs (the first, the final head, gets the largest weight).
    - ``model.all_levels = True`` (any mode): the same list of all heads. Head ``k`` of the full pass equals
      level ``k``'s pruned output (``X(0, k)`` needs the same nodes either way), so one pass scores every level
      (:func:`pipeline.training.levels.score_levels`).
    - otherwise: one tensor, the head of level ``model.level`` (1..depth, default depth), computing only the
      nodes that level needs. ``model.level`` can be changed at any time, also on a scripted module.

Blocks are MONAI's (``TwoConv``, ``UpSample``, ``Convolution`` with MONAI's act/norm factories); with
``depth=4``, isotropic strides of 2 and the same options, the weights are MONAI ``BasicUNetPlusPlus``'s
(see :mod:`pipeline.networks.monai_compat`). Two changes of implementation, not of arithmetic, make it train
faster on the CPU in channels-last layout: instance norms are :class:`~pipeline.networks.norm.ChannelsLastInstanceNorm`
(same parameters) and the decoder nodes convolve their skip features without concatenating them
(:class:`~pipeline.networks.blocks.UpCatNode`). One change keeps bf16 training right: 3D convolutions are
:class:`~pipeline.networks.conv.GuardedConv3d`, which train in fp32 where oneDNN's bf16 weight gradient is wrong.

Example:
    >>> import torch
    >>> net = UNetPlusPlus(3, 1, 3, features=(8, 8, 16, 32, 64, 8), deep_supervision=True)
    >>> [o.shape[1] for o in net(torch.zeros(1, 1, 32, 32, 32))]    # training: 4 heads, deepest first
    [3, 3, 3, 3]
    >>> net.eval().level = 2                                         # pruned: computes X(i, j), i + j <= 2
    >>> net(torch.zeros(1, 1, 33, 32, 20)).shape
    torch.Size([1, 3, 33, 32, 20])
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv, Pool
from monai.networks.nets.basic_unet import TwoConv
from torch import nn

from pipeline.networks.blocks import UpCatNode
from pipeline.networks.conv import guard_bf16_convs
from pipeline.networks.monai_compat import from_monai_state_dict, is_monai_state_dict
from pipeline.networks.norm import replace_instance_norms

__all__ = ["UNetPlusPlus"]

_ACT = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True})
_NORM = ("instance", {"affine": True})


def _normalise_strides(strides: int | Sequence, depth: int, spatial_dims: int) -> list[list[int]]:
    """``2`` | ``(2, 2, 1)`` | ``[(2, 2, 1), (2, 2, 1), 2, 2]`` -> one per-axis stride list per level."""
    def per_axis(value: int | Sequence[int]) -> list[int]:
        values = [int(value)] * spatial_dims if isinstance(value, (int, float)) else [int(v) for v in value]
        if len(values) != spatial_dims or min(values) < 1:
            raise ValueError(f"each stride must be a positive int or {spatial_dims} positive ints, got {value}")
        return values

    if isinstance(strides, (int, float)):
        return [per_axis(strides) for _ in range(depth)]
    items = list(strides)
    if items and all(isinstance(v, (int, float)) for v in items) and len(items) == spatial_dims and len(items) != depth:
        return [per_axis(items) for _ in range(depth)]  # one per-axis stride for every level
    if len(items) != depth:
        raise ValueError(f"strides must be an int, one per-axis stride, or one entry per level ({depth}), "
                         f"got {strides}")
    return [per_axis(v) for v in items]


class UNetPlusPlus(nn.Module):
    """UNet++ (nested U-Net) with deep supervision and inference pruned to level L1..L``depth``.

    Args:
        spatial_dims: 2 or 3. Defaults to 3.
        in_channels: input channels. Defaults to 1.
        out_channels: output channels (classes, background included). Defaults to 2.
        features: ``depth + 2`` ints: encoder features per level 0..depth, then the features of the last node
            ``X(0, depth)``. Defaults to MONAI's ``(32, 32, 64, 128, 256, 32)``.
        depth: number of poolings, giving levels L1..L``depth``; 1..6. Defaults to 4.
        strides: pooling stride per level (upsampling scale of the level above): an int, one per-axis
            sequence for all levels, or ``depth`` entries of either, e.g. ``[(2, 2, 1), (2, 2, 1), 2, 2]`` for
            thick-slice CT. Defaults to 2.
        deep_supervision: in training mode, return every head (deepest first). Defaults to False.
        level: inference level, 1..depth. Defaults to None (= depth, the full network).
        act: activation (MONAI factory name and arguments). Defaults to LeakyReLU(0.1).
        norm: normalisation, e.g. ``("instance", {"affine": True})`` or ``"batch"``. Defaults to instance.
        bias: convolution bias. Defaults to True.
        dropout: dropout ratio. Defaults to 0.
        upsample: ``"deconv"``, ``"nontrainable"`` (interpolation) or ``"pixelshuffle"``. Defaults to
            ``"deconv"``.

    Raises:
        ValueError: any argument out of range; the message names the rule and the value.
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
                 features: Sequence[int] = (32, 32, 64, 128, 256, 32), depth: int = 4,
                 strides: int | Sequence = 2, deep_supervision: bool = False, level: int | None = None,
                 act: str | tuple = _ACT, norm: str | tuple = _NORM, bias: bool = True,
                 dropout: float | tuple = 0.0, upsample: str = "deconv") -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if not 1 <= int(depth) <= 6:
            raise ValueError(f"depth must be between 1 and 6, got {depth}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels} and {out_channels}")
        fea = [int(f) for f in features]
        if len(fea) != depth + 2 or min(fea) < 1:
            raise ValueError(f"features must be depth + 2 = {depth + 2} positive ints (one per level, then the "
                             f"last node's), got {tuple(features)}")
        if upsample not in ("deconv", "nontrainable", "pixelshuffle"):
            raise ValueError(f"upsample must be one of deconv, nontrainable, pixelshuffle, got '{upsample}'")
        # the constructor's arguments as JSON values: the model card records them, and the export rebuilds the
        # network from them (pipeline.deploy.describe); TorchScript leaves this unused attribute out
        self.init_args = _json_value({"spatial_dims": spatial_dims, "in_channels": in_channels,
                                      "out_channels": out_channels, "features": fea, "depth": depth,
                                      "strides": strides, "deep_supervision": deep_supervision, "act": act,
                                      "norm": norm, "bias": bias, "dropout": dropout, "upsample": upsample})
        self.spatial_dims = int(spatial_dims)
        self.depth = int(depth)
        self.features = fea
        self.strides: list[list[int]] = _normalise_strides(strides, self.depth, self.spatial_dims)
        # smallest input size per axis that level k accepts: the product of its k strides
        self.min_sizes: list[list[int]] = [
            [math.prod(s[d] for s in self.strides[:k]) for d in range(self.spatial_dims)]
            for k in range(1, self.depth + 1)]
        self.deep_supervision = bool(deep_supervision)
        self.all_levels = False  # True: every head in any mode (scoring all levels in one pass)
        self.level = self.depth if level is None else level

        self.stem = TwoConv(spatial_dims, in_channels, fea[0], act, norm, bias, dropout)
        self.downs = nn.ModuleList(
            nn.Sequential(OrderedDict(
                max_pooling=Pool["MAX", spatial_dims](kernel_size=self.strides[i - 1], stride=self.strides[i - 1]),
                convs=TwoConv(spatial_dims, fea[i - 1], fea[i], act, norm, bias, dropout)))
            for i in range(1, self.depth + 1))
        decoder = []
        for k in range(self.depth):  # anti-diagonal i + j = k + 1; node index j -> X(k - j, j + 1)
            nodes = []
            for j in range(k + 1):
                i, col = k - j, j + 1
                out = fea[-1] if (i, col) == (0, self.depth) else fea[i]
                nodes.append(UpCatNode(spatial_dims, fea[i + 1], fea[i] * col, out, act, norm, bias, dropout,
                                       upsample, halves=i != 0, scale=self.strides[i]))
            decoder.append(nn.ModuleList(nodes))
        self.decoder = nn.ModuleList(decoder)
        self.heads = nn.ModuleList(
            Conv["conv", spatial_dims](fea[-1] if col == self.depth else fea[0], out_channels, kernel_size=1)
            for col in range(1, self.depth + 1))
        replace_instance_norms(self)  # same arithmetic and parameters; native in channels-last (networks/norm.py)
        guard_bf16_convs(self)  # oneDNN's bf16 weight gradient is wrong for depth < kernel (networks/conv.py)
        self.register_load_state_dict_pre_hook(_rename_monai_keys)

    def __setattr__(self, name: str, value: object) -> None:
        if name == "level" and "depth" in self.__dict__ and \
                (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= self.depth):
            raise ValueError(f"level must be an int between 1 and depth={self.depth}, got {value!r}")
        super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Args:
            x: ``(B, in_channels, *spatial)``; each spatial size at least the product of the strides of the
                levels computed (16 for the full depth-4 network with strides 2), and larger along one axis at
                least, so that the deepest level keeps two voxels. Odd sizes are fine.

        Returns:
            Training with deep supervision, or ``self.all_levels``: ``[head(X(0, depth)), ..., head(X(0, 1))]``.
            Otherwise the head of ``self.level``: ``(B, out_channels, *spatial)``.
        """
        all_heads = (self.training and self.deep_supervision) or self.all_levels
        if self.level < 1 or self.level > self.depth:
            raise ValueError(f"level must be between 1 and depth={self.depth}, got {self.level}")
        n = self.depth if all_heads else self.level
        need = self.min_sizes[n - 1]
        voxels = 1
        for d in range(self.spatial_dims):
            if x.shape[d + 2] < need[d]:
                raise ValueError(f"input spatial size must be >= {need} (the product of the strides of the {n} "
                                 f"levels computed), got {list(x.shape[2:])}")
            voxels *= x.shape[d + 2] // need[d]
        if voxels < 2:
            raise ValueError(f"input spatial size must pool to more than one voxel at the deepest level computed "
                             f"(normalisation needs at least two), i.e. exceed {need} along one axis, "
                             f"got {list(x.shape[2:])}")
        rows: list[list[torch.Tensor]] = [[self.stem(x)]]
        for k, (down, nodes) in enumerate(zip(self.downs, self.decoder)):
            if k < n:
                rows.append([down(rows[k][0])])
                for j, node in enumerate(nodes):
                    row = rows[k - j]
                    row.append(node(rows[k - j + 1][j], row[:]))
        top = rows[0]
        if all_heads:
            outputs: list[torch.Tensor] = []
            for j, head in enumerate(self.heads):
                outputs.insert(0, head(top[j + 1]))
            return outputs
        result = top[n]
        for j, head in enumerate(self.heads):
            if j + 1 == n:
                result = head(top[n])
        return result

    def min_input_size(self, level: int | None = None) -> list[int]:
        """Smallest spatial size per axis that ``level`` (default: the full depth) accepts."""
        return list(self.min_sizes[(level or self.depth) - 1])

    @classmethod
    def from_monai(cls, net: nn.Module) -> UNetPlusPlus:
        """The equivalent model of a MONAI ``BasicUNetPlusPlus``, its modules (and so weights) copied.

        Activation, normalisation, dropout and upsampling modules are taken over as they are, so the output
        equals MONAI's for every option MONAI supports.

        Args:
            net: a ``monai.networks.nets.BasicUNetPlusPlus`` instance.
        """
        if not hasattr(net, "conv_0_0") or not hasattr(net, "upcat_0_4"):
            raise TypeError(f"from_monai needs a monai BasicUNetPlusPlus, got {type(net).__name__}")
        first = net.conv_0_0.conv_0.conv
        spatial_dims = first.weight.ndim - 2
        features = [getattr(net, f"conv_{i}_0")[-1].conv_1.conv.out_channels if i else
                    net.conv_0_0.conv_1.conv.out_channels for i in range(5)]
        features.append(net.upcat_0_4.convs.conv_1.conv.out_channels)
        upsample = {"deconv": "deconv", "preconv": "nontrainable", "upsample_non_trainable": "nontrainable"}.get(
            next(iter(net.upcat_0_1.upsample._modules)), "pixelshuffle")
        model = cls(spatial_dims, first.in_channels, net.final_conv_0_4.out_channels, features, depth=4,
                    deep_supervision=bool(net.deep_supervision), upsample=upsample)
        model.stem = copy.deepcopy(net.conv_0_0)
        for i in range(1, 5):
            model.downs[i - 1] = copy.deepcopy(getattr(net, f"conv_{i}_0"))
        for k, nodes in enumerate(model.decoder):
            for j, node in enumerate(nodes):
                source = getattr(net, f"upcat_{k - j}_{j + 1}")
                node.upsample = copy.deepcopy(source.upsample)
                node.convs = copy.deepcopy(source.convs)
        for j in range(4):
            model.heads[j] = copy.deepcopy(getattr(net, f"final_conv_0_{j + 1}"))
        model.init_args = {}  # MONAI's modules were copied as they are: the arguments above do not describe them
        return guard_bf16_convs(replace_instance_norms(model)).train(net.training)


def _json_value(value: object) -> object:
    """Tuples as lists, numbers as Python numbers: what JSON gives back, so a card's arguments compare equal."""
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return value
    return value.item() if hasattr(value, "item") else str(value)


def _rename_monai_keys(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    """load_state_dict pre-hook: accept MONAI ``BasicUNetPlusPlus`` key names (renamed in place)."""
    if not is_monai_state_dict(state_dict, prefix):
        return
    renamed = from_monai_state_dict({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)})
    for key in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[key]
    state_dict.update({prefix + k: v for k, v in renamed.items()})
