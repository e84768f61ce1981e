"""``plan_dataset``: check, fingerprint, plan and write ``plan.json`` (with ``fingerprint.json`` beside it).

Example:
    >>> plan = plan_dataset("data/Task04_Hippocampus", "plans/hippo.json", minutes=60)     # doctest: +SKIP
    >>> print(plan.to_text())                                                             # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pipeline.data.datalist import load_datalist
from pipeline.data.validation import validate_datalist
from pipeline.io.atomic import write_text_atomic
from pipeline.planning.fingerprint import fingerprint_dataset
from pipeline.planning.planner import Plan, make_plan

__all__ = ["plan_dataset"]

logger = logging.getLogger(__name__)


def plan_dataset(dataset: str | os.PathLike, out: str | os.PathLike, modality: str = "auto", device: str = "auto",
                 minutes: float = 60.0, fmt: str = "auto", labels_dir: str | os.PathLike | None = None,
                 progress: bool = True) -> Plan:
    """Plan a training for ``dataset`` and write it to ``out``.

    The dataset is checked first with the rules of ``pipeline validate`` (files, grids, channel counts, label values;
    every problem named, nothing read further), then its labelled cases are fingerprinted (``fingerprint.json``
    next to ``out``, reused while the files are unchanged) and planned.

    Args:
        dataset: dataset folder (MSD, nnU-Net v2 raw), CSV datalist, or images folder (with ``labels_dir``).
        out: the plan file to write (JSON).
        modality: ``auto``, ``ct`` or ``mri``. Defaults to ``"auto"``.
        device: ``auto``, ``cpu`` or ``cuda``. Defaults to ``"auto"``.
        minutes: the training budget. Defaults to 60.
        fmt: datalist layout (``auto``, ``msd``, ``nnunet``, ``paired``, ``csv``). Defaults to ``"auto"``.
        labels_dir: labels folder of the paired layout. Defaults to None.
        progress: progress bars. Defaults to True.

    Raises:
        DatasetError: the layout cannot be read or the dataset is empty.
        DatasetValidationError: broken rules, each named (missing channel, grids, channel counts...).
    """
    datalist = load_datalist(dataset, fmt=fmt, labels_dir=labels_dir)
    validate_datalist(datalist, progress=progress)  # as `pipeline validate` does: what it refuses is not planned
    datalist.items = [item for item in datalist.items if item.get("label")]
    dest = Path(out)
    fp = fingerprint_dataset(datalist, cache=dest.parent / "fingerprint.json", progress=progress)
    source = str(Path(dataset).resolve())
    plan = make_plan(fp, modality=modality, device=device, minutes=minutes, dataset_dir=source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dest, json.dumps(plan.to_config(), indent=1) + "\n")
    logger.info("wrote the plan to %s", dest)
    return plan
