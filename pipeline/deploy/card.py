"""The model card: one typed, versioned description of a trained model, written by the trainer, read by every
deployment form.

What a deployment must repeat or respect (the network and its arguments, the deterministic preprocessing as it ran,
labels, input channels and modality, the sliding-window settings, the axes training mirrored, the level to deploy)
and what a reader should know of the training (its precision, dataset and folds, validation metrics, the
checkpoint's SHA-256) are written once, by the trainer, into ``model_card.json`` beside ``model.pt``
(:mod:`pipeline.training.card`). The TorchScript export embeds the same card with an ``export`` section; the batch
job, the MLflow pyfunc, bundle inference and ``pipeline export`` read it through :func:`card_from_dict`, which checks
every rule below and names the file, the rule and the value when one is broken. Nothing downstream keeps its own
defaults for these values: they are the dataclasses' fields.

Rules: labels are whole-number ids (0 and up), as many as the network's output channels; ``roi_size`` whole
numbers > 0, one per spatial axis; ``overlap`` in [0, 1); ``mirror_axes`` spatial axes; ``in_channels`` >= 1; target
spacings > 0; preprocessing steps are objects; ``inference.postprocessing`` (keep the largest connected component:
:mod:`pipeline.deploy.postprocess`) names foreground labels of the card only, and needs ``card_version`` 4.

Versions: a card is written with the lowest version that holds what it says: :data:`CARD_VERSION` (4) when it records
postprocessing, else 3, so that a pipeline from before postprocessing still reads a card without it and refuses one
with it (rather than silently deploying without it). Versions 3 and 4 load as they are (3 has no postprocessing:
none). A newer card is refused in one line naming both versions; the embedded metadata of earlier exports
(``metadata_version`` 1 and 2) is migrated on load.

Example:
    >>> card = card_from_dict({"card_version": 3, "labels": {"0": "background", "1": "liver"},
    ...                        "network": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "depth": 4},
    ...                        "inference": {"roi_size": [96, 96, 64]}}, "ct.ts")
    >>> card.inference.overlap, card.level
    (0.5, 4)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.deploy.postprocess import Postprocessing
from pipeline.deploy.steps import build_steps
from pipeline.deploy.validate import check_card_dict, fail
from pipeline.errors import PipelineError
from pipeline.io.json_text import dumps_config

__all__ = ["CARD_FILE", "CARD_VERSION", "FIRST_CARD_VERSION", "CardError", "ExportRecord", "InferenceSettings", "ModelCard", "NetworkSpec",
           "TrainingRecord", "card_from_dict", "parse_card"]

#: Layout version of the card. 3: the model card (network arguments, training record, export section). 4:
#: ``inference.postprocessing`` (written only by cards that record postprocessing; the rest stay 3).
CARD_VERSION = 4
#: The earliest card version read as it is (older layouts are migrated or refused).
FIRST_CARD_VERSION = 3
#: The card's file name beside ``model.pt``.
CARD_FILE = "model_card.json"


class CardError(PipelineError, ValueError):
    """A model card breaks a rule, or comes from a newer pipeline; the message names the file."""


@dataclass(frozen=True)
class NetworkSpec:
    """The network that was trained.

    Args:
        target: importable class, e.g. ``pipeline.networks.UNetPlusPlus``; empty where unknown (a migrated export).
        args: its constructor arguments (JSON values).
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes, background included).
        depth: UNet++ depth (levels 1..depth); None for a network without levels.
    """

    target: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)
    spatial_dims: int = 3
    in_channels: int = 1
    out_channels: int = 2
    depth: int | None = None


@dataclass(frozen=True)
class InferenceSettings:
    """How to run the network over a whole image.

    Args:
        kind: ``sliding_window`` or ``slice`` (a 2D network over the slices of a volume).
        roi_size: window size, one per network axis.
        overlap: window overlap in [0, 1).
        mode: blending, ``gaussian`` or ``constant``.
        sigma_scale: Gaussian blending's sigma as a fraction of the window.
        sw_batch_size: windows per forward pass.
        spatial_dim: the slicing axis of ``kind="slice"``.
        level: the UNet++ level to deploy; None: the network's full depth.
        mirror_axes: the spatial axes training mirrored (test-time augmentation mirrors these); None: not known,
            every axis.
        postprocessing: ``foreground`` (bool) and ``largest_component_labels`` (label ids) of
            :class:`~pipeline.deploy.postprocess.Postprocessing`, chosen on validation (``pipeline postprocess``).
            Defaults to none.
    """

    kind: str = "sliding_window"
    roi_size: tuple[int, ...] = ()
    overlap: float = 0.5
    mode: str = "gaussian"
    sigma_scale: float = 0.125
    sw_batch_size: int = 1
    spatial_dim: int = 2
    level: int | None = None
    mirror_axes: tuple[int, ...] | None = None
    postprocessing: Mapping[str, Any] = field(default_factory=lambda: Postprocessing().to_dict())


@dataclass(frozen=True)
class TrainingRecord:
    """What the trainer knew; deployment does not depend on it.

    Args:
        precision: ``fp32``, ``bf16`` or ``fp16`` (CUDA amp).
        dataset: ``source``, ``num_cases``, ``cases_sha256`` and the ``train``/``val`` case ids.
        folds: ``fold``, ``num_folds``, ``seed`` and the ``splits_file``.
        validation: the best model's validation metrics (and ``best_epoch``).
        level_choice: ``rule`` (``auto`` or ``fixed``); for ``auto`` also ``tolerance`` and ``mean_dice`` per level.
        postprocessing_choice: the validation numbers behind ``inference.postprocessing``
            (:meth:`pipeline.deploy.postprocess.Choice.record`); empty where none was chosen.
        checkpoint_sha256: the SHA-256 of the ``model.pt`` this card describes.
    """

    precision: str = ""
    dataset: Mapping[str, Any] = field(default_factory=dict)
    folds: Mapping[str, Any] = field(default_factory=dict)
    validation: Mapping[str, Any] = field(default_factory=dict)
    level_choice: Mapping[str, Any] = field(default_factory=dict)
    checkpoint_sha256: str = ""
    postprocessing_choice: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportRecord:
    """Set by the export on the copy it embeds.

    Args:
        precision: weights of the file, ``fp32`` or ``fp16``.
        device: where it was scripted (or traced) and checked.
        format: the file's format, ``torchscript`` (``.ts``) or ``onnx`` (``.onnx``). Defaults to ``"torchscript"``
            (what every export before ONNX wrote).
    """

    precision: str = "fp32"
    device: str = "cpu"
    format: str = "torchscript"


@dataclass(frozen=True)
class ModelCard:
    """A trained model's description (module docstring).

    Args:
        labels: label id (as a string) -> name, background included.
        network: :class:`NetworkSpec`.
        preprocessing: the deterministic preprocessing steps as recorded by :mod:`pipeline.deploy.steps` (``kind``
            and parameters), in order.
        inference: :class:`InferenceSettings`.
        modality: e.g. ``CT``, ``MR``. Defaults to ``""``.
        channels: input channel names in order. Defaults to ``()``.
        training: :class:`TrainingRecord`. Defaults to an empty record.
        bundle: ``name`` and ``version`` of the bundle that trained it. Defaults to empty.
        versions: library versions of the training. Defaults to empty.
        export: set only in an exported file. Defaults to None.
    """

    labels: Mapping[str, str]
    network: NetworkSpec
    preprocessing: tuple[Mapping[str, Any], ...]
    inference: InferenceSettings
    modality: str = ""
    channels: tuple[str, ...] = ()
    training: TrainingRecord = field(default_factory=TrainingRecord)
    bundle: Mapping[str, str] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    export: ExportRecord | None = None

    @property
    def level(self) -> int:
        """The level to deploy: the recorded one, else the full depth (1 for a network without levels)."""
        return int(self.inference.level or self.network.depth or 1)

    @property
    def image_dims(self) -> int:
        """Spatial dimensions of the images the model takes (3 for a 2D network run slice by slice)."""
        return 3 if self.inference.kind == "slice" else int(self.network.spatial_dims)

    @property
    def target_spacing(self) -> list[float] | None:
        """The resampling step's voxel size, where there is one."""
        return next(([float(v) for v in s["pixdim"]] for s in self.preprocessing if s.get("kind") == "resample"), None)

    @property
    def postprocessing(self) -> Postprocessing:
        """What deployment applies to the label map after the argmax (none unless chosen on validation)."""
        return Postprocessing.from_dict(self.inference.postprocessing)

    @property
    def label_ids(self) -> dict[int, str]:
        """Label id -> name, with whole-number ids."""
        return {int(k): str(v) for k, v in self.labels.items()}

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with top-level fields replaced; ``inference``, ``training`` and ``network`` may be given as dicts of
        changes to their fields.

        Args:
            changes: field name -> new value (or, for the nested records, a dict of their changed fields).

        Example:
            >>> card_from_dict({"card_version": 3, "labels": {"0": "bg"}}, "t").replace(inference={"overlap": 0.25}
            ...                                                                         ).inference.overlap
            0.25
        """
        for name in ("inference", "training", "network"):
            if isinstance(changes.get(name), Mapping):
                changes[name] = dataclasses.replace(getattr(self, name), **changes[name])
        return dataclasses.replace(self, **changes)

    def shareable(self) -> ModelCard:
        """The card as it leaves the training machine (what exports embed): the dataset's case ids and local paths are
        dropped, since case ids are often patient identifiers; its fingerprint and the counts are kept.

        Example:
            >>> card = card_from_dict({"card_version": 3, "labels": {"0": "bg"}, "training": {"dataset": {
            ...     "source": "/data/site_a/Task04", "train": ["p1", "p2"], "val": ["p3"]}}}, "t")
            >>> card.shareable().training.dataset
            {'source': 'Task04', 'num_train': 2, 'num_val': 1}
        """
        data = dict(self.training.dataset)
        private = {k: data.pop(k) for k in ("train", "val") if k in data}
        data.update({f"num_{k}": len(v) for k, v in private.items()})
        if data.get("source"):
            data["source"] = os.path.basename(os.path.normpath(str(data["source"])))
        folds = {k: (os.path.basename(str(v)) if k == "splits_file" and v else v)
                 for k, v in self.training.folds.items()}
        return self.replace(training={"dataset": data, "folds": folds})

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout (``card_version`` first; keys in a fixed order, so equal cards give equal text)."""
        version = CARD_VERSION if self.postprocessing else FIRST_CARD_VERSION  # module docstring: Versions
        out = {"card_version": version, **json.loads(json.dumps(dataclasses.asdict(self)))}
        if not self.postprocessing:  # a version-3 card, as before postprocessing
            del out["inference"]["postprocessing"]
            if not out["training"]["postprocessing_choice"]:
                del out["training"]["postprocessing_choice"]
        if out["export"] is None:
            del out["export"]
        return out

    def to_json(self) -> str:
        """The card as the file holds it (short lists on one line)."""
        return dumps_config(self.to_dict()) + "\n"


def _migrate(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The embedded metadata of exports before the card (``metadata_version`` 1 and 2) in the card's layout."""
    net, info, prep = meta.get("network") or {}, dict(meta.get("inference") or {}), meta.get("preprocessing") or {}
    labels = meta.get("labels") or {}
    info["level"] = info.get("level") or None  # 0 meant "a network without levels"
    if info.get("kind") == "slice" and isinstance(info.get("mirror_axes"), list):  # volume axes -> the 2D network's
        sd = int(info.get("spatial_dim", 2))
        info["mirror_axes"] = [a - (a > sd) for a in info["mirror_axes"] if isinstance(a, int) and a != sd]
    network = {"spatial_dims": net.get("spatial_dims") or len(info.get("roi_size") or [0, 0, 0]),
               "in_channels": net.get("in_channels") or 1, "out_channels": net.get("out_channels") or len(labels),
               "depth": net.get("depth")}
    return {"card_version": CARD_VERSION, "labels": labels, "network": network,
            "preprocessing": prep.get("steps", []) if isinstance(prep, Mapping) else prep, "inference": info,
            "modality": meta.get("modality", ""), "channels": meta.get("channels", []),
            "training": {"validation": meta.get("validation") or {}}, "bundle": meta.get("bundle") or {},
            "versions": meta.get("versions") or {},
            "export": {"precision": meta.get("precision", "fp32"), "device": meta.get("exported_device", "cpu")}}


def _version(data: Mapping[str, Any], src: str | os.PathLike) -> dict[str, Any]:
    if "card_version" not in data and "metadata_version" not in data:
        raise CardError(f"'{src}' holds no model card (no 'card_version'; a file of MONAI's ckpt_export holds the "
                        "bundle's metadata.json instead): export the model with `python -m pipeline export`")
    if "card_version" not in data:
        old = data["metadata_version"]
        if old not in (1, 2):
            raise CardError(f"'{src}': model card: metadata_version must be 1 or 2 (or a 'card_version'), got {old!r}")
        return _migrate(data)
    version = data.get("card_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise CardError(f"'{src}': model card: 'card_version' must be a whole number, got {version!r}")
    if version > CARD_VERSION:
        raise CardError(f"'{src}': model card version {version} is newer than this pipeline reads "
                        f"({CARD_VERSION}): upgrade the pipeline to use this model")
    if version < FIRST_CARD_VERSION:
        raise CardError(f"'{src}': model card version {version} is older than this pipeline reads "
                        f"({FIRST_CARD_VERSION}) and has no migration: export the model again with `pipeline export`")
    return dict(data)


def card_from_dict(data: Any, src: str | os.PathLike) -> ModelCard:
    """Check ``data`` against every rule (module docstring) and build the card; migrates earlier exports.

    Args:
        data: the parsed JSON.
        src: the file it came from (named in every message).

    Raises:
        CardError: a broken rule, or a card from a newer pipeline.
    """
    if not isinstance(data, Mapping):
        raise CardError(fail(src, "a model card must hold a JSON object", type(data).__name__))
    d = _version(data, src)
    try:
        check_card_dict(d, src)
    except ValueError as exc:
        raise CardError(str(exc)) from None
    for index, step in enumerate(d.get("preprocessing") or []):
        try:
            build_steps([step])
        except ValueError as exc:
            raise CardError(f"'{src}': model card: preprocessing step {index}: {exc}") from None
    net, info, train = d.get("network") or {}, dict(d.get("inference") or {}), d.get("training") or {}
    info = {k: v for k, v in info.items() if k in {f.name for f in dataclasses.fields(InferenceSettings)}}
    info["roi_size"] = tuple(int(r) for r in info.get("roi_size") or ())
    info["mirror_axes"] = None if info.get("mirror_axes") is None else tuple(info["mirror_axes"])
    info["postprocessing"] = Postprocessing.from_dict(info.get("postprocessing")).to_dict()
    export = d.get("export")
    return ModelCard(
        labels={str(k): str(v) for k, v in sorted(d["labels"].items(), key=lambda kv: int(kv[0]))},
        network=NetworkSpec(**{k: v for k, v in net.items() if k in {f.name for f in dataclasses.fields(NetworkSpec)}}),
        preprocessing=tuple(dict(s) for s in d.get("preprocessing") or ()), inference=InferenceSettings(**info),
        modality=str(d.get("modality") or ""), channels=tuple(str(c) for c in d.get("channels") or ()),
        training=TrainingRecord(**{k: v for k, v in train.items()
                                   if k in {f.name for f in dataclasses.fields(TrainingRecord)}}),
        bundle=dict(d.get("bundle") or {}), versions=dict(d.get("versions") or {}),
        export=ExportRecord(**{k: str(v) for k, v in export.items() if k in ("precision", "device", "format")})
        if isinstance(export, Mapping) else None)


def parse_card(text: str, src: str | os.PathLike) -> ModelCard:
    """``json.loads`` plus :func:`card_from_dict`, with the file named on bad JSON.

    Args:
        text: the card's JSON.
        src: the file it came from (named in every message).

    Raises:
        CardError: not JSON, or a broken rule.

    Example:
        >>> parse_card('{"card_version": 3, "labels": {"0": "background", "1": "liver"}}', "m.json").label_ids
        {0: 'background', 1: 'liver'}
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CardError(f"'{src}': the model card must be valid JSON: {exc}") from None
    return card_from_dict(data, src)
