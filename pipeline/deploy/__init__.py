"""The deploy core: everything a trained model needs to be deployed, without MONAI.

It owns the model card (:mod:`~pipeline.deploy.card`, its rules in :mod:`~pipeline.deploy.validate`), the card read
off the training's objects (:mod:`~pipeline.deploy.describe`), the preprocessing step registry
(:mod:`~pipeline.deploy.steps`, with the intensity schemes and the foreground test it shares with training), the
deployment level (:mod:`~pipeline.deploy.levels`), the model files (:mod:`~pipeline.deploy.files`), an exported model
of either format loaded as a torch module (:mod:`~pipeline.deploy.runtime`: TorchScript, or ONNX through ONNX Runtime)
the choice of device and precision (:mod:`~pipeline.deploy.device`) and the postprocessing chosen on validation
(:mod:`~pipeline.deploy.postprocess`). Training, export, inference and tracking
import it; it imports none of them (``make lint`` checks the layering with import-linter: ``[tool.importlinter]`` in
pyproject.toml).
"""

from __future__ import annotations

from pipeline.deploy.card import (
    CARD_FILE,
    CARD_VERSION,
    FIRST_CARD_VERSION,
    CardError,
    ExportRecord,
    InferenceSettings,
    ModelCard,
    NetworkSpec,
    TrainingRecord,
    card_from_dict,
    parse_card,
)
from pipeline.deploy.describe import describe_inferer, describe_model, describe_network, mirror_axes, network_inputs
from pipeline.deploy.device import PRECISIONS, autocast_dtype, native_bf16, precision_name, resolve_device
from pipeline.deploy.files import (
    card_path,
    file_sha256,
    find_card,
    load_network_weights,
    load_torchscript,
    read_card,
    write_card,
)
from pipeline.deploy.foreground import ForegroundThreshold
from pipeline.deploy.intensity import check_schemes, normalize_channels
from pipeline.deploy.levels import LEVELS_FILE, card_level, chosen_level, resolve_level
from pipeline.deploy.postprocess import (
    Postprocessing,
    PostprocessingChoice,
    apply_postprocessing,
    choose_postprocessing,
)
from pipeline.deploy.runtime import OnnxModule, load_model, load_onnx, model_format, runtime_settings
from pipeline.deploy.steps import STEPS, Step, build_steps, describe_transforms, resample_axes

__all__ = [
    "CARD_FILE", "CARD_VERSION", "FIRST_CARD_VERSION", "LEVELS_FILE", "PRECISIONS", "STEPS", "CardError",
    "ExportRecord", "ForegroundThreshold", "InferenceSettings", "ModelCard", "NetworkSpec", "OnnxModule",
    "Postprocessing", "PostprocessingChoice", "Step", "TrainingRecord", "apply_postprocessing", "autocast_dtype",
    "build_steps", "card_from_dict", "card_level", "card_path", "check_schemes", "choose_postprocessing",
    "chosen_level", "describe_inferer", "describe_model", "describe_network", "describe_transforms", "file_sha256",
    "find_card", "load_model", "load_network_weights", "load_onnx", "load_torchscript", "mirror_axes", "model_format",
    "native_bf16", "network_inputs", "normalize_channels", "parse_card", "precision_name", "read_card",
    "resample_axes", "resolve_device", "resolve_level", "runtime_settings", "write_card",
]
