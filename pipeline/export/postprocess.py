"""Choose an exported model's postprocessing on validation cases and write it into (a copy of) the model file.

The validation images run through the batch job (:func:`pipeline.inference.segment`, the same preprocessing,
predictor and inversion as deployment) without postprocessing; :func:`pipeline.deploy.postprocess.choose` applies
nnU-Net's rule to the label maps against the references; the decision goes into the model card
(``inference.postprocessing``, the numbers in ``training.postprocessing_choice``), and the card is re-embedded in a
copy of the TorchScript file: the network and its weights are saved back unchanged (checked: every parameter and
buffer equal), only the card's text differs. The file is written atomically. Every deployment form reads the card;
bundle inference reads the one beside the checkpoint (``models/model_card.json``), which ``card=`` updates the same
way.

Example:
    >>> result = choose_for_model("m.ts", "val/images", "val/labels", "m_pp.ts")      # doctest: +SKIP
    >>> result.choice.decision                                                        # doctest: +SKIP
    Postprocessing(foreground=True, labels=(1,))
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.deploy.card import ModelCard
from pipeline.deploy.files import EMBEDDED_CARD, load_torchscript, read_card, write_card
from pipeline.deploy.postprocess import Choice, choose
from pipeline.deploy.runtime import model_format
from pipeline.errors import DatasetError, PipelineError
from pipeline.export.common import check_destination
from pipeline.inference import segment
from pipeline.io import read_image
from pipeline.io.atomic import atomic_path

__all__ = ["PostprocessResult", "choose_for_model", "embed_card", "reference_for"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PostprocessResult:
    """What :func:`choose_for_model` wrote.

    Args:
        path: the model file with the new card.
        choice: the decision and its validation numbers.
        card: the card embedded.
    """

    path: Path
    choice: Choice
    card: ModelCard

    def table(self) -> str:
        """Dice per class: without postprocessing, with the foreground kept largest, with the class's own largest
        component (on top of the foreground decision), and with the decision; ``*`` marks what is applied."""
        c = self.choice
        fg = "fg*" if c.decision.foreground else "fg"
        rows = [f"{'label':<14}{'none':>8}{fg:>8}{'own':>8}{'chosen':>9}"]
        for k, name in self.card.label_ids.items():
            if k == 0:
                continue
            key = str(k)
            own = f"{c.dice_per_label[key]:.4f}" + ("*" if k in c.decision.labels else " ")
            rows.append(f"{name[:13]:<14}{c.dice_before[key]:>8.4f}{c.dice_foreground[key]:>8.4f}{own:>9}"
                        f"{c.dice_after[key]:>7.4f}")
        return "\n".join(rows)


def reference_for(image: str | os.PathLike, labels_dir: str | os.PathLike) -> Path:
    """The reference label map of ``image`` under ``labels_dir``: the same file name, or the nnU-Net case name
    (``CASE_0000.nii.gz`` -> ``CASE.nii.gz``).

    Raises:
        DatasetError: none is there.
    """
    name = Path(image).name
    stem, dot, ending = name.partition(".")
    candidates = [name] + ([f"{stem[:-5]}{dot}{ending}"] if len(stem) > 5 and stem[-5] == "_" and
                           stem[-4:].isdigit() else [])
    for candidate in candidates:
        if (Path(labels_dir) / candidate).is_file():
            return Path(labels_dir) / candidate
    raise DatasetError(image, f"every validation image needs its reference label map under '{labels_dir}' "
                       f"(looked for {' or '.join(candidates)}): give --labels the folder of the validation label maps")


def embed_card(src: str | os.PathLike, out: str | os.PathLike, card: ModelCard) -> Path:
    """Write ``src`` (TorchScript) to ``out`` with ``card`` embedded instead of its card; nothing else changes.

    Args:
        src: an exported ``.ts`` file.
        out: where to write (may be ``src``: replaced atomically).
        card: the card to embed.

    Raises:
        PipelineError: ``src`` is not TorchScript with a card, or the saved copy's weights differ from the source's.
    """
    module, _ = load_torchscript(src)
    buffer = io.BytesIO()
    torch.jit.save(module, buffer, _extra_files={EMBEDDED_CARD: card.to_json()})
    with atomic_path(out) as tmp:
        tmp.write_bytes(buffer.getvalue())
        copy, embedded = load_torchscript(tmp)
        before, after = module.state_dict(), copy.state_dict()
        if before.keys() != after.keys() or any(not torch.equal(before[k], after[k]) for k in before):
            raise PipelineError(f"internal error: the copy of '{src}' does not hold the same weights")
        if embedded != card:
            raise PipelineError(f"internal error: the card embedded in the copy of '{src}' does not read back")
    return Path(out)


def choose_for_model(model: str | os.PathLike, images: str | os.PathLike, labels: str | os.PathLike,
                     out: str | os.PathLike | None = None, tolerance: float = 0.0, device: str = "auto",
                     precision: str = "auto", workers: int = 2, progress: bool = True,
                     card: str | os.PathLike | None = None) -> PostprocessResult:
    """Choose the postprocessing of ``model`` on the validation cases and write the card into ``out``.

    Args:
        model: exported TorchScript (``.ts``) file.
        images: validation images (a file, folder or CSV, as ``pipeline segment`` takes them).
        labels: folder of their reference label maps (same file names, or nnU-Net case names).
        out: the model file to write. Defaults to None: ``<model>_pp.ts`` beside it.
        tolerance: the Dice drop still accepted (:func:`~pipeline.deploy.postprocess.choose`). Defaults to 0.0.
        device: as for :func:`~pipeline.inference.segment`. Defaults to ``"auto"``.
        precision: as for :func:`~pipeline.inference.segment`. Defaults to ``"auto"``.
        workers: as for :func:`~pipeline.inference.segment`. Defaults to 2.
        progress: show progress. Defaults to True.
        card: a ``model_card.json`` (beside the checkpoint the model was exported from, for bundle inference) to
            record the same decision in, atomically. Defaults to None.

    Raises:
        DatasetError: a case without a reference (or one off its grid), or a case that failed (exit status 1).
        PipelineError: not a TorchScript file, an output that cannot be written, or a ``card`` with other labels
            than the model's.
    """
    if model_format(model) != "torchscript":
        raise PipelineError(f"postprocess writes the card into a TorchScript (.ts) model, got '{model}': choose it on "
                            "the .ts export and export ONNX from the same checkpoint with the card it writes")
    dest = Path(out) if out is not None else Path(model).with_name(f"{Path(model).stem}_pp.ts")
    check_destination(dest)
    _, model_card = load_torchscript(model)
    beside = read_card(card) if card is not None else None
    if beside is not None and beside.labels != model_card.labels:
        raise PipelineError(f"'{card}' has labels {dict(beside.labels)}, the model {dict(model_card.labels)}: give "
                            "--card the card of the checkpoint the model was exported from")
    with tempfile.TemporaryDirectory(prefix="postprocess-") as tmp:
        report = segment(model, images, tmp, device=device, precision=precision, workers=workers, progress=progress,
                         output_format="nifti", postprocess=False)
        failed = [c for c in report.cases if c.status != "ok"]
        if failed:
            raise DatasetError(failed[0].input, f"every validation case must segment ({len(failed)} failed)",
                               failed[0].error)
        predictions, references = [], []
        for case in sorted(report.cases, key=lambda c: c.case):
            prediction = read_image(case.output).array
            reference = read_image(reference_for(case.input, labels)).array
            if reference.shape != prediction.shape:
                raise DatasetError(case.input, f"its reference label map must lie on its grid {prediction.shape}",
                                   reference.shape)
            predictions.append(prediction)
            references.append(reference)
    try:
        choice = choose(predictions, references, [k for k in model_card.label_ids if k > 0], tolerance)
    except ValueError as exc:
        raise PipelineError(str(exc)) from exc
    changes = {"inference": {"postprocessing": choice.decision.to_dict()},
               "training": {"postprocessing_choice": choice.record()}}
    new = model_card.replace(**changes)
    path = embed_card(model, dest, new)
    if beside is not None:
        write_card(beside.replace(**changes), card)
        logger.info("recorded it in %s too", card)
    logger.info("wrote %s with postprocessing %s", path, choice.decision)
    return PostprocessResult(path, choice, new)
