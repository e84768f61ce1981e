"""The shipped bundles' configs, generated from one definition.

The CT and MRI bundles are the same program with other values: ``configs/bundles/base/`` holds each config file once
(``train.json``, ``train_2d.json``, ``evaluate.json``, ``multi_gpu_train.json`` and ``inference.json``'s own keys),
and ``configs/bundles/<bundle>.json`` holds what one bundle sets differently, per file (``{"train.json": {key:
value}}``; only keys the base defines, which keep the base's order). :func:`generate_bundle_configs` writes the
bundle's ``configs/`` from the two, and ``inference.json``'s shared block from the result
(:func:`pipeline.zoo.layout.inference_config`). ``python -m pipeline sync-configs BUNDLE`` runs it;
``--check`` (run by ``make lint``) fails when a bundle's files differ from what the definition gives.

Example:
    >>> generate_bundle_configs("unetpp_mri_segmentation", check=True)               # doctest: +SKIP
    []
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.io.atomic import write_text_atomic
from pipeline.zoo.layout import dumps_config, inference_config, load_config, sync_inference_config

__all__ = ["DEFINITIONS", "GENERATED", "bundle_definition", "generate_bundle_configs", "sync_bundle"]

logger = logging.getLogger(__name__)

#: Where the base configs and each bundle's values live (a source checkout).
DEFINITIONS = Path(__file__).resolve().parents[2] / "configs" / "bundles"
#: The config files generated from the definition, in the order they are written.
GENERATED = ("train.json", "train_2d.json", "evaluate.json", "multi_gpu_train.json", "inference.json")


def bundle_definition(name: str, definitions: str | os.PathLike | None = None) -> Path | None:
    """``configs/bundles/<name>.json`` where the bundle is generated from the definition, else None.

    Args:
        name: the bundle's name (its folder's name).
        definitions: the definitions folder. Defaults to :data:`DEFINITIONS`.
    """
    path = Path(definitions or DEFINITIONS) / f"{name}.json"
    return path if path.is_file() else None


def _merged(base: dict, values: dict, source: Path, file: str) -> dict:
    unknown = [k for k in values if k not in base]
    if unknown:
        raise PipelineError(f"{source}: '{file}' may only set keys that configs/bundles/base/{file} defines, got "
                            f"{', '.join(unknown)}")
    return {k: values.get(k, v) for k, v in base.items()}


def _configs(name: str, definitions: Path) -> dict[str, dict]:
    source = definitions / f"{name}.json"
    values = load_config(source)
    unknown = [k for k in values if k not in GENERATED and k != "_desc_"]
    if unknown:
        raise PipelineError(f"{source}: keys must name generated config files ({', '.join(GENERATED)}), got "
                            f"{', '.join(unknown)}")
    out = {f: _merged(load_config(definitions / "base" / f), values.get(f, {}), source, f) for f in GENERATED}
    out["inference.json"] = inference_config(out["train.json"], out["inference.json"])
    return out


def generate_bundle_configs(name: str, bundles: str | os.PathLike | None = None,
                            definitions: str | os.PathLike | None = None, check: bool = False) -> list[str]:
    """Write the generated configs of bundle ``name`` (see the module docstring).

    Args:
        name: the bundle's name, with a definition ``configs/bundles/<name>.json``.
        bundles: the folder holding the bundles. Defaults to the repository's ``bundles/``.
        definitions: the definitions folder. Defaults to :data:`DEFINITIONS`.
        check: only compare; write nothing. Defaults to False.

    Returns:
        The config files whose content differed (empty when the bundle is as its definition gives it).

    Raises:
        PipelineError: a missing or malformed definition, or a value for a key the base lacks.
    """
    definitions = Path(definitions or DEFINITIONS)
    folder = Path(bundles or definitions.parents[1] / "bundles") / name / "configs"
    if bundle_definition(name, definitions) is None:
        raise PipelineError(f"bundle '{name}' has no definition {definitions / (name + '.json')}")
    configs = _configs(name, definitions)
    changed = []
    for file in GENERATED:
        text = dumps_config(configs[file]) + "\n"
        path = folder / file
        if not path.is_file() or path.read_text() != text:
            changed.append(file)
            if not check:
                write_text_atomic(path, text)
    if changed and not check:
        logger.info("%s: generated %s from %s", folder, ", ".join(changed), definitions)
    return changed


def sync_bundle(folder: str | os.PathLike, check: bool = False) -> tuple[list[str], str]:
    """``sync-configs``: a shipped bundle (this repository's ``bundles/<name>`` with a definition) is generated whole;
    any other bundle folder, a user's copy included, only gets its ``train.json``'s shared keys copied into its
    ``inference.json`` (its own edits are never overwritten from the definition).

    Args:
        folder: the bundle folder.
        check: only compare. Defaults to False.

    Returns:
        (the files or keys that differed, what they were compared with).

    Example:
        >>> sync_bundle("bundles/unetpp_ct_segmentation", check=True)                     # doctest: +SKIP
        ([], 'configs/bundles')
    """
    path = Path(folder)
    shipped = path.resolve() == (DEFINITIONS.parents[1] / "bundles" / path.name).resolve()
    if shipped and bundle_definition(path.name) is not None:
        return generate_bundle_configs(path.name, path.parent, check=check), "configs/bundles"
    return sync_inference_config(path, check=check), "train.json"
