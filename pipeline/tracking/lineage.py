"""What produced a training run and what it trained on, where MLflow's UI shows them: Source, Created by and
Datasets.

MONAI's handler creates its run with ``MlflowClient.create_run``, which sets none of the context tags a fluent
``mlflow.start_run`` sets, so the UI's Source and Created by stay empty; :func:`source_tags` computes them with
MLflow's own context registry (user, source name and type) and names the bundle config and this package's git
commit as the source. :func:`log_training_dataset` records the fold's datalist as an MLflow dataset input
(``mlflow.data`` ``MetaDataset``: name, digest, source folder; context ``training``), as ``mlflow.log_input`` does
for a fluent run.

Example:
    >>> tags = source_tags("0123abc")                                                  # doctest: +SKIP
    >>> log_training_dataset(client, run_id, "SyntheticCT", "5e1f0a9b3c2d", "/data/ct")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import mlflow

__all__ = ["dataset_identity", "log_training_dataset", "source_tags"]

logger = logging.getLogger(__name__)


def _config_file(argv: Sequence[str]) -> str | None:
    """The ``--config_file`` of a ``monai.bundle run`` command line (the bundle config that is the program)."""
    for i, arg in enumerate(argv):
        if arg == "--config_file" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config_file="):
            return arg.split("=", 1)[1]
    return None


def source_tags(commit: str = "unknown", argv: Sequence[str] | None = None) -> dict[str, str]:
    """MLflow's context tags of this process, with the bundle config as source and this package's commit.

    Args:
        commit: :func:`pipeline.tracking.git_commit` (``+dirty`` is dropped: the UI links the commit).
            Defaults to ``"unknown"`` (no commit tag).
        argv: the command line. Defaults to None (``sys.argv``).

    Returns:
        ``mlflow.user``, ``mlflow.source.name``, ``mlflow.source.type`` and, where known,
        ``mlflow.source.git.commit``.

    Example:
        >>> source_tags("abc+dirty", ["x", "--config_file", "train.json"])["mlflow.source.name"]  # doctest: +SKIP
        'train.json'
    """
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME

    tags = {k: str(v) for k, v in resolve_tags().items()}
    config = _config_file(list(sys.argv if argv is None else argv))
    if config:
        tags[MLFLOW_SOURCE_NAME] = config
    sha = commit.split("+")[0]
    if sha and sha != "unknown":
        tags[MLFLOW_GIT_COMMIT] = sha
    return tags


def dataset_identity(parts: Mapping[str, Sequence[Mapping]]) -> dict[str, str]:
    """The dataset's folder (the deepest folder holding every image and label of the datalist) and name (its
    ``dataset.json`` ``name`` where there is one, as in MSD and nnU-Net layouts, else the folder's name).

    Args:
        parts: the fold datalist (``train``, ``val``, ``all``).

    Returns:
        ``{"dataset.source": folder, "dataset.name": name}``, or ``{}`` without files.

    Example:
        >>> dataset_identity({"train": [{"image": "/d/imagesTr/a.nii.gz", "label": "/d/labelsTr/a.nii.gz"}]})
        {'dataset.source': '/d', 'dataset.name': 'd'}
    """
    files = []
    for items in parts.values():
        for item in items:
            images = item.get("image")
            files += [str(p) for p in (images if isinstance(images, list) else [images]) if p]
            files += [str(item["label"])] if item.get("label") else []
    if not files:
        return {}
    folder = Path(os.path.commonpath([os.path.abspath(os.path.dirname(f)) for f in files]))
    name = folder.name
    try:
        name = str(json.loads((folder / "dataset.json").read_text()).get("name") or name)
    except (OSError, ValueError, AttributeError):
        pass  # no MSD/nnU-Net dataset.json: the folder's name
    return {"dataset.source": str(folder), "dataset.name": name}


def log_training_dataset(client: mlflow.MlflowClient, run_id: str, name: str, digest: str, source: str) -> None:
    """Record the training data as the run's dataset input (context ``training``), without a fluent run.

    Args:
        client: a client of the tracking server that holds the run.
        run_id: the training run.
        name: the dataset's name.
        digest: the datalist hash (:func:`pipeline.tracking.datalist_hash`: case ids, file names and the split).
        source: the dataset folder.

    Example:
        >>> log_training_dataset(client, run_id, "Hippocampus", "5e1f0a9b3c2d", "/data/Task04")  # doctest: +SKIP
    """
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    dataset = MetaDataset(LocalArtifactDatasetSource(source), name=name, digest=digest)
    # the entity mlflow.log_input builds from a dataset (fluent.py _create_dataset_input)
    entry = DatasetInput(dataset=dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])
    client.log_inputs(run_id, datasets=[entry])
    logger.debug("logged dataset %s (%s) from %s as the input of run %s", name, digest, source, run_id)
