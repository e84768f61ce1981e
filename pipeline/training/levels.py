"""The deployment level, chosen from validation: the shallowest UNet++ level within a tolerance of the best.

UNet++ can be cut back to a shallower level at inference (``network.level``); how much Dice each level keeps
depends on the data. :class:`LevelSelection` runs at the end of a training: it scores the best model
(``<ckpt_dir>/model.pt``) at every level on the validation cases, with the validator's own data, inferer and
Dice (foreground classes, as the key metric), writes ``<ckpt_dir>/levels.json`` (each level's mean and per-class
Dice, the tolerance, the model file's SHA-256 and the chosen level: the shallowest whose mean Dice is at least the
best level's minus ``tolerance``) and records the choice in the model card beside the model. A bundle's
``deploy_level: "auto"`` means that choice (resolved in :mod:`pipeline.deploy.levels` for ``inference.json``,
``pipeline export`` and the end-of-training export); a number fixes the level, and the card then keeps it while
still recording every level's score. Validation cases prepared otherwise than the card says (another config than
the training's) are scored into ``levels.json`` only. The shipped MRI model's choice and scores are in its bundle's docs.

Example (bundle config)::

    "deploy_level": "auto",
    "level_selection": {"_target_": "pipeline.training.LevelSelection", "validator": "@validate#evaluator",
                        "network": "@network", "ckpt_dir": "@ckpt_dir", "num_classes": "@num_classes"},
    "train": {"handlers": [..., "@level_selection"]}
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from pipeline.deploy.files import card_path, file_sha256, find_card, load_network_weights, write_card
from pipeline.deploy.levels import LEVELS_FILE
from pipeline.deploy.steps import describe_transforms
from pipeline.io.atomic import write_text_atomic
from pipeline.training.distributed import is_main_process

__all__ = ["LevelSelection", "choose_level", "score_levels"]

logger = logging.getLogger(__name__)

def choose_level(scores: dict[int, float], tolerance: float) -> int:
    """The shallowest level whose score is at least the best score minus ``tolerance``.

    Args:
        scores: mean Dice per level.
        tolerance: Dice the choice may give up for speed (>= 0).

    Raises:
        ValueError: no scores, or a negative tolerance.

    Example:
        >>> choose_level({1: 0.833, 2: 0.870, 3: 0.8736, 4: 0.8734}, 0.002)
        3
    """
    if not scores:
        raise ValueError("choose_level needs at least one level's score, got none")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    best = max(scores.values())
    return min(level for level, score in scores.items() if score >= best - tolerance)


def _one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels.long().squeeze(1), classes).movedim(-1, 1)


@torch.no_grad()
def score_levels(network: torch.nn.Module, loader: Any, inferer: Any, device: torch.device | str,
                 num_classes: int) -> dict[int, list[float]]:
    """Dice per foreground class at every level of ``network``, averaged over the cases of ``loader``.

    Every level is scored from one pass of the full network (``all_levels``: head ``k`` is level ``k``'s output),
    so scoring costs about one validation, not one per level.

    No collective is run: under DDP rank 0 alone scores (the other ranks have left the training by then), so the
    per-case Dice is reduced here with MONAI's ``do_metric_reduction`` rather than by ``DiceMetric.aggregate``,
    which all-gathers across ranks.

    Args:
        network: a UNet++ (or a wrapper with ``.module``), put in eval mode; its level and mode are restored
            afterwards.
        loader: batches with ``image`` and ``label`` (the validator's data loader).
        inferer: called as ``inferer(image, network)`` (the validator's, e.g. a sliding window); it must pass a
            list of outputs through (MONAI's inferers return them as a tuple).
        device: where the network runs.
        num_classes: classes, background included.
    """
    from monai.metrics import compute_dice
    from monai.metrics.utils import do_metric_reduction
    from monai.utils import MetricReduction

    net = getattr(network, "module", network)
    levels = range(1, int(net.depth) + 1)
    per_case: dict[int, list[torch.Tensor]] = {level: [] for level in levels}
    kept, mode = net.level, net.training
    net.eval()
    net.all_levels = True  # one pass gives every level's head, deepest first: the cost of one validation
    try:
        for batch in loader:
            image = torch.as_tensor(batch["image"]).to(device)
            label = _one_hot(torch.as_tensor(batch["label"]).to(device), num_classes)
            heads = inferer(image, net)
            for level, logits in zip(reversed(levels), heads):
                pred = _one_hot(logits.argmax(1, keepdim=True), num_classes)
                per_case[level].append(compute_dice(pred, label, include_background=False).cpu())
    finally:
        net.all_levels = False
        net.level = kept
        net.train(mode)
    scores = {}
    for level, cases in per_case.items():
        mean, _ = do_metric_reduction(torch.cat(cases), MetricReduction.MEAN_BATCH)  # NaN (class absent) skipped
        scores[level] = [float(v) for v in mean]
    return scores


def _validation_steps(validator: Any) -> list[dict] | None:
    """The deployable steps of the validator's own preprocessing, where they can be read off its data loader."""
    dataset = getattr(getattr(validator, "data_loader", None), "dataset", None)
    chain = getattr(getattr(dataset, "transform", None), "transforms", None)
    if chain is None:
        return None
    try:
        return describe_transforms(chain)
    except ValueError:
        return None


class LevelSelection:
    """At the end of training, score ``model.pt`` at every level and record the level to deploy.

    Args:
        validator: the validation evaluator (its data loader, inferer and device are used; it is not run).
        network: the trained network (copied; the training's own is left alone).
        ckpt_dir: folder of ``model.pt``; ``levels.json`` is written there. Under DDP rank 0 scores the cases its
            share of the validation holds.
        num_classes: classes, background included.
        tolerance: mean Dice the choice may give up for speed. Defaults to 0.002.
        label_names: class id -> name, for the record. Defaults to None.

    Raises:
        ValueError: a negative tolerance.
    """

    def __init__(self, validator: Engine, network: torch.nn.Module, ckpt_dir: str | os.PathLike, num_classes: int,
                 tolerance: float = 0.002, label_names: dict | None = None) -> None:
        if not float(tolerance) >= 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        self.validator, self.network, self.ckpt_dir = validator, network, Path(ckpt_dir)
        self.num_classes, self.tolerance = int(num_classes), float(tolerance)
        self.label_names = {int(k): v for k, v in (label_names or {}).items()}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        best = self.ckpt_dir / "model.pt"
        if not is_main_process() or not best.is_file():
            return
        network = copy.deepcopy(getattr(self.network, "module", self.network))
        load_network_weights(network, best)
        logger.info("scoring %s at every level on the validation cases", best)
        per_class = score_levels(network, self.validator.data_loader, self.validator.inferer,
                                 self.validator.state.device, self.num_classes)
        means = {level: sum(v) / len(v) for level, v in per_class.items()}
        chosen = choose_level(means, self.tolerance)
        names = [self.label_names.get(c, str(c)) for c in range(1, self.num_classes)]
        sha = file_sha256(best)
        record = {"model": best.name, "model_sha256": sha, "metric": "mean Dice (foreground classes)",
                  "tolerance": self.tolerance, "chosen": chosen,
                  "levels": {str(lv): {"mean_dice": means[lv], "dice": dict(zip(names, per_class[lv]))}
                             for lv in per_class}}
        write_text_atomic(self.ckpt_dir / LEVELS_FILE, json.dumps(record, indent=1) + "\n")
        logger.info("deployment level L%d: mean Dice %s (tolerance %g) -> %s", chosen,
                    ", ".join(f"L{lv} {m:.4f}" for lv, m in means.items()), self.tolerance, self.ckpt_dir / LEVELS_FILE)
        self._record_in_card(best, sha, chosen, means)

    def _record_in_card(self, best: Path, sha: str, chosen: int, means: dict[int, float]) -> None:
        """The choice into the model card of ``best`` (a fixed ``deploy_level`` keeps its level; scores are kept)."""
        card = find_card(best)
        steps = _validation_steps(self.validator)
        if card is not None and steps is not None and steps != [dict(s) for s in card.preprocessing]:
            logger.warning("the validation cases were prepared otherwise than %s's model card says it trained (not "
                           "the training's config?): L%d is recorded in %s only", best, chosen, LEVELS_FILE)
            return
        if card is None or card.training.checkpoint_sha256 != sha:
            logger.warning("%s has no model card of its own (trained before cards?): the chosen level L%d is recorded "
                           "in %s, which deploy_level auto reads for it", best, chosen, LEVELS_FILE)
            return
        auto = card.training.level_choice.get("rule", "auto") == "auto"
        choice = {"rule": "auto" if auto else "fixed", "tolerance": self.tolerance, "chosen": chosen,
                  "mean_dice": {str(lv): m for lv, m in means.items()}}
        card = card.replace(training={"level_choice": choice},
                            inference={"level": chosen if auto else card.inference.level})
        write_card(card, card_path(best))
        logger.info("model card: deploy level L%d (%s)", card.level, "chosen from validation" if auto else "fixed")
