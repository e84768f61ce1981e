"""A trained model's files: the card beside the checkpoint, the weights, and the exported TorchScript file.

``models/model.pt`` (weights), ``models/model_card.json`` (its :class:`~pipeline.deploy.card.ModelCard`, written by
the trainer) and an exported ``.ts`` file (the network at its deploy level with the card embedded as the extra file
``model_card.json``; exports before the card embedded ``metadata.json``, which is read and migrated). Every reader
goes through these functions, so a missing, damaged or foreign file is one line naming it.

Example:
    >>> card = read_card("runs/ct/models/model_card.json")                     # doctest: +SKIP
    >>> module, card = load_torchscript("ct.ts")                                # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from pipeline.deploy.card import CARD_FILE, CardError, ModelCard, parse_card
from pipeline.deploy.device import resolve_device
from pipeline.errors import PipelineError
from pipeline.io.atomic import write_text_atomic
from pipeline.io.checkpoint import load_checkpoint

__all__ = ["EMBEDDED_CARD", "card_path", "check_model_file", "file_sha256", "find_card", "load_network_weights",
           "load_torchscript", "read_card", "write_card"]

logger = logging.getLogger(__name__)

#: The TorchScript extra file holding the card (``metadata.json`` in exports before the card).
EMBEDDED_CARD = CARD_FILE
_LEGACY_EMBEDDED = "metadata.json"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in chunks.

    Args:
        path: the file.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def card_path(checkpoint: str | os.PathLike) -> Path:
    """Where the card of ``checkpoint`` lies: ``model_card.json`` in the same folder.

    Args:
        checkpoint: ``model.pt`` (or ``checkpoint_latest.pt``) of a training.
    """
    return Path(checkpoint).parent / CARD_FILE


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read and check a card file.

    Args:
        path: a ``model_card.json``.

    Raises:
        CardError: missing, unreadable, not JSON, a broken rule, or a newer card version.
    """
    src = Path(path)
    try:
        text = src.read_text()
    except OSError as exc:
        raise CardError(f"'{src}': cannot read the model card: {exc.strerror or exc}") from None
    return parse_card(text, src)


def find_card(checkpoint: str | os.PathLike) -> ModelCard | None:
    """The card beside ``checkpoint``, or None where there is none (a damaged one raises).

    Args:
        checkpoint: ``model.pt`` of a training.

    Raises:
        CardError: the card exists but breaks a rule or is newer than this pipeline.
    """
    path = card_path(checkpoint)
    return read_card(path) if path.is_file() else None


def write_card(card: ModelCard, path: str | os.PathLike) -> Path:
    """Write ``card`` to ``path`` atomically (a temporary file, then a rename).

    Args:
        card: the card.
        path: the destination, usually :func:`card_path` of the checkpoint.
    """
    return write_text_atomic(path, card.to_json())


def load_network_weights(network: torch.nn.Module, checkpoint: str | os.PathLike) -> None:
    """Load ``checkpoint`` into ``network``: a bare state dict (``model.pt``), a full training checkpoint
    (``checkpoint_latest.pt``, key ``network``), a MONAI ``{"model": ...}`` dict, or MONAI BasicUNetPlusPlus keys.

    Args:
        network: the module to fill.
        checkpoint: the file.

    Raises:
        PipelineError: missing, empty, truncated or foreign file, or weights that do not fit the network (the
            first mismatching keys and shapes are named).
    """
    path = Path(checkpoint)
    state = load_checkpoint(path)
    if not isinstance(state, Mapping):
        raise PipelineError(f"checkpoint '{path}' must hold a state dict (or a dict with one under 'network', "
                            f"'model' or 'state_dict'), got a {type(state).__name__}")
    for key in ("network", "model", "state_dict"):
        if key in state and isinstance(state[key], Mapping):
            state = state[key]
            break
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        details = " ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise PipelineError(f"checkpoint '{path}' does not fit the network {type(network).__name__} (was it trained "
                            f"with other features, num_classes, in_channels or spatial_dims?): {details[:300]}") \
            from exc


def _saved_by_torch_save(path: Path) -> bool:
    """True for a ``torch.save`` file (a checkpoint): a zip archive with a pickle but no TorchScript constants, or
    the legacy pickle format (protocol 2, then PyTorch's magic number)."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (OSError, zipfile.BadZipFile):
            return False
        return any(n.endswith("/data.pkl") for n in names) and not any(n.endswith("/constants.pkl") for n in names)
    with open(path, "rb") as handle:
        head = handle.read(3)
    return head == b"\x80\x02\x8a"  # a pickled long: torch.save's magic number comes first


def check_model_file(src: Path, kind: str = "TorchScript", suffix: str = ".ts") -> None:
    """Refuse what is not an exported model file, in one line that says what it is instead.

    Args:
        src: the ``--model`` given.
        kind: the format expected, as named in the message. Defaults to ``"TorchScript"``.
        suffix: that format's file ending. Defaults to ``".ts"``.

    Raises:
        PipelineError: a folder, nothing, a device, socket or pipe, or a PyTorch checkpoint.

    Example:
        >>> check_model_file(Path("runs"))                                           # doctest: +SKIP
        PipelineError: model file 'runs' must be a TorchScript file, got a folder (give the .ts file that ...)
    """
    if src.is_dir():
        raise PipelineError(f"model file '{src}' must be a{'n' if kind[0] in 'AEIOU' else ''} {kind} file, got a "
                            f"folder (give the {suffix} file that `python -m pipeline export` wrote)")
    if not src.exists():
        raise PipelineError(f"model file '{src}' does not exist")
    if not src.is_file():
        raise PipelineError(f"model file '{src}' must be a regular file, got a device, socket or pipe")
    if _saved_by_torch_save(src):
        raise PipelineError(f"model file '{src}' is a PyTorch checkpoint (torch.save), not an exported TorchScript "
                            f"file: export it with `python -m pipeline export --checkpoint {src} --out model.ts` and "
                            "give model.ts")


def load_torchscript(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.jit.ScriptModule,
                                                                                             ModelCard]:
    """Load an exported model and its embedded card.

    Args:
        path: the ``.ts`` file.
        device: where to load it. Defaults to ``"cpu"``.

    Raises:
        PipelineError: the file is missing, a folder or no regular file, a checkpoint rather than an export, not
            TorchScript, or has no embedded card.
        CardError: the embedded card breaks a rule or is newer than this pipeline.
    """
    src = Path(path)
    check_model_file(src)
    extra = {EMBEDDED_CARD: "", _LEGACY_EMBEDDED: ""}
    try:
        module = torch.jit.load(str(src), map_location=resolve_device(device), _extra_files=extra)
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0].partition(" This is an internal miniz error")[0]  # the rest blames a save
        raise PipelineError(f"'{src}' is not a TorchScript file: {reason}") from exc
    text = extra[EMBEDDED_CARD] or extra[_LEGACY_EMBEDDED]
    if not text:
        raise PipelineError(f"'{src}' has no embedded model card: export it with `python -m pipeline export`")
    if isinstance(text, bytes):
        text = text.decode()
    return module.eval(), parse_card(text, src)
