"""The executed bundle config as MLflow params: the values that ran, each under one name.

Rules (:func:`flatten_config`):

- Leaves are named by their path with ``/`` (``optimizer/weight_decay``, ``preprocessing/2/pixdim``).
- A component's class is the value of the component's own path (``optimizer`` -> ``torch.optim.AdamW``); other
  keys starting with ``_`` (``_disabled_``, ``_desc_``, ``_requires_``) are not params.
- An ``@id`` reference is not logged again: the value is logged under its own id (``learning_rate``), so each value
  has one name.
- A ``$`` expression is replaced by its value when it computes from plain values with Python, torch or numpy
  only (``device``: ``cpu``, ``amp``: ``false``, ``ckpt_dir``: the folder); expressions that call into MONAI or
  this package, build components, define lambdas or import are left out, and so are their results that are not
  plain (datasets, networks). Evaluating them again would repeat work or side effects of the run.
- ``imports``, ``initialize``, ``run`` and ``finalize`` (code, not settings), top-level ``%`` macros
  (``"training": "%run"``) and ``_meta_`` are left out.

Example:
    >>> flatten_config({"lr": 0.01, "net": {"_target_": "UNet", "features": [8, 16]}, "opt": {"lr": "@lr"},
    ...                 "depth": "$len(@net#features) + 1"})
    {'lr': '0.01', 'net': 'UNet', 'net/features': '[8, 16]', 'depth': '3'}
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["config_params", "flatten_config"]

logger = logging.getLogger(__name__)

_MAX_VALUE = 6000  # MLflow's limit on a parameter value
_CODE_SECTIONS = ("imports", "initialize", "run", "finalize")
# an expression holding any of these is not evaluated again: it calls into libraries with side effects or cost
_NOT_EVALUATED = ("pipeline.", "monai.", "lambda", "import", "os.", "open(", "__", "set_determinism")
_SKIP = object()


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (list, tuple)) and all(
        v is None or isinstance(v, (bool, int, float, str)) for v in value)


def _literal(value: Any) -> bool:
    """A plain value written out in the config: no reference, expression or macro inside a list either."""
    special = isinstance(value, str) and value[:1] in ("@", "$", "%")
    return _plain(value) and not special and not (
        isinstance(value, (list, tuple)) and any(isinstance(v, str) and v[:1] in ("@", "$", "%") for v in value))


class _Evaluator:
    """Evaluates the expressions of one config whose references are all plain values or such expressions."""

    def __init__(self, config: Mapping) -> None:
        from monai.bundle import ConfigParser

        self.parser = ConfigParser(dict(config))
        self.safe: dict[str, bool] = {}

    def _is_safe(self, id_: str, depth: int = 0) -> bool:
        if id_ not in self.safe:
            from monai.bundle.reference_resolver import ReferenceResolver

            try:
                value = self.parser[id_]
            except (KeyError, IndexError, TypeError, ValueError):
                value = _SKIP
            if isinstance(value, str) and value.startswith("@"):
                ok = depth < 16 and self._is_safe(value[1:], depth + 1)
            elif isinstance(value, str) and value.startswith("$"):
                refs = ReferenceResolver.match_refs_pattern(value)
                ok = (depth < 16 and not any(token in value for token in _NOT_EVALUATED)
                      and all(self._is_safe(ref, depth + 1) for ref in refs))
            else:
                ok = value is not _SKIP and _literal(value)
            self.safe[id_] = ok
        return self.safe[id_]

    def __call__(self, id_: str) -> Any:
        """The value of the expression at ``id_``, or ``_SKIP``."""
        if not self._is_safe(id_):
            return _SKIP
        try:
            value = self.parser.get_parsed_content(id_, instantiate=False)
        except Exception as exc:  # noqa: BLE001 - a param that cannot be computed is left out, never fatal
            logger.debug("param %s left out: %s", id_, exc)
            return _SKIP
        if type(value).__module__ == "torch" and type(value).__name__ in ("device", "dtype"):
            return str(value)
        return value if _plain(value) else _SKIP


def _text(value: Any) -> str:
    text = json.dumps(list(value) if isinstance(value, tuple) else value) \
        if isinstance(value, (list, tuple, bool)) or value is None else str(value)
    return text[:_MAX_VALUE]


def _walk(node: Any, name: str, id_: str, evaluate: _Evaluator | None, out: dict[str, str]) -> None:
    items = node.items() if isinstance(node, Mapping) else enumerate(node)
    for key, value in items:
        key = str(key)
        path, ref = (f"{name}/{key}", f"{id_}#{key}") if name else (key, key)
        if key == "_target_":
            out[name or key] = _text(value)
            continue
        if key.startswith("_"):
            continue
        if isinstance(value, Mapping) or (isinstance(value, list) and not _literal(value)):
            _walk(value, path, ref, evaluate, out)
        elif isinstance(value, str) and value[:1] in ("@", "%"):
            continue  # the referenced value is logged under its own name
        elif isinstance(value, str) and value.startswith("$"):
            result = evaluate(ref) if evaluate is not None else _SKIP
            if result is not _SKIP:
                out[path] = _text(result)
        else:
            out[path] = _text(value)


def flatten_config(config: Mapping, evaluate: bool = True) -> dict[str, str]:
    """The resolved leaves of a bundle config as ``{"a/b/0/c": "value"}`` (rules in the module docstring).

    Args:
        config: the (executed) config dict.
        evaluate: compute the plain expressions (needs MONAI); False leaves every expression out.
            Defaults to True.

    Returns:
        Param name -> text (at most 6,000 characters, MLflow's limit).
    """
    kept = {k: v for k, v in config.items() if not k.startswith("_meta_") and k not in _CODE_SECTIONS
            and not (isinstance(v, str) and v.startswith("%"))}  # ``"training": "%run"`` names code
    out: dict[str, str] = {}
    _walk(kept, "", "", _Evaluator(kept) if evaluate else None, out)
    return out


def config_params(executed_config: str | os.PathLike | Mapping | None) -> dict[str, str]:
    """:func:`flatten_config` of the executed config (the JSON file MONAI saves with ``--tracking``).

    Args:
        executed_config: its path, the dict itself, or None (no params).
    """
    if executed_config is None:
        return {}
    if isinstance(executed_config, Mapping):
        config = executed_config
    else:
        try:
            config = json.loads(Path(executed_config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            logger.warning("cannot read the executed config %s for MLflow params: %s", executed_config, exc)
            return {}
    return flatten_config(config)
