"""3D convolutions that keep their weight gradients right in CPU bf16 training.

On the CPU, PyTorch 2.13 dispatches bf16 convolutions to oneDNN. Its 3D backward-weights kernel returns a wrong
weight gradient when the input's first spatial axis (depth) is shorter than the kernel along it and longer than
one voxel: for a 3x3x3 kernel, any input of depth 2. Most of the time the gradient is merely wrong (relative error
far above bf16's rounding); now and then it holds values read from uninitialised memory, up to 1e30, which AdamW
turns into NaN weights: the MRI bundle's first bf16 training (40x56x40 patches, so a 2x3x2 bottleneck) went NaN
at epoch 36 of 55. The input gradient and the forward pass are right, fp32 is right, and so are 2D convolutions
and depths of at least the kernel size (how often it happens, by depth, is in docs/performance.md's table of
levers; ``tests/networks/test_conv.py`` compares the guarded gradients with fp32).

:class:`GuardedConv3d` is ``nn.Conv3d`` (same parameters, same state-dict keys) whose training forward runs in
fp32, outside autocast, for inputs shallower than the kernel (depth 1 included, untested as it is but as cheap). In
the UNet++ bundles that is the deepest level only, a few voxels wide, so the cost is negligible. Scripted (exported) models never take that branch: they do not train.

Example:
    >>> import torch
    >>> conv = guard_bf16_convs(torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1)))[0]
    >>> type(conv).__name__, conv.needs_fp32(torch.zeros(1, 2, 2, 8, 8))
    ('GuardedConv3d', True)
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GuardedConv3d", "guard_bf16_convs", "needs_fp32"]


def needs_fp32(x: torch.Tensor, kernel_depth: int) -> bool:
    """Whether a 3D convolution of ``x`` (``(B, C, D, H, W)``) with a kernel ``kernel_depth`` deep falls in the
    shapes whose CPU bf16 weight gradient is wrong: on the CPU, depth below the kernel's.

    Args:
        x: the convolution's input.
        kernel_depth: the kernel's size along the first spatial axis.
    """
    return x.device.type == "cpu" and x.dim() == 5 and x.shape[2] < kernel_depth


class GuardedConv3d(nn.Conv3d):
    """``nn.Conv3d`` that trains in fp32 where oneDNN's bf16 weight gradient is wrong (see the module docstring)."""

    def needs_fp32(self, x: torch.Tensor) -> bool:
        """Whether this convolution of ``x`` falls in the shapes whose CPU bf16 weight gradient is wrong."""
        return needs_fp32(x, self.kernel_size[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: ``(B, C, D, H, W)``.
        """
        if not torch.jit.is_scripting() and self.training and self.needs_fp32(x):
            return self._fp32_forward(x)
        return self._conv_forward(x, self.weight, self.bias)

    @torch.jit.unused
    def _fp32_forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return self._conv_forward(x.float(), self.weight.float(),
                                      None if self.bias is None else self.bias.float())


def guard_bf16_convs(module: nn.Module) -> nn.Module:
    """Replace every plain ``nn.Conv3d`` in ``module`` by a :class:`GuardedConv3d` holding the same parameter
    objects (optimisers and state dicts are unaffected); returns ``module``.

    Args:
        module: any module tree (changed in place).
    """
    for name, child in module.named_children():
        if type(child) is nn.Conv3d:
            guarded = GuardedConv3d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                    child.padding, child.dilation, child.groups, child.bias is not None,
                                    child.padding_mode, device="meta")
            guarded.weight, guarded.bias = child.weight, child.bias
            setattr(module, name, guarded.train(child.training))
        else:
            guard_bf16_convs(child)
    return module
