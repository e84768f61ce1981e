"""Export a trained checkpoint with its model card: ``pipeline export --checkpoint model.pt`` and the export at the
end of a training are this one function, so the two give the same file. The destination's suffix chooses the
format: ``.ts`` TorchScript (:mod:`pipeline.export.torchscript`), ``.onnx`` ONNX (:mod:`pipeline.export.onnx`).

The card beside the checkpoint (``model_card.json``, written by the trainer) says which network to build, how to
preprocess, which labels and which level; nothing is read from a bundle config. A checkpoint other than the one the
card describes (``checkpoint_latest.pt``, or a replaced ``model.pt``) is exported with the card's settings but
without the best model's validation record or the level chosen for it (the full network then).

Example:
    >>> result = export_checkpoint("runs/ct/models/model.pt", "ct.ts")           # doctest: +SKIP
    >>> result.card.inference.level                                               # doctest: +SKIP
    2
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from pipeline.deploy.card import ModelCard
from pipeline.deploy.files import card_path, file_sha256, find_card, load_network_weights
from pipeline.deploy.levels import card_level
from pipeline.errors import PipelineError
from pipeline.export.common import ExportResult, check_destination, export_format
from pipeline.export.network import build_network
from pipeline.export.onnx import export_onnx
from pipeline.export.torchscript import export_torchscript

__all__ = ["WRITERS", "card_for_checkpoint", "export_checkpoint", "export_model"]

logger = logging.getLogger(__name__)

#: The writer of each export format.
WRITERS = {"torchscript": export_torchscript, "onnx": export_onnx}


def card_for_checkpoint(card: ModelCard, checkpoint: str | os.PathLike) -> ModelCard:
    """``card`` as it holds for ``checkpoint``: unchanged for the checkpoint it describes; for another one, its
    SHA-256 with no validation record and the level :func:`~pipeline.deploy.levels.card_level` gives it.

    Args:
        card: the training's card.
        checkpoint: the weights being exported.

    Example:
        >>> card_for_checkpoint(card, "runs/ct/models/checkpoint_latest.pt").training.validation  # doctest: +SKIP
        {}
    """
    sha = file_sha256(checkpoint)
    if card.training.checkpoint_sha256 == sha:
        return card
    if card.training.checkpoint_sha256:
        logger.info("%s is not the checkpoint the model card describes: its validation record is left out",
                    checkpoint)
    choice = {"rule": card.training.level_choice.get("rule", "auto")}  # the scores and the choice were model.pt's
    return card.replace(training={"checkpoint_sha256": sha, "validation": {}, "level_choice": choice},
                        inference={"level": card_level(card, checkpoint, sha)})


def export_model(network: torch.nn.Module, card: ModelCard, checkpoint: str | os.PathLike, out: str | os.PathLike,
                 level: int | None = None, device: str = "cpu", half: bool = False,
                 fmt: str | None = None) -> ExportResult:
    """Load ``checkpoint`` into ``network`` and export it with ``card`` (for that checkpoint) to ``out``.

    Args:
        network: the network ``card`` describes (random weights are fine: the checkpoint replaces them).
        card: the model card.
        checkpoint: ``model.pt`` or ``checkpoint_latest.pt``.
        out: the file to write: ``.ts`` (TorchScript) or ``.onnx`` (ONNX).
        level: UNet++ level; None deploys the card's. Defaults to None.
        device: ``cpu`` or ``cuda[:N]``. Defaults to ``"cpu"``.
        half: fp16 weights (CUDA only). Defaults to False.
        fmt: ``torchscript`` or ``onnx``; None: the suffix of ``out`` decides (:func:`export_format`; when given
            they must agree). Defaults to None.

    Raises:
        PipelineError: an unknown suffix or a format that disagrees with it, unreadable or mismatching weights, a
            bad level, or the export's own errors.

    Example:
        >>> export_model(build_network(card.network), card, "models/model.pt", "m.ts").card.level  # doctest: +SKIP
        2
    """
    writer = WRITERS[export_format(out, fmt)]
    load_network_weights(network, checkpoint)
    card = card_for_checkpoint(card, checkpoint)
    depth = int(card.network.depth or 1)
    if level is not None and not 1 <= int(level) <= depth:
        raise PipelineError(f"--level must be between 1 and the network's depth {depth}, got {level}")
    chosen = int(level) if level is not None else card.level
    result = writer(network, out, card, level=chosen if card.network.depth else None, device=device, half=half)
    logger.info("exported %s (level %s) to %s", checkpoint, chosen, result.path)
    return result


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, level: int | None = None,
                      device: str = "cpu", half: bool = False, fmt: str | None = None) -> ExportResult:
    """Export ``checkpoint`` with the model card beside it (see the module docstring).

    Args:
        checkpoint: ``models/model.pt`` (or ``models/checkpoint_latest.pt``) of a training.
        out: the file to write: ``.ts`` (TorchScript) or ``.onnx`` (ONNX).
        level: UNet++ level; None deploys the card's. Defaults to None.
        device: ``cpu`` or ``cuda[:N]``. Defaults to ``"cpu"``.
        half: fp16 weights (CUDA only). Defaults to False.
        fmt: ``torchscript``, ``onnx`` or None (the suffix decides). Defaults to None.

    Raises:
        PipelineError: an unknown suffix or format and a destination that cannot be written (both checked first), no
            card beside the checkpoint (one line saying what to pass instead), or any error of :func:`export_model`.
    """
    check_destination(out)
    export_format(out, fmt)
    path = Path(checkpoint)
    if not path.is_file():
        raise PipelineError(f"checkpoint '{path}' does not exist")
    card = find_card(path)
    if card is None:
        raise PipelineError(f"'{path}' has no model card beside it ({card_path(path).name}; a training by this "
                            "pipeline writes one): pass --bundle with the --config/--set the training used")
    return export_model(build_network(card.network, card_path(path)), card, path, out, level=level, device=device,
                        half=half, fmt=fmt)
