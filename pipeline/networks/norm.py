"""Instance normalisation that stays fast when the network runs in channels-last memory format.

``torch.nn.InstanceNorm3d`` reshapes its input to ``(1, B*C, ...)``, which a channels-last tensor cannot be viewed
as: every call copies the tensor to the standard layout and back. Channels-last is what lets oneDNN's AMX and
AVX-512 convolution kernels skip their layout reorders, so on the CPU the network trains in that layout
(:func:`pipeline.training.prepare_network`), and this module normalises it in place of MONAI's instance norm:
one sample at a time, as batch norm in training mode over that sample, which is the same arithmetic
(per-channel mean and biased variance over the spatial axes) and which PyTorch computes natively in
channels-last. In the standard layout it calls ``F.instance_norm`` as before.

``GroupNorm(C, C)``, the other equivalent of instance norm, is not used: its backward pass has no channels-last
kernel on the CPU, which made the channels-last step slower than the standard layout. What each layout costs is
measured by ``benchmarks/training_throughput.py`` (docs/performance.md).

The parameters are ``weight`` and ``bias`` as in ``InstanceNorm3d(affine=True)``, so state dicts (ours and
MONAI's ``BasicUNetPlusPlus``) load unchanged.

Example:
    >>> import torch
    >>> x = torch.randn(2, 4, 6, 5, 3)
    >>> norm = ChannelsLastInstanceNorm(4)
    >>> cl = x.contiguous(memory_format=torch.channels_last_3d)
    >>> bool(torch.allclose(norm(cl), torch.nn.functional.instance_norm(x), atol=1e-5))
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelsLastInstanceNorm", "replace_instance_norms"]


class ChannelsLastInstanceNorm(nn.Module):
    """Instance norm (no running statistics) that is native in both memory layouts.

    Args:
        num_features: channels.
        eps: added to the variance. Defaults to 1e-5 (as ``InstanceNorm3d``).
        affine: learn a per-channel scale and shift. Defaults to True.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.eps = float(eps)
        if affine:
            self.weight = nn.Parameter(torch.ones(self.num_features))
            self.bias = nn.Parameter(torch.zeros(self.num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: ``(B, C, *spatial)`` in either memory layout; the output has the input's layout.
        """
        if x.is_contiguous() or not (x.is_contiguous(memory_format=torch.channels_last_3d)
                                     or x.is_contiguous(memory_format=torch.channels_last)):
            return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        parts = [F.batch_norm(s, None, None, self.weight, self.bias, True, 0.0, self.eps) for s in x.split(1)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}"


_INSTANCE = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def replace_instance_norms(module: nn.Module) -> nn.Module:
    """Swap every ``InstanceNorm{1,2,3}d`` without running statistics in ``module`` for
    :class:`ChannelsLastInstanceNorm`, keeping its parameters; returns ``module``.

    Args:
        module: any module tree (changed in place).
    """
    for name, child in module.named_children():
        if isinstance(child, _INSTANCE) and not child.track_running_stats:
            norm = ChannelsLastInstanceNorm(child.num_features, child.eps, child.affine)
            if child.affine:
                with torch.no_grad():
                    norm.weight.copy_(child.weight)
                    norm.bias.copy_(child.bias)
                norm.to(child.weight.device)
            setattr(module, name, norm.train(child.training))
        else:
            replace_instance_norms(child)
    return module
