"""Datalists from the layouts users have: MSD ``dataset.json``, nnU-Net v2 raw folders, paired folders, CSV.

Every loader returns a :class:`Datalist`: MONAI-style items ``{"image": path | [paths], "label": path,
"case": id}`` (absolute paths; a list of paths for multi-channel cases, channel order kept), the declared
labels (id -> name) where the layout declares them, and the channel names. Loaders only parse the listing;
:func:`pipeline.data.validation.validate_datalist` then checks that the files exist and agree.

MSD parsing is done here rather than through ``monai.data.load_decathlon_datalist`` so that the command line
(summary, validation) does not pay MONAI's import time; the result is the same list of dicts.

Example:
    >>> dl = load_datalist("Task04_Hippocampus")                 # doctest: +SKIP
    >>> dl.format, len(dl.items), dl.labels                      # doctest: +SKIP
    ('msd', 260, {0: 'background', 1: 'Anterior', 2: 'Posterior'})
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import DatasetError, DatasetValidationError
from pipeline.io.reader import image_suffix

__all__ = ["FORMATS", "Datalist", "case_id", "load_csv", "load_datalist", "load_msd", "load_nnunet", "load_paired"]

logger = logging.getLogger(__name__)

#: Supported layouts (``"auto"`` picks one from what it finds).
FORMATS = ("msd", "nnunet", "paired", "csv")


@dataclass
class Datalist:
    """A parsed datalist.

    Args:
        items: ``{"image": str | list[str], "label": str, "case": str}`` per case (``label`` absent for
            unlabelled sections such as MSD ``test``).
        labels: declared label ids -> names, or None where the layout declares none.
        channels: channel names in input order (``["CT"]``, ``["T2", "ADC"]``), empty if undeclared.
        source: the file or folder it was read from.
        format: one of :data:`FORMATS`.
    """

    items: list[dict]
    labels: dict[int, str] | None = None
    channels: list[str] = field(default_factory=list)
    source: str = ""
    format: str = ""

    def __len__(self) -> int:
        return len(self.items)


def case_id(path: str | os.PathLike) -> str:
    """Case identifier of an image or label path: the file name without its image ending.

    Example:
        >>> case_id("/data/imagesTr/liver_003.nii.gz")
        'liver_003'
    """
    name = Path(path).name
    suffix = image_suffix(name)
    return name[: -len(suffix)] if suffix else name


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DatasetError(path, "the dataset description file must exist") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(path, "must be valid JSON", exc) from exc
    if not isinstance(data, dict):
        raise DatasetError(path, "must hold a JSON object", type(data).__name__)
    return data


def _int_labels(path: Path, labels: dict, name_to_id: bool) -> dict[int, str]:
    """MSD labels are ``{"0": "background"}``; nnU-Net v2's are ``{"background": 0}``."""
    out: dict[int, str] = {}
    for key, value in labels.items():
        raw_id, name = (value, key) if name_to_id else (key, value)
        try:
            out[int(raw_id)] = str(name)
        except (TypeError, ValueError) as exc:
            raise DatasetError(path, "label ids must be integers (region-based labels are not supported)",
                               f"{key!r}: {value!r}") from exc
    return dict(sorted(out.items()))


def load_msd(dataset_dir: str | os.PathLike, section: str = "training") -> Datalist:
    """Read an MSD ``dataset.json`` (Medical Segmentation Decathlon layout).

    Args:
        dataset_dir: folder holding ``dataset.json``, or the JSON file itself.
        section: ``"training"`` (image + label) or ``"test"`` (image only). Defaults to ``"training"``.
    """
    path = Path(dataset_dir)
    path = path / "dataset.json" if path.is_dir() else path
    data = _read_json(path)
    if section not in data:
        raise DatasetError(path, f"an MSD dataset.json must have a '{section}' list", f"keys {sorted(data)}")
    root = path.parent
    if not isinstance(data[section], list):
        raise DatasetError(path, f"'{section}' must be a list of entries", type(data[section]).__name__)
    items = []
    for index, entry in enumerate(data[section]):
        if not isinstance(entry, (str, dict)):
            raise DatasetError(path, f"every '{section}' entry must be an object with an 'image' (or an image path)",
                               f"entry {index}: {json.dumps(entry)[:80]}")
        entry = {"image": entry} if isinstance(entry, str) else dict(entry)
        if "image" not in entry:
            raise DatasetError(path, f"every '{section}' entry must name an 'image'", entry)
        for key in ("image", "label"):
            value = entry.get(key)
            if key in entry and not (isinstance(value, str) or isinstance(value, list) and value
                                     and all(isinstance(v, str) for v in value)):
                raise DatasetError(path, f"'{key}' of every '{section}' entry must be a path or a list of paths",
                                   f"entry {index}: {json.dumps(value)[:80]}")
            if key in entry:
                value = entry[key]
                entry[key] = [str((root / v).resolve()) for v in value] if isinstance(value, list) \
                    else str((root / value).resolve())
        first = entry["image"][0] if isinstance(entry["image"], list) else entry["image"]
        entry.setdefault("case", case_id(first))
        items.append(entry)
    modality = data.get("modality", {})
    channels = [str(modality[k]) for k in sorted(modality, key=int)] if isinstance(modality, dict) else []
    labels = _int_labels(path, data["labels"], name_to_id=False) if isinstance(data.get("labels"), dict) else None
    return Datalist(items, labels, channels, str(path), "msd")


def _nnunet_description(path: Path, meta: dict, problems: list[DatasetError]) -> tuple[list[str] | None,
                                                                                      dict[int, str] | None,
                                                                                      str | None]:
    """Channel names, labels and file ending of an nnU-Net v2 ``dataset.json`` (None where unusable); each broken
    rule is added to ``problems``."""
    for key in ("channel_names", "labels"):
        if key not in meta:
            problems.append(DatasetError(path, f"an nnU-Net v2 dataset.json must have '{key}'", f"keys {sorted(meta)}"))
    channels, labels = None, None
    names = meta.get("channel_names")
    if names is not None:
        numbers = {str(i) for i in range(len(names))} if isinstance(names, dict) else set()
        if names and set(map(str, names)) == numbers:
            channels = [str(names[k]) for k in sorted(names, key=int)]
        else:
            problems.append(DatasetError(path, "'channel_names' must map the channel numbers 0, 1, ... to names "
                                         '(e.g. {"0": "CT"})', json.dumps(names)[:80]))
    if "labels" in meta:
        try:
            if not isinstance(meta["labels"], dict):
                raise DatasetError(path, "'labels' must map label names to ids (e.g. {\"background\": 0})",
                                   json.dumps(meta["labels"])[:80])
            labels = _int_labels(path, meta["labels"], name_to_id=True)
        except DatasetError as exc:
            problems.append(exc)
    ending = meta.get("file_ending", ".nii.gz")
    if not (isinstance(ending, str) and ending.startswith(".") and len(ending) > 1):
        problems.append(DatasetError(path, "'file_ending' must be a file ending such as \".nii.gz\"",
                                     json.dumps(ending)[:80]))
        ending = None
    return channels, labels, ending


def _nnunet_cases(root: Path, ending: str, problems: list[DatasetError]) -> dict[str, dict[int, str]]:
    """Case -> channel number -> image file in ``imagesTr``; labels in ``labelsTr`` without images are problems."""
    pattern = re.compile(rf"^(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(ending)}$")
    cases: dict[str, dict[int, str]] = {}
    for file in sorted((root / "imagesTr").iterdir()):
        match = pattern.match(file.name)
        if match:
            cases.setdefault(match["case"], {})[int(match["channel"])] = str(file.resolve())
        elif not file.name.startswith("."):
            logger.warning("%s: ignored, nnU-Net image names must be CASE_XXXX%s", file, ending)
    labels_dir = root / "labelsTr"
    if not labels_dir.is_dir():
        problems.append(DatasetError(labels_dir, "an nnU-Net raw dataset must have a labelsTr folder"))
        return cases
    for file in sorted(labels_dir.iterdir()):
        name = file.name[: -len(ending)]
        if file.name.endswith(ending) and not file.name.startswith(".") and name not in cases:
            problems.append(DatasetError(file, "every label must have its case's images in imagesTr (label without "
                                         "image)", f"no {name}_0000{ending}"))
    return cases


def load_nnunet(dataset_dir: str | os.PathLike) -> Datalist:
    """Read an nnU-Net v2 raw dataset folder: ``imagesTr/CASE_0000<ending>`` (``_0001``... for more channels),
    ``labelsTr/CASE<ending>``, ``dataset.json`` with ``channel_names``, ``labels`` and ``file_ending``.

    Args:
        dataset_dir: the ``DatasetXXX_Name`` folder.

    Raises:
        DatasetError: an unreadable ``dataset.json``, or one broken layout rule.
        DatasetValidationError: several broken layout rules (``dataset.json`` keys, missing channel files, labels
            without images, ``numTraining``), all of them listed.
    """
    root = Path(dataset_dir)
    meta_path = root / "dataset.json"
    meta = _read_json(meta_path)
    problems: list[DatasetError] = []
    channels, labels, ending = _nnunet_description(meta_path, meta, problems)
    images_dir = root / "imagesTr"
    if not images_dir.is_dir():
        problems.append(DatasetError(images_dir, "an nnU-Net raw dataset must have an imagesTr folder"))
    cases = _nnunet_cases(root, ending, problems) if ending and images_dir.is_dir() else {}
    items = []
    expected = list(range(len(channels or [])))
    for name, files in cases.items() if channels else ():
        if sorted(files) != expected:
            problems.append(DatasetError(images_dir / name, f"each case must have channels {expected} "
                                         f"(_0000..._{len(expected) - 1:04d}{ending})", sorted(files)))
            continue
        image: str | list[str] = files[0] if len(expected) == 1 else [files[c] for c in expected]
        items.append({"image": image, "label": str((root / "labelsTr" / f"{name}{ending}").resolve()),
                      "case": name})
    declared = meta.get("numTraining")
    if ending and images_dir.is_dir() and type(declared) is int and declared != len(cases):
        problems.append(DatasetError(meta_path, f"'numTraining' must be the number of cases in imagesTr "
                                     f"({len(cases)})", declared))
    if problems:  # with the missing labels validation would report next: the whole layout's problems at once
        problems += [DatasetError(item["label"], "every training case must have its label file (missing label)")
                     for item in items if (root / "labelsTr").is_dir() and not Path(item["label"]).exists()]
        raise problems[0] if len(problems) == 1 else DatasetValidationError(str(root), problems)
    return Datalist(items, labels, channels or [], str(root), "nnunet")


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(folder, "must be an existing folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and image_suffix(p) and not p.name.startswith("."))


def load_paired(images_dir: str | os.PathLike, labels_dir: str | os.PathLike) -> Datalist:
    """Pair images and labels by file name: ``images/X.nii.gz`` goes with ``labels/X.nii.gz`` (any supported
    ending on either side). An image without a label keeps the expected label path, which validation reports.

    Args:
        images_dir: folder of image files.
        labels_dir: folder of label files.
    """
    images, labels_root = Path(images_dir), Path(labels_dir)
    by_case = {case_id(p): p for p in _image_files(labels_root)}
    items = []
    for image in _image_files(images):
        case = case_id(image)
        label = by_case.pop(case, labels_root / image.name)
        items.append({"image": str(image.resolve()), "label": str(Path(label).resolve()), "case": case})
    for case, orphan in by_case.items():
        logger.warning("%s: label without an image of the same name in %s, ignored", orphan, images)
    return Datalist(items, None, [], f"{images}:{labels_root}", "paired")


def load_csv(csv_path: str | os.PathLike) -> Datalist:
    """Read a CSV with a header row: ``image`` (or ``image_0``, ``image_1``, ... for channels), optional
    ``label`` and ``case``. Relative paths are relative to the CSV file's folder.

    Args:
        csv_path: the CSV file.
    """
    path = Path(csv_path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # Excel writes a byte-order mark
            rows = list(csv.DictReader(handle))
            header = rows[0].keys() if rows else []
    except FileNotFoundError as exc:
        raise DatasetError(path, "the CSV datalist must exist") from exc
    channel_cols = sorted((c for c in header if re.fullmatch(r"image_\d+", c)), key=lambda c: int(c[6:]))
    if rows and "image" not in header and not channel_cols:
        raise DatasetError(path, "a CSV datalist needs an 'image' column (or image_0, image_1, ...)",
                           f"columns {list(header)}")
    root = path.parent
    items = []
    for row_no, row in enumerate(rows, start=2):
        cols = channel_cols or ["image"]
        paths = [str((root / row[c].strip()).resolve()) for c in cols if (row.get(c) or "").strip()]
        if len(paths) != len(cols):
            raise DatasetError(f"{path}:{row_no}", "every row must name an image in each image column", row)
        item: dict = {"image": paths if channel_cols else paths[0]}
        if (row.get("label") or "").strip():
            item["label"] = str((root / row["label"].strip()).resolve())
        item["case"] = (row.get("case") or "").strip() or case_id(paths[0])
        items.append(item)
    return Datalist(items, None, [], str(path), "csv")


def load_datalist(source: str | os.PathLike, fmt: str = "auto", labels_dir: str | os.PathLike | None = None,
                  section: str = "training") -> Datalist:
    """Load a datalist in any supported layout.

    Args:
        source: dataset folder (MSD or nnU-Net), CSV file, or images folder (with ``labels_dir``).
        fmt: one of :data:`FORMATS` or ``"auto"``: a ``.csv`` file is CSV, a ``dataset.json`` with
            ``channel_names`` is nnU-Net v2, one with a ``training`` list is MSD, a folder given with
            ``labels_dir`` is paired. Defaults to ``"auto"``.
        labels_dir: labels folder for the paired layout.
        section: MSD section. Defaults to ``"training"``.

    Raises:
        DatasetError: unknown format, or a layout that cannot be recognised or parsed.
    """
    path = Path(source)
    if fmt not in (*FORMATS, "auto"):
        raise DatasetError(path, f"datalist format must be one of auto, {', '.join(FORMATS)}", f"'{fmt}'")
    if not path.exists():
        raise DatasetError(path, "the dataset folder or datalist file must exist")
    if fmt == "auto":
        if labels_dir is not None:
            fmt = "paired"
        elif path.is_file() and path.suffix.lower() == ".csv":
            fmt = "csv"
        else:
            meta_path = path / "dataset.json" if path.is_dir() else path
            meta = _read_json(meta_path)
            if "channel_names" in meta:
                fmt = "nnunet"
            elif section in meta:
                fmt = "msd"
            else:
                raise DatasetError(meta_path, "cannot tell the layout: expected MSD ('training') or nnU-Net v2 "
                                   "('channel_names') keys", f"keys {sorted(meta)}")
    if fmt == "paired":
        if labels_dir is None:
            raise DatasetError(path, "the paired layout needs a labels folder")
        return load_paired(path, labels_dir)
    if fmt == "csv":
        return load_csv(path)
    if fmt == "nnunet":
        return load_nnunet(path)
    return load_msd(path, section)
