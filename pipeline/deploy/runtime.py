"""An exported model of either format, loaded as a module that takes and returns torch tensors, with its card.

``.onnx`` files (:mod:`pipeline.export.onnx`) run through ONNX Runtime, wrapped in :class:`OnnxModule`, whose call
takes a float32 ``(N, C, *spatial)`` tensor and returns the logits as a tensor, so that the predictor's sliding
window, Gaussian blending and mirroring run unchanged on it. Every other file is TorchScript
(:func:`pipeline.deploy.files.load_torchscript`, as before ONNX). The card is read from the ONNX model's
``metadata_props`` (key ``model_card.json``) through the same checks as the card a ``.ts`` file embeds.

What an ONNX model cannot do is refused in one line, never done silently otherwise: its graph holds one level (the
exported one; :attr:`OnnxModule.level` refuses another), it runs in fp32 (``--precision bf16`` or ``fp16`` is an
error; ``auto`` means fp32, :func:`runtime_settings`), and CUDA needs an ONNX Runtime with the
``CUDAExecutionProvider`` (``onnxruntime-gpu``). On CUDA each window makes a round trip through host memory: the
ONNX route is for CPU deployments; MONAI's ``trt_export`` (TensorRT) is the route for CUDA (docs/deploy.md).

Example:
    >>> module, card = load_model("hippo.onnx")                                     # doctest: +SKIP
    >>> module(torch.zeros(1, 1, 32, 32, 32)).shape                                 # doctest: +SKIP
    torch.Size([1, 3, 32, 32, 32])
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from pipeline.deploy.card import ModelCard, parse_card
from pipeline.deploy.device import resolve_device
from pipeline.deploy.files import EMBEDDED_CARD, check_model_file, load_torchscript
from pipeline.errors import PipelineError

__all__ = ["ONNX_INSTALL", "OnnxModule", "load_model", "load_onnx", "model_format", "runtime_settings"]

logger = logging.getLogger(__name__)

#: What to install for ONNX models (named in the error where ONNX Runtime is missing).
ONNX_INSTALL = "pip install onnxruntime (or the project's extra: pip install 'unetpp-pipeline[onnx]')"


def model_format(path: str | os.PathLike) -> str:
    """``onnx`` for a ``.onnx`` file, else ``torchscript`` (the model files of every export before ONNX).

    Args:
        path: the model file.

    Example:
        >>> model_format("hippo.onnx"), model_format("hippo.ts")
        ('onnx', 'torchscript')
    """
    return "onnx" if Path(path).suffix.lower() == ".onnx" else "torchscript"


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise PipelineError(f"ONNX models run with ONNX Runtime, which is not installed: {ONNX_INSTALL}") from None
    return onnxruntime


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class OnnxModule(torch.nn.Module):
    """An ONNX model run by ONNX Runtime, called like the network it was exported from.

    Args:
        model: the ``.onnx`` file's bytes.
        path: the file (named in errors).
        device: ``cpu`` or ``cuda[:N]`` (ONNX Runtime's CUDA provider). Defaults to ``"cpu"``.

    Attributes:
        card: the model card from the model's ``metadata_props``.

    Raises:
        PipelineError: ONNX Runtime missing, a file it cannot load, no embedded card, a graph that does not take one
            float32 tensor, or CUDA asked for where ONNX Runtime has no CUDA provider.
        CardError: the embedded card breaks a rule or is newer than this pipeline.
    """

    def __init__(self, model: bytes, path: str | os.PathLike, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self._model, self.path = model, Path(path)
        self.device = resolve_device(device)
        self._session = self._open(self.device)
        text = self._session.get_modelmeta().custom_metadata_map.get(EMBEDDED_CARD)
        if not text:
            raise PipelineError(f"'{self.path}' has no embedded model card (metadata_props '{EMBEDDED_CARD}'): export "
                                "it with `python -m pipeline export --out model.onnx`")
        self.card: ModelCard = parse_card(text, self.path)
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(float)":
            raise PipelineError(f"'{self.path}': the ONNX graph must take one float32 tensor (tensor(float)), got "
                                f"{[i.type for i in inputs]}")
        self._input, self._output = inputs[0].name, self._session.get_outputs()[0].name

    def _open(self, device: torch.device) -> Any:
        ort = _onnxruntime()
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise PipelineError(f"device '{device}' asked for an ONNX model, but this ONNX Runtime offers no "
                                    f"CUDAExecutionProvider (it has {', '.join(ort.get_available_providers())}): "
                                    "pip install onnxruntime-gpu, or run on the CPU (--device cpu)")
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # what the TorchScript path uses (OMP_NUM_THREADS)
        options.log_severity_level = 3  # errors only: they are raised as exceptions anyway
        try:
            return ort.InferenceSession(self._model, options, providers=providers)
        except Exception as exc:  # ONNX Runtime's errors derive from Exception only
            raise PipelineError(f"'{self.path}' is not an ONNX model ONNX Runtime can load: {_first_line(exc)}") \
                from exc

    @property
    def level(self) -> int:
        """The level the graph holds (the card's); setting another one raises ValueError (export that level)."""
        return self.card.level

    @level.setter
    def level(self, value: int) -> None:
        if int(value) != self.level:
            raise ValueError(f"'{self.path}' is an ONNX model of level {self.level} (an ONNX graph holds one level), "
                             f"got level {value}: export it again with --level {value}, or use the TorchScript "
                             "(.ts) export, whose level can be switched")

    def to(self, *args: Any, **kwargs: Any) -> OnnxModule:  # type: ignore[override]
        """Run on another device (a new session there); float32 is the only dtype.

        Args:
            args: a device and/or dtype, as for ``torch.nn.Module.to``.
            kwargs: ``device=``, ``dtype=`` (others are ignored).
        """
        device = kwargs.get("device") or next((a for a in args if isinstance(a, (str, torch.device))), None)
        dtype = kwargs.get("dtype") or next((a for a in args if isinstance(a, torch.dtype)), None)
        if dtype not in (None, torch.float32):
            raise ValueError(f"'{self.path}': an ONNX model runs in float32, got {dtype}")
        if device is not None and resolve_device(device) != self.device:
            self._session, self.device = self._open(resolve_device(device)), resolve_device(device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: ``(N, C, *spatial)``, any device; run as float32.

        Returns:
            The logits ``(N, K, *spatial)`` on ``x``'s device.
        """
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            (out,) = self._session.run([self._output], {self._input: array})
        except Exception as exc:  # ONNX Runtime's errors derive from Exception only
            raise PipelineError(f"'{self.path}': ONNX Runtime failed on a {tuple(x.shape)} input: "
                                f"{_first_line(exc)}") from exc
        return torch.from_numpy(out).to(x.device)


def load_onnx(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[OnnxModule, ModelCard]:
    """Load an ONNX model written by ``pipeline export`` and its card.

    Args:
        path: the ``.onnx`` file.
        device: ``cpu`` or ``cuda[:N]``. Defaults to ``"cpu"``.

    Raises:
        PipelineError: no such file, ONNX Runtime missing, not an ONNX model, no embedded card.
        CardError: the embedded card breaks a rule or is newer than this pipeline.

    Example:
        >>> module, card = load_onnx("hippo.onnx")                                   # doctest: +SKIP
    """
    src = Path(path)
    check_model_file(src, "ONNX", ".onnx")
    module = OnnxModule(src.read_bytes(), src, device)
    return module.eval(), module.card


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelCard]:
    """Load an exported model of either format (:func:`model_format`) and its card.

    Args:
        path: a ``.onnx`` file, or a TorchScript file (``.ts``).
        device: where to load it. Defaults to ``"cpu"``.

    Raises:
        PipelineError: a file that is not a model of its format (one line naming it).
        CardError: its card breaks a rule.

    Example:
        >>> module, card = load_model("hippo.ts")                                    # doctest: +SKIP
    """
    if model_format(path) == "onnx":
        return load_onnx(path, device)
    return load_torchscript(path, device)


def runtime_settings(module: torch.nn.Module, device: str, precision: str) -> tuple[str, str]:
    """The device and precision ``module`` runs at: as asked for a torch module; for an :class:`OnnxModule`, fp32
    (``auto`` and ``fp32``; ``bf16``/``fp16`` are refused: ONNX Runtime runs the exported fp32 graph) and, for
    ``auto``, CUDA only where both torch and ONNX Runtime have it.

    Args:
        module: from :func:`load_model`.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.

    Raises:
        PipelineError: bf16 or fp16 asked for an ONNX model.

    Example:
        >>> runtime_settings(onnx_module, "auto", "auto")                            # doctest: +SKIP
        ('cpu', 'fp32')
    """
    if not isinstance(module, OnnxModule):
        return device, precision
    if precision not in ("auto", "fp32"):
        raise PipelineError(f"'{module.path}': an ONNX model runs in fp32 (ONNX Runtime runs the exported graph), "
                            f"got --precision {precision}: use --precision auto or fp32, or the TorchScript (.ts) "
                            "export for bf16/fp16 autocast")
    if str(device) == "auto":
        cuda = torch.cuda.is_available() and "CUDAExecutionProvider" in _onnxruntime().get_available_providers()
        device = "cuda" if cuda else "cpu"
    return device, "fp32"
