"""The deployment level: what a bundle's ``deploy_level`` means for one checkpoint, resolved in one place.

``deploy_level`` is a level (1..depth) or ``auto``. ``auto`` is the level chosen from validation at the end of the
training (:class:`pipeline.training.levels.LevelSelection` records it in the model card as ``inference.level``), for
the checkpoint the card describes (same SHA-256); any other checkpoint deploys the full network. A checkpoint trained
before the card has only ``levels.json`` beside it, which is read the same way (its SHA-256 must match). Bundle
inference (:func:`resolve_level`) and the exports (:func:`card_level`) resolve it here and nowhere else.

Example:
    >>> resolve_level(2, None, 4), resolve_level("auto", None, 4)
    (2, 4)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pipeline.deploy.card import CardError, ModelCard
from pipeline.deploy.files import file_sha256, find_card

__all__ = ["LEVELS_FILE", "card_level", "chosen_level", "resolve_level"]

logger = logging.getLogger(__name__)

#: The scores of every level beside ``model.pt`` (written by LevelSelection; the record itself before the card).
LEVELS_FILE = "levels.json"


def _legacy_level(checkpoint: Path) -> int | None:
    """The level of a ``levels.json`` written for ``checkpoint`` before the card existed (same SHA-256)."""
    try:
        record = json.loads((checkpoint.parent / LEVELS_FILE).read_text())
        if checkpoint.is_file() and record.get("model_sha256") == file_sha256(checkpoint):
            return int(record["chosen"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("ignoring %s: %s", checkpoint.parent / LEVELS_FILE, exc)
    return None


def chosen_level(checkpoint: str | os.PathLike) -> int | None:
    """The level recorded for ``checkpoint`` in the card beside it (:func:`card_level`; ``levels.json`` for a model
    trained before the card), or None where nothing records one.

    Args:
        checkpoint: the model file (``model.pt``).

    Raises:
        CardError: the card beside it breaks a rule or is newer than this pipeline.

    Example:
        >>> chosen_level("bundles/unetpp_mri_segmentation/models/model.pt")               # doctest: +SKIP
        2
    """
    card = find_card(checkpoint)
    if card is None:
        return _legacy_level(Path(checkpoint))
    if card.inference.level is None:
        return None
    return card_level(card, checkpoint)


def resolve_level(value: int | str, checkpoint: str | os.PathLike | None, depth: int) -> int:
    """The deployment level ``value`` (a bundle's ``deploy_level``) means for ``checkpoint``.

    Args:
        value: a level (1..depth) or ``"auto"``: the level chosen from validation for this checkpoint
            (:func:`chosen_level`), else the full network.
        checkpoint: the model file the level is for. None: no record is looked for.
        depth: the network's depth (its full level).

    Raises:
        ValueError: a level outside 1..depth, or another string than ``auto``.
    """
    if isinstance(value, str):
        if value.strip().lower() != "auto":
            raise ValueError(f"deploy_level must be 'auto' or a level between 1 and {depth}, got '{value}'")
        try:
            chosen = chosen_level(checkpoint) if checkpoint is not None else None
        except CardError as exc:
            raise ValueError(str(exc)) from None
        if chosen is None or not 1 <= chosen <= int(depth):
            return int(depth)
        value = chosen
    if isinstance(value, bool) or not 1 <= int(value) <= int(depth):
        raise ValueError(f"deploy_level must be 'auto' or a level between 1 and {depth}, got {value!r}")
    return int(value)


def card_level(card: ModelCard, checkpoint: str | os.PathLike | None, sha256: str | None = None) -> int:
    """The level ``card`` deploys for ``checkpoint``: a fixed level as recorded; a level chosen from validation
    only for the checkpoint the card describes (same SHA-256), else the full network.

    Args:
        card: the model card of the training.
        checkpoint: the weights being deployed; None: the card's own checkpoint.
        sha256: the checkpoint's SHA-256 where the caller has it already. Defaults to None (read from the file).

    Example:
        >>> card_level(read_card("runs/ct/models/model_card.json"), "runs/ct/models/model.pt")     # doctest: +SKIP
        2
    """
    depth = int(card.network.depth or 1)
    level = card.inference.level
    if level is None:
        return depth
    if card.training.level_choice.get("rule") == "fixed" or checkpoint is None:
        return int(level)
    path = Path(checkpoint)
    if sha256 is None and path.is_file():
        sha256 = file_sha256(path)
    if sha256 is not None and card.training.checkpoint_sha256 == sha256:
        return int(level)
    logger.info("the level in the model card was chosen for another checkpoint than %s: deploying the full network "
                "(L%d)", path, depth)
    return depth
