"""Network inference on whole volumes: sliding windows (3D models) or slices (2D models), Gaussian blending,
an inference level, mirroring test-time augmentation, device and precision.

Every setting comes from the model card (:class:`~pipeline.deploy.card.InferenceSettings`); arguments given here
override it. Precision ``auto`` (the default) is :func:`pipeline.deploy.device.autocast_dtype`'s choice: fp16
autocast on CUDA, bf16 autocast on CPUs with native bfloat16, fp32 elsewhere.

Windows and blending are MONAI's algorithm (:mod:`pipeline.inference.windows`, checked against
``sliding_window_inference`` and ``SliceInferer``) without importing MONAI. On CUDA it moves the input with
pinned memory and non-blocking copies, and runs fp16: an fp16-exported model directly, an fp32 one under
autocast.

Example:
    >>> predictor = Predictor(model, card, device="cpu", level=2, tta=True)    # doctest: +SKIP
    >>> probs = predictor(image)        # (1, C, *spatial) -> (1, K, *spatial) softmax probabilities
"""

from __future__ import annotations

import itertools
import logging
import warnings

import torch

from pipeline.deploy.card import ModelCard
from pipeline.deploy.device import autocast_dtype, precision_name, resolve_device
from pipeline.inference.windows import sliding_window

__all__ = ["Predictor"]

logger = logging.getLogger(__name__)


def _optimized(model: torch.nn.Module, fuse: bool = True) -> torch.nn.Module:
    """Freeze a scripted model (its level becomes a constant) and, with ``fuse``, let TorchScript fuse it for fp32
    inference (faster per window on the CPU; docs/performance.md). Fused graphs call oneDNN directly and
    ignore autocast, so reduced precision gets the frozen graph only. Eager modules, and models TorchScript cannot
    optimise, are used as they are."""
    if not isinstance(model, torch.jit.ScriptModule):
        return model
    try:
        with warnings.catch_warnings():  # torch 2.9+ marks the TorchScript API deprecated; it is what .ts files use
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
            frozen = torch.jit.freeze(model.eval())
            return torch.jit.optimize_for_inference(frozen) if fuse else frozen
    except Exception as exc:  # noqa: BLE001 - optimisation is optional; the plain module works
        logger.info("TorchScript inference optimisation skipped: %s", str(exc).splitlines()[0])
        return model


class Predictor:
    """Softmax probabilities of a segmentation network over a whole image.

    Args:
        model: TorchScript or eager network returning ``(B, K, *roi)`` logits in eval mode.
        card: the model's card (window size, overlap, blending, kind, level, mirror axes, export precision).
        device: ``cpu``, ``cuda[:N]`` or ``auto``. Defaults to ``"auto"``.
        level: UNet++ inference level; None keeps the model's. Defaults to None.
        overlap: window overlap in [0, 1); None keeps the card's. Defaults to None.
        sw_batch_size: windows per forward pass; None keeps the card's. Defaults to None.
        tta: average over all mirrorings of the axes the model was trained to mirror (the card's
            ``inference.mirror_axes``; every spatial axis where the card does not know them). Defaults to False.
        precision: ``auto`` (fp16 autocast on CUDA, bf16 autocast on CPUs with native bf16, else fp32),
            ``fp32``, ``bf16`` or ``fp16`` (CUDA only). Defaults to ``"auto"``.

    Raises:
        ValueError: bad level, overlap, batch size or precision.
        PipelineError: CUDA requested but unavailable.
    """

    def __init__(self, model: torch.nn.Module, card: ModelCard, device: str | torch.device = "auto",
                 level: int | None = None, overlap: float | None = None, sw_batch_size: int | None = None,
                 tta: bool = False, precision: str = "auto") -> None:
        info = card.inference
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.half = card.export is not None and card.export.precision == "fp16"
        if self.half and self.device.type != "cuda":
            raise ValueError("this model was exported in fp16 for CUDA; run it with --device cuda, or export fp32")
        depth = card.network.depth
        if level is not None:
            if depth and not 1 <= int(level) <= int(depth):
                raise ValueError(f"level must be between 1 and the model's depth {depth}, got {level}")
            self.model.level = int(level)
        self.level = int(getattr(self.model, "level", card.level) or card.level)
        self.autocast = autocast_dtype(str(precision), self.device, self.half)
        self.precision = "fp16" if self.half else precision_name(self.autocast)
        self.model = _optimized(self.model, fuse=self.autocast is None and self.device.type == "cpu")
        self.overlap = float(info.overlap if overlap is None else overlap)
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be >= 0 and < 1, got {self.overlap}")
        self.sw_batch_size = int(info.sw_batch_size if sw_batch_size is None else sw_batch_size)
        if self.sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
        self.roi_size = [int(r) for r in info.roi_size]
        if not self.roi_size:
            raise ValueError("the model card records no window size (inference.roi_size); export the model again")
        self.mode, self.sigma_scale, self.kind, self.spatial_dim = info.mode, info.sigma_scale, info.kind, \
            info.spatial_dim
        self.tta = bool(tta)
        self.mirror_axes = None if info.mirror_axes is None else [int(a) for a in info.mirror_axes]

    def _infer(self, image: torch.Tensor) -> torch.Tensor:
        if self.kind == "slice":  # every slice along spatial_dim through the 2D network, as MONAI's SliceInferer
            axis = 2 + self.spatial_dim
            moved = image.movedim(axis, 1)  # (B, S, C, h, w)
            slices = moved.reshape(-1, *moved.shape[2:])
            out = sliding_window(slices, self.model, self.roi_size, self.overlap, self.mode, self.sigma_scale,
                                 self.sw_batch_size)
            return out.reshape(*moved.shape[:2], *out.shape[1:]).movedim(1, axis)
        return sliding_window(image, self.model, self.roi_size, self.overlap, self.mode, self.sigma_scale,
                              self.sw_batch_size)

    def _tta_axes(self, spatial: int) -> list[int]:
        """Tensor dims to mirror: the card's axes of the network; a slice-wise 2D network's axis ``a`` is the volume's
        axis ``a``, or ``a + 1`` from the slicing axis on; every axis of the image where the card knows none."""
        if self.mirror_axes is None:
            return [2 + a for a in range(spatial)]
        if self.kind == "slice":
            return [2 + a + (a >= self.spatial_dim) for a in self.mirror_axes]
        return [2 + a for a in self.mirror_axes if a < spatial]

    def _forward(self, image: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            return torch.softmax(self._infer(image).float(), dim=1)

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Args:
            image: ``(1, C, *spatial)`` or ``(C, *spatial)``, preprocessed.

        Returns:
            ``(1, K, *spatial)`` float32 probabilities on the CPU.
        """
        x = torch.as_tensor(image)
        if x.ndim == len(self.roi_size) + 1 + (1 if self.kind == "slice" else 0):
            x = x[None]
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.to(dtype=torch.float16 if self.half else torch.float32)
        probs = self._forward(x)
        if self.tta:
            count = 1
            axes = self._tta_axes(x.ndim - 2)
            for r in range(1, len(axes) + 1):
                for flip in itertools.combinations(axes, r):
                    probs += torch.flip(self._forward(torch.flip(x, flip)), flip)
                    count += 1
            probs /= count
        return probs.cpu()
